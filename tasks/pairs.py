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
from prefect import task
from prefect.cache_policies import NONE

from quijote.params import Params
from storage.files import write_parquet
from storage.schemas import PAIRS
from storage.stages import StageOutput, run_stage
from tasks.subsample import epoch_file, epoch_rng

VERSION = 1
STREAM = 2


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


@task(name="pairs", cache_policy=NONE)
def pairs_task(subsampled: StageOutput, params: Params) -> StageOutput:
    def build(out):
        per_epoch = []
        for epoch in range(params.epochs):
            batches = pq.ParquetFile(subsampled.file(epoch_file(epoch))).iter_batches()
            pairs = skipgram_pairs(batches, params.window, epoch_rng(params.seed, epoch, STREAM))
            per_epoch.append(write_parquet(out / epoch_file(epoch), PAIRS, pairs))
        return {"pairs_per_epoch": per_epoch, "pairs": sum(per_epoch)}

    settings = params.subset("window", "epochs", "seed")
    return run_stage("pairs", VERSION, settings, [subsampled.key], build)
