"""Negatives stage: the noise distribution (unigram count^0.75) as a seeded table.

Instead of storing K negatives per pair, the stage stores `noise.parquet` (id, probability);
`draw_negatives` with the run's seed reproduces every pair's negatives exactly, row-aligned
with the pairs files (the DESIGN's "seeded noise table").
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from quijote.params import Params
from storage.schemas import NOISE
from storage.stages import StageOutput, run_stage
from tasks.seeding import Stream, rng
from tasks.stage_task import stage_task

VERSION = 1
POWER = 0.75


def noise_distribution(counts: np.ndarray, power: float = POWER) -> np.ndarray:
    """P(word) proportional to count**power."""
    weights = counts.astype(np.float64) ** power
    return weights / weights.sum()


class NegativeSampler:
    """Draws K negatives per pair from the noise distribution, reproducibly per epoch."""

    def __init__(self, probabilities: np.ndarray, k: int, seed: int) -> None:
        self.cdf = np.cumsum(probabilities)
        self.cdf /= self.cdf[-1]
        self.k = k
        self.seed = seed

    def epoch(self, epoch: int) -> np.random.Generator:
        """The generator of one epoch's draws; pass it to `draw` for each batch in order."""
        return rng(self.seed, epoch, Stream.NEGATIVES)

    def heldout(self, n: int) -> np.ndarray:
        """The fixed negatives of the n held-out pairs."""
        return self.draw(rng(self.seed, 0, Stream.HELDOUT_NEGATIVES), n)

    def draw(self, generator: np.random.Generator, n: int) -> np.ndarray:
        """An (n, K) int32 array of word ids."""
        ids = np.searchsorted(self.cdf, generator.random((n, self.k)), side="right")
        return np.minimum(ids, len(self.cdf) - 1).astype(np.int32)

    @classmethod
    def load(cls, negatives: StageOutput) -> NegativeSampler:
        table = pq.read_table(negatives.file("noise.parquet"))
        meta = negatives.meta
        return cls(table["probability"].to_numpy(), meta["negative"], meta["seed"])


@stage_task("negatives")
def negatives_task(vocab: StageOutput, params: Params) -> StageOutput:
    def build(out):
        table = pq.read_table(vocab.file("vocab.parquet"))
        probabilities = noise_distribution(table["count"].to_numpy())
        noise = pa.table([table["id"], pa.array(probabilities)], schema=NOISE)
        pq.write_table(noise, out / "noise.parquet")
        return {"negative": params.negative, "seed": params.seed, "power": POWER}

    return run_stage("negatives", VERSION, params.subset("negative", "seed"), [vocab.key], build)
