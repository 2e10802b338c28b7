"""The quality gate on generated vectors: sanity checks, comparisons over shared words and
coverage, tolerances."""

import math

import numpy as np
import pytest

from storage.benchmarks import AnalogySet, SimilaritySet
from storage.vectors import unit_rows
from tasks import gate
from tasks.evaluate import WordIndex, analogy_answers, evaluate
from tasks.gate import (
    COLLAPSED_COSINE,
    FLOORS,
    LOSS_TOLERANCE,
    MIN_ITEMS,
    PROBES,
    SPREAD_WORDS,
    RunVectors,
    _mean,
    compare,
    judge,
    mean_pair_cosine,
    probe_scores,
    problems,
    question_pairs,
    resamples,
)

FILLER = [f"palabra{i}" for i in range(300)]


def vectors(
    seed: int = 0,
    collapse: float = 0.0,
    probes: tuple = PROBES,
    related: bool = True,
    extra: list[str] | None = None,
    loss: float | None = 2.5,
) -> RunVectors:
    """Random vectors of the probe words and 300 fillers (probe partners close together when
    `related`), plus a common direction `collapse` times as long as the rest."""
    rng = np.random.default_rng(seed)
    words = [w for pair in probes for w in pair] + FILLER + (extra or [])
    matrix = rng.normal(size=(len(words), 16))
    if related:
        for i in range(0, 2 * len(probes), 2):
            matrix[i + 1] = matrix[i] + 0.3 * rng.normal(size=16)
    matrix += collapse * np.sqrt(16) * np.ones(16)
    return RunVectors(words, matrix.astype(np.float32), loss, "h1")


def similarity_set(run: RunVectors, pairs: int, noise: float = 0.0, seed: int = 1):
    """Pairs of fillers scored by their cosine in `run` (plus noise): that run's ρ is high."""
    rng = np.random.default_rng(seed)
    units = unit_rows(run.vectors)
    rows = rng.choice(np.arange(24, 24 + len(FILLER)), size=(pairs, 2), replace=False)
    gold = np.einsum("ij,ij->i", units[rows[:, 0]], units[rows[:, 1]])
    gold = gold + noise * rng.normal(size=pairs)
    words = [(run.words[a], run.words[b]) for a, b in rows]
    return SimilaritySet("sim", "0" * 64, tuple(words), tuple(map(float, gold)))


def test_mean_pair_cosine_is_the_mean_over_distinct_pairs() -> None:
    units = unit_rows(np.random.default_rng(3).normal(size=(40, 5)) + 0.5)
    brute = [units[i] @ units[j] for i in range(40) for j in range(40) if i != j]
    assert mean_pair_cosine(units) == pytest.approx(np.mean(brute), abs=1e-6)


def test_probe_score_ranks_each_partner_among_the_other_words() -> None:
    words = ["rey", "reina", "mesa", "silla", "sol"]
    units = unit_rows(np.array([[1, 0], [0.9, 0.2], [0, 1], [-1, 0.1], [0.5, 0.5]]))
    # reina is rey's nearest word (cosine 0.98 against 0.71, 0 and -0.99), and rey reina's.
    assert probe_scores(words, units, (("rey", "reina"),)).tolist() == [1.0]
    # From mesa, silla (cosine 0.10) is closer than rey (0) only: 1/3; from silla, mesa (0.10)
    # is closer than rey (-0.99), reina (-0.95) and sol (-0.63): 3/3. The mean: 2/3.
    assert probe_scores(words, units, (("mesa", "silla"),)).tolist() == pytest.approx([2 / 3])
    assert probe_scores(words, units, (("rey", "ausente"),)).size == 0


def test_a_collapsed_run_is_rejected_whatever_the_current_run() -> None:
    collapsed = vectors(collapse=5.0)
    for current in (None, vectors(seed=1), vectors(seed=2, collapse=5.0)):
        verdict = judge(collapsed, current, current_run=None if current is None else "run-1")
        assert not verdict.passed
        assert verdict.reasons[0].startswith("collapsed: the 200 most frequent words")
    assert mean_pair_cosine(unit_rows(collapsed.vectors[:200])) > COLLAPSED_COSINE


