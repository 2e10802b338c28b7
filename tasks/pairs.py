"""Pairs stage: skip-gram (center, context) pairs with the word2vec dynamic window.

For each center a window b is drawn uniformly in [1, window]; its contexts are the b words on
each side within the same sentence. Pairs come in text order (by center, then left to right)
and are streamed to one Parquet file per epoch, a row group per batch of sentences. With
`pairs=stream` the stage writes only the held-out pairs and counts each epoch's pairs (the same
windows drawn); the train stage draws them again, batch by batch, from the subsampled
sentences (`epoch_pairs`), so no epoch's pairs are ever on disk.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa

from quijote.params import Params
from storage.files import mapped_ahead, read_row_groups, write_parquet
from storage.schemas import PAIRS
from storage.stages import StageOutput, run_stage
from tasks.seeding import HELDOUT_SEED, Stream, rng
from tasks.stage_task import stage_task
from tasks.subsample import HELDOUT_FILE, epoch_file

VERSION = 7
# Each epoch's pairs are written once and read once: LZ4 is quicker both ways than zstd, for
# larger files.
COMPRESSION = "lz4_raw"  # Parquet's LZ4_RAW codec (pyarrow's "lz4" writes the same)


def window_pairs(
    ids: np.ndarray, lengths: np.ndarray, window: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Centers and contexts of the sentences given as flat `ids` and their `lengths`: each
    center's contexts left to right, within its sentence, its drawn reach on each side. All
    in int32 (a batch holds at most about 2^20 words): half the memory to fill."""
    left, right = window_reach(len(ids), lengths, window, rng)
    count = left + right
    position = np.arange(len(ids), dtype=np.int32)
    center = np.repeat(position, count)
    first = np.repeat(np.cumsum(count, dtype=np.int32) - count, count)
    rank = np.arange(len(center), dtype=np.int32) - first  # the context's place in its window
    before = np.repeat(left, count)
    context = center - before + rank + (rank >= before)  # the center itself skipped
    return ids[center], ids[context]


def window_reach(
    n: int, lengths: np.ndarray, window: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """How many contexts each of the `n` words of sentences of `lengths` has on its left and
    on its right: its drawn window, cut at its sentence's ends."""
    reach = rng.integers(1, window + 1, size=n, dtype=np.int32)
    lengths = lengths.astype(np.int32, copy=False)
    ends = np.cumsum(lengths, dtype=np.int32)
    position = np.arange(n, dtype=np.int32)
    left = np.minimum(reach, position - np.repeat(ends - lengths, lengths))
    right = np.minimum(reach, np.repeat(ends, lengths) - 1 - position)
    return left, right


def skipgram_pairs(
    sentences: Iterable[pa.RecordBatch], window: int, rng: np.random.Generator
) -> Iterator[pa.RecordBatch]:
    """One batch of (center, context) pairs per batch of subsampled sentences."""
    for batch in sentences:
        column = batch.column("ids")
        ids = column.flatten().to_numpy().astype(np.int32, copy=False)
        lengths = np.diff(column.offsets.to_numpy())
        center, context = window_pairs(ids, lengths, window, rng)
        yield pa.record_batch([pa.array(center), pa.array(context)], schema=PAIRS)


def count_pairs(sentences: Iterable[pa.RecordBatch], window: int, rng: np.random.Generator) -> int:
    """How many pairs `skipgram_pairs` makes of `sentences` with `rng`, drawing the same
    windows but making no pairs."""
    pairs = 0
    for batch in sentences:
        column = batch.column("ids")
        lengths = np.diff(column.offsets.to_numpy())
        left, right = window_reach(int(lengths.sum()), lengths, window, rng)
        pairs += int(left.sum(dtype=np.int64) + right.sum(dtype=np.int64))
    return pairs


def epoch_pairs(
    subsampled: StageOutput, window: int, seed: int, epoch: int, shard: int
) -> Iterator[pa.RecordBatch]:
    """Shard `shard`'s pairs of `epoch`, drawn from its subsampled sentences: the rows of
    the pairs stage's epoch file, in the same order."""
    batches = read_row_groups(subsampled.file(epoch_file(epoch)))
    return skipgram_pairs(batches, window, rng(seed, epoch, Stream.PAIRS, shard))


@stage_task("pairs")
def pairs_task(subsampled: StageOutput, params: Params, shard: int) -> StageOutput:
    """One shard's pairs: a file per epoch (with `pairs=stream` only their number), and the
    held-out pairs."""

    def build(out):
        def write(name: str, rng: np.random.Generator) -> int:
            batches = read_row_groups(subsampled.file(name))
            pairs = skipgram_pairs(batches, params.window, rng)
            return write_parquet(out / name, PAIRS, pairs, COMPRESSION)

        def epoch(e: int) -> int:
            if params.pairs == "stream":
                batches = read_row_groups(subsampled.file(epoch_file(e)))
                draws = rng(params.seed, e, Stream.PAIRS, shard)
                return count_pairs(batches, params.window, draws)
            pairs = epoch_pairs(subsampled, params.window, params.seed, e, shard)
            return write_parquet(out / epoch_file(e), PAIRS, pairs, COMPRESSION)

        # the epochs in threads: numpy and Parquet release the GIL
        per_epoch = list(mapped_ahead(epoch, range(params.epochs), os.cpu_count() or 1))
        heldout = write(HELDOUT_FILE, rng(HELDOUT_SEED, 0, Stream.HELDOUT_PAIRS, shard))
        return {"pairs_per_epoch": per_epoch, "pairs": sum(per_epoch), "heldout_pairs": heldout}

    settings = {**params.subset("window", "epochs", "seed"), "shard": shard}
    if params.pairs != "files":  # other outputs: the files' key stays what it was
        settings["pairs"] = params.pairs
    return run_stage("pairs", VERSION, settings, [subsampled.key], build)
