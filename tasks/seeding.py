"""Every random draw of the pipeline comes from `rng(seed, epoch, stream, shard)` (or, inside
compiled code, from `key(...)`, the same stream as one 64-bit number): one independent,
reproducible stream per stage, purpose and corpus shard, so runs with the same seed are
identical — whether the shards run one after another or in parallel on Dask — and no two
stages share random numbers."""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Stream(IntEnum):
    SUBSAMPLE = 1
    PAIRS = 2
    NEGATIVES = 3
    DEVICE_BLOCK = 4  # the GPU path's generator of a block: its shuffle and its negatives
    HELDOUT_SUBSAMPLE = 5
    HELDOUT_PAIRS = 6
    HELDOUT_NEGATIVES = 7
    INIT = 8


HELDOUT_SEED = 0  # the held-out set's draws take this seed, never the run's: reseeded runs are
# measured on the same held-out pairs with the same negatives, so the gate compares their loss


def rng(seed: int, epoch: int, stream: Stream, shard: int = 0) -> np.random.Generator:
    """The generator of one stream for one epoch of one shard."""
    return np.random.default_rng((seed, epoch, int(stream), shard))


def key(seed: int, epoch: int, stream: Stream, shard: int = 0) -> np.uint64:
    """The same stream as a 64-bit key, for counter-based draws in compiled code."""
    entropy = (seed, epoch, int(stream), shard)
    return np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]
