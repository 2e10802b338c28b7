import math

import numpy as np
import pytest

from tasks.gate import LOSS_TOLERANCE, PROBE_TOLERANCE, Evidence, judge, probe_similarities


def evidence(probe: float, loss: float | None = 2.5, heldout_set: str | None = "h1") -> Evidence:
    return Evidence({"dulcinea/toboso": probe, "rocinante/rucio": probe}, loss, heldout_set)


def test_probe_similarities_cover_pairs_in_the_vocabulary() -> None:
    words = ["dulcinea", "toboso", "rucio"]
    vectors = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    assert probe_similarities(words, vectors) == {"dulcinea/toboso": pytest.approx(math.sqrt(0.5))}


def test_first_run_passes() -> None:
    verdict = judge(evidence(0.1), None)
    assert verdict.passed and "first run" in verdict.reasons[0]


def test_no_worse_run_passes_and_worse_probes_fail() -> None:
    assert judge(evidence(0.5 - PROBE_TOLERANCE / 2), evidence(0.5)).passed
    verdict = judge(evidence(0.5 - 2 * PROBE_TOLERANCE), evidence(0.5), "run-1")
    assert not verdict.passed and "beyond" in verdict.reasons[0]
    assert verdict.current_run == "run-1"


def test_held_out_loss_compared_only_on_the_same_held_out_set() -> None:
    worse = 2.5 * (1 + 2 * LOSS_TOLERANCE)
    assert not judge(evidence(0.5, worse), evidence(0.5, 2.5)).passed
    other_set = judge(evidence(0.5, worse, "h2"), evidence(0.5, 2.5, "h1"))
    assert other_set.passed and "loss not compared" in other_set.reasons[1]
    assert judge(evidence(0.5, 2.5 * (1 + LOSS_TOLERANCE / 2)), evidence(0.5, 2.5)).passed


def test_a_non_finite_loss_fails() -> None:
    assert not judge(evidence(0.5, math.nan), None).passed


def test_disjoint_vocabularies_skip_the_probes() -> None:
    verdict = judge(Evidence({}, 2.5, "h1"), evidence(0.9, 2.5, "h1"))
    assert verdict.passed and "not compared" in verdict.reasons[0]