def test_probe_pairs_no_closer_than_random_words_are_rejected() -> None:
    verdict = judge(vectors(related=False), None)
    assert not verdict.passed and "no closer than random words" in verdict.reasons[0]


def test_a_current_run_failing_the_sanity_checks_never_blocks_a_sane_run() -> None:
    verdict = judge(vectors(seed=1), vectors(collapse=5.0), current_run="run-1")
    assert verdict.passed
    assert "the current run run-1 fails the sanity checks (collapsed" in verdict.reasons[0]


def test_first_run_passes_and_a_non_finite_loss_fails() -> None:
    verdict = judge(vectors(), None)
    assert verdict.passed and "first run" in verdict.reasons[0]
    assert not judge(vectors(loss=math.nan), None).passed


def test_equal_quality_passes_and_a_worse_benchmark_score_fails() -> None:
    current = vectors(seed=1)
    benchmark = similarity_set(current, 60)
    same = judge(vectors(seed=1), current, [benchmark], "run-1")
    assert same.passed, same.reasons
    worse = judge(vectors(seed=2), current, [benchmark], "run-1")  # ρ near 0 instead of 1
    check = next(c for c in worse.checks if c.measure == "sim spearman")
    assert not worse.passed and check.passed is False and check.items == 60
    assert check.current == pytest.approx(1.0) and check.candidate < 0.5
    assert "beyond the tolerance" in check.note


def test_a_drop_within_the_noise_of_a_small_benchmark_passes() -> None:
    """On 25 noisy pairs the bootstrap tolerance exceeds the fixed floor."""
    current = vectors(seed=1)
    noise = 0.3 * np.random.default_rng(9).normal(size=current.vectors.shape)
    candidate = RunVectors(current.words, current.vectors + noise.astype(np.float32), 2.5, "h1")
    noisy = similarity_set(current, 25, noise=0.5)
    verdict = judge(candidate, current, [noisy], "run-1")
    check = next(c for c in verdict.checks if c.measure == "sim spearman")
    assert check.candidate < check.current and check.tolerance > 0.02 and check.passed
    assert judge(candidate, current, [noisy], "run-1") == verdict  # seeded: the same


def test_too_few_shared_items_are_not_comparable() -> None:
    current = vectors(seed=1)
    small = similarity_set(current, MIN_ITEMS["similarity"] - 1)
    few_probes = PROBES[: MIN_ITEMS["probes"] - 1]
    candidate = vectors(seed=2, probes=few_probes)
    verdict = judge(candidate, current, [small], "run-1")
    notes = {c.measure: c for c in verdict.checks}
    assert notes["probe score"].passed is None and notes["probe score"].items == len(few_probes)
    assert "not comparable (19 items in both runs, fewer than 20)" in notes["sim spearman"].note
    assert verdict.passed  # the loss is comparable and no worse


def test_only_the_words_both_runs_share_are_compared_word_by_word() -> None:
    """The current run holds 8 of the probe pairs, the same vectors in another row order: the
    two runs score the same on the words they share."""
    candidate = vectors(seed=1, extra=["nuevo", "otro"])
    row = {word: i for i, word in enumerate(candidate.words)}
    words = vectors(seed=1, probes=PROBES[:8]).words[::-1]
    current = RunVectors(words, candidate.vectors[[row[w] for w in words]], 2.5, "h1")
    benchmark = similarity_set(candidate, 60, noise=0.5)
    verdict = judge(candidate, current, [benchmark], current_run="run-1")
    checks = {check.measure: check for check in verdict.checks}
    probe, rho = checks["probe score"], checks["sim spearman"]
    assert probe.items == 8 and probe.candidate == pytest.approx(probe.current) and probe.passed
    assert rho.items == 60 and rho.candidate == pytest.approx(rho.current) and rho.passed


