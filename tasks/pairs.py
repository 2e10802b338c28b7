"""Pairs stage: skip-gram (center, context) pairs with the word2vec dynamic window.

For each center a window b is drawn uniformly in [1, window]; its contexts are the b words on
each side within the same sentence. Pairs come in text order (by center, then left to right)
and are streamed to one Parquet file per epoch, a row group per batch of sentences.
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
from tasks.seeding import Stream, rng
from tasks.stage_task import stage_task
from tasks.subsample import HELDOUT_FILE, epoch_file

VERSION = 5


def window_pairs(
    ids: np.ndarray, lengths: np.ndarray, window: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Centers and contexts of the sentences given as flat `ids` and their `lengths`: each
    center's contexts left to right, within its sentence, its drawn reach on each side. All
    in int32 (a batch holds at most about 2^20 words): half the memory to fill."""
    reach = rng.integers(1, window + 1, size=len(ids), dtype=np.int32)
    lengths = lengths.astype(np.int32, copy=False)
    ends = np.cumsum(lengths, dtype=np.int32)
    position = np.arange(len(ids), dtype=np.int32)
    left = np.minimum(reach, position - np.repeat(ends - lengths, lengths))
    right = np.minimum(reach, np.repeat(ends, lengths) - 1 - position)
    count = left + right
    center = np.repeat(position, count)
    first = np.repeat(np.cumsum(count, dtype=np.int32) - count, count)
    rank = np.arange(len(center), dtype=np.int32) - first  # the context's place in its window
    before = np.repeat(left, count)
    context = center - before + rank + (rank >= before)  # the center itself skipped
    return ids[center], ids[context]


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


@stage_task("pairs")
def pairs_task(subsampled: StageOutput, params: Params, shard: int) -> StageOutput:
    """One shard's pairs: a file per epoch, and the held-out pairs."""

    def build(out):
        def write(name: str, rng: np.random.Generator) -> int:
            batches = read_row_groups(subsampled.file(name))
            return write_parquet(out / name, PAIRS, skipgram_pairs(batches, params.window, rng))

        def epoch(e: int) -> int:
            return write(epoch_file(e), rng(params.seed, e, Stream.PAIRS, shard))

        # the epochs in threads: numpy and Parquet release the GIL
        per_epoch = list(mapped_ahead(epoch, range(params.epochs), os.cpu_count() or 1))
        heldout = write(HELDOUT_FILE, rng(params.seed, 0, Stream.HELDOUT_PAIRS, shard))
        return {"pairs_per_epoch": per_epoch, "pairs": sum(per_epoch), "heldout_pairs": heldout}

    settings = {**params.subset("window", "epochs", "seed"), "shard": shard}
    return run_stage("pairs", VERSION, settings, [subsampled.key], build)
