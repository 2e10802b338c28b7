"""Train stage: SGNS over the pairs files, negatives drawn from the seeded noise table,
written as `vectors.parquet` (word, vector). On the CPU the pairs go in file order to the
compiled Hogwild kernel; on CUDA (and with device `torch`, the same code on the CPU) the row
groups are decoded by several threads and regrouped into blocks that go to PyTorch whole, to be
shuffled, given their negatives and batched on the device. The weights are checkpointed after
every epoch and every `checkpoint_seconds`, so a killed run goes on from there
(storage.checkpoints). With `pairs=stream` there are no pairs files: each epoch's pairs are
drawn again from the subsampled sentences, in the same order, as training goes."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from models.sgns_kernel import KernelTrainer
from models.skipgram import Batch, Block, Position, Trainer, resolve_device, train_sgns
from quijote.params import Params
from storage.checkpoints import Checkpoint
from storage.files import mapped_ahead, read_row_groups
from storage.schemas import PAIRS
from storage.stages import StageOutput, run_stage, stage_key
from storage.vectors import write_vectors
from tasks.negatives import NegativeSampler
from tasks.pairs import epoch_pairs
from tasks.progress import progress_bar
from tasks.seeding import Stream, rng
from tasks.stage_task import stage_task
from tasks.subsample import HELDOUT_FILE, epoch_file

VERSION = 10
HELDOUT_MAX_PAIRS = 200_000  # the validation loss needs no more; keeps memory bounded
BLOCK_ROWS = 1 << 18  # pairs read (and handed to the CPU kernel) at a time
READERS = 4  # threads decoding the pairs files' row groups ahead of the GPU path

log = logging.getLogger("quijote")


def pair_blocks(files: list[Path], start: int = 0) -> Iterator[tuple[int, Block]]:
    """The (centers, contexts) blocks of an epoch's pairs files, in file order, each with the
    epoch row of its first pair; from the block that holds row `start` on."""
    first = 0
    for path in files:
        pairs = pq.ParquetFile(path)
        if first + pairs.metadata.num_rows <= start:
            first += pairs.metadata.num_rows
            continue
        for chunk in pairs.iter_batches(BLOCK_ROWS):
            if first + chunk.num_rows > start:
                yield first, (chunk.column("center").to_numpy(), chunk.column("context").to_numpy())
            first += chunk.num_rows


def drawn_blocks(
    pairs: list[StageOutput], subsampled: list[StageOutput], params: Params, epoch: int, start: int
) -> Iterator[tuple[int, Block]]:
    """What `pair_blocks` yields for an epoch's pairs files, the pairs drawn again from the
    subsampled sentences (`pairs=stream`): blocks of BLOCK_ROWS within each shard, each with
    its first row; shards wholly before row `start` are skipped, not drawn."""
    first = 0
    for shard_pairs, shard_subsampled in zip(pairs, subsampled, strict=True):
        rows = shard_pairs.meta["pairs_per_epoch"][epoch]
        if first + rows <= start:
            first += rows
            continue
        shard = shard_pairs.meta["params"]["shard"]
        batches = epoch_pairs(shard_subsampled, params.window, params.seed, epoch, shard)
        for center, context in regrouped(batches, BLOCK_ROWS):
            if first + len(center) > start:
                yield first, (center, context)
            first += len(center)


def regrouped(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[Block]:
    """The (center, context) rows of `batches` in blocks of `rows` (the last one shorter)."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        pending.append(batch)
        held += batch.num_rows
        if held < rows:
            continue
        table = pa.Table.from_batches(pending, schema=PAIRS)
        whole = held - held % rows
        for start in range(0, whole, rows):
            block = table.slice(start, rows)
            yield block["center"].to_numpy(), block["context"].to_numpy()
        rest = table.slice(whole)
        pending, held = rest.to_batches(), rest.num_rows
    if held:
        table = pa.Table.from_batches(pending, schema=PAIRS)
        yield table["center"].to_numpy(), table["context"].to_numpy()


def first_rows(files: list[Path], n: int) -> pa.Table:
    """The first `n` rows of the pairs files, in order, reading only the row groups needed."""
    batches: list[pa.RecordBatch] = []
    rows = 0
    for path in files:
        for batch in read_row_groups(path):
            if rows >= n:
                break
            batches.append(batch)
            rows += batch.num_rows
    return pa.Table.from_batches(batches, schema=PAIRS).slice(0, n)


def from_row(blocks: Iterator[tuple[int, Block]], start: int) -> Iterator[Block]:
    """The pairs in file order from row `start` on (the CPU kernel's blocks)."""
    for first, (center, context) in blocks:
        cut = max(start - first, 0)
        yield center[cut:], context[cut:]


