"""Pairs stage: skip-gram (center, context) pairs with the word2vec dynamic window.

For each center a window b is drawn uniformly in [1, window]; its contexts are the b words on
each side within the same sentence. Pairs come in text order (by center, then left to right)
and are streamed to one Parquet file per epoch, a row group per batch of sentences.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from quijote.params import Params
from storage.files import write_parquet
from storage.schemas import PAIRS
from storage.stages import StageOutput, run_stage
from tasks.seeding import Stream, rng
from tasks.stage_task import stage_task
from tasks.subsample import HELDOUT_FILE, epoch_file

VERSION = 3


def window_pairs(
    ids: np.ndarray, lengths: np.ndarray, window: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Centers and contexts of the sentences given as flat `ids` and their `lengths`."""
    sentence = np.repeat(np.arange(len(lengths)), lengths)
    reach = rng.integers(1, window + 1, size=len(ids))
    positions, offsets = [], []
    for distance in range(1, window + 1):
        same = sentence[distance:] == sentence[:-distance]
        left = np.flatnonzero(same & (reach[distance:] >= distance)) + distance
        right = np.flatnonzero(same & (reach[:-distance] >= distance))
        positions += [left, right]
        offsets += [np.full(len(left), -distance), np.full(len(right), distance)]
    center = np.concatenate(positions)
    offset = np.concatenate(offsets)
    order = np.lexsort((offset, center))
    center, offset = center[order], offset[order]
    return ids[center], ids[center + offset]


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
            batches = pq.ParquetFile(subsampled.file(name)).iter_batches()
            return write_parquet(out / name, PAIRS, skipgram_pairs(batches, params.window, rng))

        per_epoch = [
            write(epoch_file(e), rng(params.seed, e, Stream.PAIRS, shard))
            for e in range(params.epochs)
        ]
        heldout = write(HELDOUT_FILE, rng(params.seed, 0, Stream.HELDOUT_PAIRS, shard))
        return {"pairs_per_epoch": per_epoch, "pairs": sum(per_epoch), "heldout_pairs": heldout}

    settings = {**params.subset("window", "epochs", "seed"), "shard": shard}
    return run_stage("pairs", VERSION, settings, [subsampled.key], build)
