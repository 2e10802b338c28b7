"""Quality gate: a new run becomes the warehouse's current run only if it is no worse than the
current one on a built-in probe set of word pairs that should stay close, and on the held-out
loss (compared only when both runs were measured on the same held-out pairs)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from prefect import task
from prefect.cache_policies import NONE

from storage import warehouse
from storage.stages import StageOutput
from storage.vectors import read_vectors

PROBES: tuple[tuple[str, str], ...] = (
    ("dulcinea", "toboso"),
    ("rocinante", "rucio"),
    ("caballero", "andante"),
    ("sancho", "panza"),
    ("señor", "señora"),
    ("padre", "madre"),
    ("hijo", "hija"),
    ("hombre", "mujer"),
    ("rey", "reina"),
    ("día", "noche"),
    ("cura", "barbero"),
    ("ojos", "lágrimas"),
)
PROBE_TOLERANCE = 0.05  # the probes' mean cosine may drop by at most this much
LOSS_TOLERANCE = 0.02  # the held-out loss may rise by at most this share


@dataclass(frozen=True)
class Evidence:
    """What the gate knows of one run."""

    probes: dict[str, float]  # "a/b" -> cosine similarity, for pairs in the vocabulary
    heldout_loss: float | None
    heldout_set: str | None  # content hash of the held-out pairs the loss was measured on


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reasons: list[str]
    candidate: Evidence
    current: Evidence | None = None
    current_run: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def probe_similarities(
    words: list[str], vectors: np.ndarray, probes: tuple[tuple[str, str], ...] = PROBES
) -> dict[str, float]:
    """Cosine similarity of each probe pair whose two words are in the vocabulary."""
    index = {word: i for i, word in enumerate(words)}
    result = {}
    for a, b in probes:
        if a in index and b in index:
            u, v = vectors[index[a]], vectors[index[b]]
            result[f"{a}/{b}"] = float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v) + 1e-12))
    return result


def judge(candidate: Evidence, current: Evidence | None, current_run: str | None = None) -> Verdict:
    """Pass unless the candidate is worse than the current run beyond the tolerances."""
    if candidate.heldout_loss is not None and not math.isfinite(candidate.heldout_loss):
        return Verdict(False, ["the held-out loss is not finite"], candidate, current, current_run)
    if current is None:
        reason = (
            "first run" if current_run is None else f"the current run {current_run} is unreadable"
        )
        return Verdict(True, [f"{reason}: nothing to compare with"], candidate, None, current_run)
    reasons, passed = [], True
    common = sorted(set(candidate.probes) & set(current.probes))
    if common:
        new = float(np.mean([candidate.probes[p] for p in common]))
        old = float(np.mean([current.probes[p] for p in common]))
        ok = new >= old - PROBE_TOLERANCE
        passed &= ok
        reasons.append(
            f"probe pairs ({len(common)}): mean cosine {new:.3f} vs {old:.3f} "
            f"{'within' if ok else 'beyond'} the tolerance {PROBE_TOLERANCE}"
        )
    else:
        reasons.append("no probe pair in both vocabularies: probes not compared")
    comparable = (
        candidate.heldout_loss is not None
        and current.heldout_loss is not None
        and candidate.heldout_set == current.heldout_set
    )
    if comparable:
        ok = candidate.heldout_loss <= current.heldout_loss * (1 + LOSS_TOLERANCE)
        passed &= ok
        reasons.append(
            f"held-out loss {candidate.heldout_loss:.4f} vs {current.heldout_loss:.4f} "
            f"{'within' if ok else 'beyond'} +{LOSS_TOLERANCE:.0%}"
        )
    else:
        reasons.append("held-out sets differ (or are missing): loss not compared")
    return Verdict(passed, reasons, candidate, current, current_run)


def evidence_of(
    vectors_path: Path, heldout_loss: float | None, heldout_set: str | None
) -> Evidence:
    words, vectors = read_vectors(vectors_path)
    return Evidence(probe_similarities(words, vectors), heldout_loss, heldout_set)


@task(name="gate", cache_policy=NONE)
def gate_task(trained: StageOutput) -> Verdict:
    """Judge the trained vectors against the warehouse's current run."""
    losses = trained.meta["heldout_loss_per_epoch"]
    candidate = evidence_of(
        trained.file("vectors.parquet"), losses[-1] if losses else None, trained.meta["heldout_set"]
    )
    current_row = warehouse.current_run()
    if current_row is None:
        return judge(candidate, None)
    metrics = current_row["metrics"]
    try:
        current = evidence_of(
            Path(current_row["vectors_path"]),
            metrics.get("heldout_loss"),
            metrics.get("heldout_set"),
        )
    except (OSError, pa.ArrowException):  # its Parquet truncated, replaced or deleted
        current = None
    return judge(candidate, current, current_row["run_id"])