def test_held_out_loss_compared_only_on_the_same_held_out_set() -> None:
    worse = 2.5 * (1 + 2 * LOSS_TOLERANCE)
    current = vectors(seed=1)
    assert not judge(vectors(seed=1, loss=worse), current, current_run="r").passed
    other_set = RunVectors(current.words, current.vectors, worse, "h2")
    verdict = judge(other_set, current, current_run="r")
    assert verdict.passed and "held-out loss: not comparable" in verdict.reasons[-1]
    assert judge(vectors(seed=1, loss=2.5 * (1 + LOSS_TOLERANCE / 2)), current).passed


def test_a_resample_repeats_each_item_by_the_product_of_its_units_draws() -> None:
    units = np.array([[0, 1], [1, 2], [2, 0], [0, 0]])
    rng = np.random.default_rng(0)  # what resamples draws: 3 units, 3 times
    for drawn, rows in zip(rng.integers(0, 3, (5, 3)), resamples(units, 5), strict=True):
        times = np.bincount(drawn, minlength=3)
        expected = [times[a] * times[b] for a, b in units]
        assert np.bincount(rows, minlength=4).tolist() == expected
    alone = list(resamples(np.arange(7)[:, None], 20))
    assert all(len(rows) == 7 for rows in alone)  # each item its own unit: n rows


def test_question_pairs_number_a_section_s_word_pairs_whatever_their_case() -> None:
    questions = (
        ("Atenas", "Grecia", "Roma", "Italia"),
        ("roma", "italia", "atenas", "grecia"),
        ("Roma", "Italia", "París", "Francia"),
        ("rey", "reina", "roma", "italia"),
    )
    sections = ("capitales", "capitales", "capitales", "otra")
    pairs = question_pairs(AnalogySet("a", "0" * 64, questions, sections))
    assert pairs.tolist() == [[0, 1], [1, 0], [1, 2], [3, 4]]


def relation_run(seed: int, pairs: int, noise: float) -> RunVectors:
    """Word pairs (x_k, y_k) with y_k = x_k + one shared relation + noise drawn from `seed`
    (the same x_k and relation in every run): a rerun places each y_k anew."""
    base = np.random.default_rng(0)
    x = base.normal(size=(pairs, 32))
    relation = base.normal(size=32)
    y = x + relation + noise * np.random.default_rng(seed).normal(size=(pairs, 32))
    words = [f"x{k}" for k in range(pairs)] + [f"y{k}" for k in range(pairs)] + FILLER
    matrix = np.vstack([x, y, base.normal(size=(len(FILLER), 32))])
    return RunVectors(words, matrix.astype(np.float32))


def test_analogies_are_resampled_by_word_pair_so_a_rerun_s_pair_noise_is_tolerated() -> None:
    """Every ordered pair of 40 word pairs is a question: each pair sways 78 questions at once,
    so the word pairs, not the 1,560 questions, are the bootstrap's independent units. This
    rerun scores 0.05 below the current run: beyond what the questions alone would tolerate."""
    k = 40
    questions = tuple((f"x{a}", f"y{a}", f"x{c}", f"y{c}") for a in range(k) for c in range(k)
                      if a != c)  # fmt: skip
    analogies = AnalogySet("rel", "0" * 64, questions, ("r",) * len(questions))
    current, rerun = relation_run(9, k, 1.2), relation_run(1, k, 1.2)
    verdict = judge(rerun, current, [analogies], "run-1")
    check = next(c for c in verdict.checks if c.measure == "rel 3cosadd")
    assert check.items == len(questions) and check.current - check.candidate > 0.04
    assert check.passed, check.note
    index = WordIndex(current.words)
    right = [analogy_answers(index, unit_rows(r.vectors), analogies)[1] for r in (rerun, current)]
    questions_alone = compare("rel", "analogy", _mean, *right)
    assert questions_alone.passed is False
    worse = judge(relation_run(1, k, 3.0), current, [analogies], "run-1")
    worse_check = next(c for c in worse.checks if c.measure == "rel 3cosadd")
    assert not worse.passed and worse_check.passed is False and worse_check.candidate < 0.1


