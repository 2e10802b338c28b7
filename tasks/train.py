"""Train stage: SGNS over the pairs files, negatives drawn from the seeded noise table,
written as `vectors.parquet` (word, vector). On the CPU the pairs go in file order to the
compiled Hogwild kernel; on CUDA they are shuffled in chunks and batched for PyTorch."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from models.sgns_kernel import KernelTrainer
from models.skipgram import Batch, Block, Trainer, resolve_device, train_sgns
from quijote.params import Params
from storage.files import file_sha256
from storage.schemas import vectors as vectors_schema
from storage.stages import StageOutput, run_stage
from tasks.negatives import NegativeSampler
from tasks.progress import progress_bar
from tasks.seeding import Stream, rng
from tasks.stage_task import stage_task
from tasks.subsample import HELDOUT_FILE, epoch_file

VERSION = 4
HELDOUT_MAX_PAIRS = 200_000  # the validation loss needs no more; keeps memory bounded
BLOCK_ROWS = 1 << 18  # pairs read (and handed to the CPU kernel) at a time


def pair_blocks(chunks: Iterator[pa.RecordBatch]) -> Iterator[Block]:
    """(centers, contexts) arrays of each chunk of pairs, in file order."""
    for chunk in chunks:
        yield chunk.column("center").to_numpy(), chunk.column("context").to_numpy()


def pair_batches(
    blocks: Iterator[Block], sampler: NegativeSampler, epoch: int, batch_size: int, seed: int
) -> Iterator[Batch]:
    """SGD batches of one epoch: each block of pairs gets its negatives (row-aligned, in file
    order), then is shuffled with a seeded permutation and cut into `batch_size` pieces."""
    shuffle_rng, first = rng(seed, epoch, Stream.SHUFFLE), 0
    for center, context in blocks:
        negatives = sampler.draw(epoch, first, len(center))
        first += len(center)
        order = shuffle_rng.permutation(len(center))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            yield center[rows], context[rows], negatives[rows]


def heldout_batch(pairs: pa.Table, sampler: NegativeSampler) -> Batch:
    """The held-out pairs (at most HELDOUT_MAX_PAIRS) with their fixed negatives."""
    pairs = pairs.slice(0, HELDOUT_MAX_PAIRS)
    center, context = pairs["center"].to_numpy(), pairs["context"].to_numpy()
    return center, context, sampler.heldout(len(center))


def to_vectors_table(words: pa.Array, vectors: np.ndarray) -> pa.Table:
    dim = vectors.shape[1]
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    column = pa.FixedSizeListArray.from_arrays(flat, dim)
    return pa.table([words, column], schema=vectors_schema(dim))


@stage_task("train")
def train_task(
    vocab: StageOutput, pairs: list[StageOutput], negatives: StageOutput, params: Params
) -> StageOutput:
    """Train on every shard's pairs, shard after shard, epoch after epoch."""

    def build(out):
        words = pq.read_table(vocab.file("vocab.parquet"), columns=["word"])["word"]
        sampler = NegativeSampler.load(negatives)
        total = sum(shard.meta["pairs"] for shard in pairs)
        heldout_files = [shard.file(HELDOUT_FILE) for shard in pairs]

        device = resolve_device(params.device)
        trainer: Trainer
        if device == "cpu":
            init = rng(params.seed, 0, Stream.INIT)
            trainer = KernelTrainer(
                len(words), params.dim, params.lr, total, sampler, init, params.threads
            )
        else:
            from models.skipgram_torch import TorchTrainer

            trainer = TorchTrainer(
                len(words), params.dim, params.lr, total, params.seed, device, params.threads
            )

        def epoch_blocks(epoch: int) -> Iterator[Block]:
            blocks = pair_blocks(
                chunk
                for shard in pairs
                for chunk in pq.ParquetFile(shard.file(epoch_file(epoch))).iter_batches(BLOCK_ROWS)
            )
            if device == "cpu":
                return blocks
            return pair_batches(blocks, sampler, epoch, params.batch_size, params.seed)

        heldout = pa.concat_tables(pq.read_table(path) for path in heldout_files)
        with progress_bar("train", total) as report:
            result = train_sgns(
                trainer, epoch_blocks, params.epochs, total, report, heldout_batch(heldout, sampler)
            )
        pq.write_table(to_vectors_table(words, result.vectors), out / "vectors.parquet")
        heldout_set = hashlib.sha256("".join(map(file_sha256, heldout_files)).encode())
        return {
            "loss_per_epoch": result.loss_per_epoch,
            "heldout_loss_per_epoch": result.heldout_loss_per_epoch,
            "heldout_set": heldout_set.hexdigest(),
            "pairs": result.pairs,
            "train_seconds": round(result.seconds, 3),
            "pairs_per_second": round(result.pairs / result.seconds),
            "device": result.device,
        }

    settings = params.subset("dim", "negative", "epochs", "lr", "batch_size", "seed")
    inputs = [vocab.key, *(shard.key for shard in pairs), negatives.key]
    return run_stage("train", VERSION, settings, inputs, build)