def row_groups(
    files: list[Path], start: int = 0, readers: int = READERS
) -> Iterator[tuple[int, Block]]:
    """What `pair_blocks` yields, but a block per row group, decoded by `readers` threads ahead
    of the caller (the GPU path's reading: decompressing is most of the host's work a pair)."""

    def read(group: tuple[int, Path, int]) -> tuple[int, Block]:
        first, path, index = group
        table = pq.ParquetFile(path).read_row_group(index)
        return first, (table["center"].to_numpy(), table["context"].to_numpy())

    def groups() -> Iterator[tuple[int, Path, int]]:
        first = 0
        for path in files:
            metadata = pq.ParquetFile(path).metadata
            for index in range(metadata.num_row_groups):
                rows = metadata.row_group(index).num_rows
                if first + rows > start:
                    yield first, path, index
                first += rows

    return mapped_ahead(read, groups(), readers)


def heldout_batch(files: list[Path], sampler: NegativeSampler) -> Batch:
    """The held-out pairs (the first HELDOUT_MAX_PAIRS) with their fixed negatives."""
    pairs = first_rows(files, HELDOUT_MAX_PAIRS)
    center, context = pairs["center"].to_numpy(), pairs["context"].to_numpy()
    return center, context, sampler.heldout(len(center))


def heldout_set(batch: Batch) -> str:
    """The content hash of what the held-out loss is measured on: pairs and negatives."""
    digest = hashlib.sha256(repr([(c.dtype.str, c.shape) for c in batch]).encode())
    for column in batch:
        digest.update(column.tobytes())
    return digest.hexdigest()


@stage_task("train")
def train_task(
    vocab: StageOutput,
    pairs: list[StageOutput],
    negatives: StageOutput,
    params: Params,
    subsampled: list[StageOutput],
) -> StageOutput:
    """Train on every shard's pairs (read, or with `pairs=stream` drawn again from the
    shard's `subsampled` sentences), shard after shard, epoch after epoch, checkpointing as it
    goes; a killed run's checkpoint (same inputs and settings) is picked up where it stopped."""
    device = resolve_device(params.device)  # each trains its own vectors: part of the key
    settings = params.subset("dim", "negative", "epochs", "lr", "batch_size", "seed")
    settings["device"] = device
    inputs = [vocab.key, *(shard.key for shard in pairs), negatives.key]
    checkpoint = Checkpoint("train", stage_key("train", VERSION, settings, inputs))

    def build(out):
        words = pq.read_table(vocab.file("vocab.parquet"), columns=["word"])["word"]
        sampler = NegativeSampler.load(negatives)
        total = sum(shard.meta["pairs"] for shard in pairs)
        heldout_files = [shard.file(HELDOUT_FILE) for shard in pairs]

        trainer: Trainer
        if device == "cpu":
            init = rng(params.seed, 0, Stream.INIT)
            trainer = KernelTrainer(
                len(words), params.dim, params.lr, total, sampler, init, params.threads
            )
        else:
            from models.skipgram_torch import TorchTrainer, host_blocks

            trainer = torch_trainer = TorchTrainer(
                len(words), params.dim, params.lr, total, sampler, params.seed,
                "cpu" if device == "torch" else device, params.threads, params.batch_size,
            )  # fmt: skip
        start = resume(checkpoint, trainer)

        def epoch_blocks(epoch: int, first: int) -> Iterator[Block]:
            files = [shard.file(epoch_file(epoch)) for shard in pairs]
            if params.pairs == "stream":
                blocks = from_row(drawn_blocks(pairs, subsampled, params, epoch, first), first)
            elif device == "cpu":
                blocks = from_row(pair_blocks(files, first), first)
            else:
                blocks = from_row(row_groups(files, first), first)
            if device == "cpu":
                return blocks
            return host_blocks(blocks, torch_trainer.block_rows, torch_trainer.cuda)

        heldout = heldout_batch(heldout_files, sampler)
        with progress_bar("train", total) as report:
            result = train_sgns(
                trainer, epoch_blocks, params.epochs, total, report,
                heldout, start, checkpoint.save, params.checkpoint_seconds,
            )  # fmt: skip
        write_vectors(words, result.vectors, out / "vectors.parquet")
        meta = {
            "loss_per_epoch": result.loss_per_epoch,
            "heldout_loss_per_epoch": result.heldout_loss_per_epoch,
            "heldout_set": heldout_set(heldout),
            "pairs": result.pairs,
            "train_seconds": round(result.seconds, 3),
            "pairs_per_second": round(result.pairs / result.seconds),
            "device": result.device,
            "resumed_at": {"epoch": start.epoch, "pair": start.first} if start else None,
        }
        return meta if device == "cpu" else meta | torch_trainer.measurements()

    output = run_stage("train", VERSION, settings, inputs, build)
    checkpoint.clear()
    return output


def resume(checkpoint: Checkpoint, trainer: Trainer) -> Position | None:
    """Load the checkpoint's weights into `trainer` and return its position; None (start
    over) when there is none or it does not fit."""
    saved = checkpoint.load()
    if saved is None:
        return None
    position, weights = saved
    try:
        trainer.load_state(weights)
        start = Position(**position)
    except (ValueError, TypeError) as error:
        log.warning("ignoring a checkpoint that does not fit (%s): starting over", error)
        return None
    log.info("train: resuming at epoch %d, pair %d of it", start.epoch + 1, start.first)
    return start
