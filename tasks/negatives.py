"""Negatives stage: the noise distribution (unigram count^0.75) as a seeded table.

Instead of storing K negatives per pair, the stage stores `noise.parquet` (id, probability);
with the run's seed, `NegativeSampler.draw(epoch, first, n)` reproduces the negatives of any
rows of an epoch's pairs exactly (the DESIGN's "seeded noise table"): draw j of pair r is a
hash of (seed, epoch, r, j), so the CPU kernel draws the very same negatives in compiled code.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from models.sgns_kernel import alias_table, draw_negatives
from quijote.params import Params
from storage.files import write_parquet
from storage.schemas import NOISE
from storage.stages import StageOutput, run_stage
from tasks.seeding import HELDOUT_SEED, Stream, key
from tasks.stage_task import stage_task

VERSION = 1
POWER = 0.75


def noise_distribution(counts: np.ndarray, power: float = POWER) -> np.ndarray:
    """P(word) proportional to count**power."""
    weights = counts.astype(np.float64) ** power
    return weights / weights.sum()


class NegativeSampler:
    """Draws K negatives per pair from the noise distribution (a Walker alias table, exact),
    reproducibly by seed, epoch and row."""

    def __init__(self, probabilities: np.ndarray, k: int, seed: int) -> None:
        self.prob, self.alias = alias_table(probabilities)
        self.k = k
        self.seed = seed

    def key(self, epoch: int) -> np.uint64:
        """The key of one epoch's draws (what the CPU kernel draws from)."""
        return key(self.seed, epoch, Stream.NEGATIVES)

    def draw(self, epoch: int, first: int, n: int) -> np.ndarray:
        """The (n, K) int32 negatives of rows first .. first+n-1 of an epoch's pairs."""
        return draw_negatives(self.prob, self.alias, self.key(epoch), first, n, self.k)

    def block_seed(self, epoch: int, first: int) -> int:
        """The seed of the device generator that shuffles the block of an epoch's pairs from
        row `first` on and draws its negatives (the GPU path)."""
        return int(key(self.seed, epoch, Stream.DEVICE_BLOCK, first))

    def heldout(self, n: int) -> np.ndarray:
        """The fixed negatives of the n held-out pairs (the same for every run seed)."""
        held = key(HELDOUT_SEED, 0, Stream.HELDOUT_NEGATIVES)
        return draw_negatives(self.prob, self.alias, held, 0, n, self.k)

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
        write_parquet(out / "noise.parquet", NOISE, noise.to_batches())
        return {"negative": params.negative, "seed": params.seed, "power": POWER}

    return run_stage("negatives", VERSION, params.subset("negative", "seed"), [vocab.key], build)