def test_the_tolerance_is_twice_the_bootstrap_standard_error_of_the_difference() -> None:
    """100 analogy answers, the candidate 0.06 below: within twice the standard error (0.062),
    beyond once (0.031)."""
    rng = np.random.default_rng(5)
    old = (rng.random(100) < 0.6).astype(float)
    new = old.copy()
    new[rng.choice(np.flatnonzero(old == 1), 8, replace=False)] = 0
    new[rng.choice(np.flatnonzero(old == 0), 2, replace=False)] = 1
    gaps = [new[rows].mean() - old[rows].mean() for rows in resamples(np.arange(100)[:, None], 200)]
    error = float(np.std(gaps))
    assert FLOORS["analogy"] < error < old.mean() - new.mean() < 2 * error
    check = compare("m", "analogy", _mean, new, old)
    assert check.tolerance == pytest.approx(round(2 * error, 4))
    assert check.passed and "within the tolerance" in check.note


def test_the_benchmark_comparison_searches_only_the_restrict_vocab_most_frequent_words() -> None:
    """As evaluate does: with restrict_vocab=N, only pairs of the N most frequent shared words
    count, and the candidate's ρ is evaluate's."""
    current = vectors(seed=1)
    candidate = vectors(seed=2)
    benchmark = similarity_set(current, 150, noise=0.5)
    limit = 174
    (expected,) = evaluate(candidate.words, candidate.vectors, [benchmark], limit)
    (everything,) = evaluate(candidate.words, candidate.vectors, [benchmark])
    assert MIN_ITEMS["similarity"] <= expected.found < everything.found == 150
    verdict = judge(candidate, current, [benchmark], "run-1", restrict_vocab=limit)
    check = next(c for c in verdict.checks if c.measure == "sim spearman")
    assert check.items == expected.found
    assert check.candidate == pytest.approx(expected.value)
    unrestricted = judge(candidate, current, [benchmark], "run-1")
    assert next(c for c in unrestricted.checks if c.measure == "sim spearman").items == 150


def test_a_mean_pair_cosine_at_exactly_the_limit_is_collapsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = vectors(seed=4, probes=())
    cosine = mean_pair_cosine(unit_rows(run.vectors[:SPREAD_WORDS]))
    monkeypatch.setattr(gate, "COLLAPSED_COSINE", cosine)
    (reason,) = problems(run)
    assert reason.startswith("collapsed: the 200 most frequent words")
    monkeypatch.setattr(gate, "COLLAPSED_COSINE", float(np.nextafter(cosine, 1.0)))
    assert problems(run) == []


def test_exactly_the_minimum_of_probe_pairs_is_judged() -> None:
    probes = PROBES[: MIN_ITEMS["probes"]]
    (reason,) = problems(vectors(related=False, probes=probes))
    assert "no closer than random words" in reason and "over 6 pairs" in reason
    assert problems(vectors(related=False, probes=probes[:-1])) == []
    verdict = judge(vectors(seed=2, probes=probes), vectors(seed=1), current_run="run-1")
    probe = next(c for c in verdict.checks if c.measure == "probe score")
    assert probe.items == 6 and probe.passed is not None


def test_exactly_the_minimum_of_items_is_comparable() -> None:
    current = vectors(seed=1)
    smallest = similarity_set(current, MIN_ITEMS["similarity"])
    verdict = judge(vectors(seed=1), current, [smallest], "run-1")
    check = next(c for c in verdict.checks if c.measure == "sim spearman")
    assert check.items == 20 and check.passed is True and "not comparable" not in check.note
    right = np.arange(MIN_ITEMS["analogy"]) % 2 == 0
    analogy = compare("a", "analogy", _mean, right, right)
    assert analogy.items == 100 and analogy.passed is True
    fewer = compare("a", "analogy", _mean, right[1:], right[1:])
    assert fewer.passed is None
