"""Every random draw of the pipeline comes from `rng(seed, epoch, stream)`: one independent,
reproducible stream per stage and purpose, so runs with the same seed are identical and no two
stages share random numbers."""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Stream(IntEnum):
    SUBSAMPLE = 1
    PAIRS = 2
    NEGATIVES = 3
    SHUFFLE = 4
    HELDOUT_SUBSAMPLE = 5
    HELDOUT_PAIRS = 6
    HELDOUT_NEGATIVES = 7


def rng(seed: int, epoch: int, stream: Stream) -> np.random.Generator:
    """The generator of one stream for one epoch."""
    return np.random.default_rng((seed, epoch, int(stream)))
