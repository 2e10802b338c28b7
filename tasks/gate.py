"""Quality gate: a new run becomes the warehouse's current run only if its vectors are sane and
no worse than the current run's, judged on measures that collapsed vectors cannot win.

- Sanity, whatever the current run: vectors whose most frequent words all point the same way
  (random pairs nearly as similar as related ones) are rejected, and so are vectors whose probe
  pairs rank no better than random words. A current run that fails these never blocks a sane
  candidate.
- Comparison with the current run, over the words both vocabularies share: the probe score
  (each probe partner ranked among the other words), every benchmark (similarity ρ, analogy
  3CosAdd accuracy), and the held-out loss when both runs were measured on the same held-out
  pairs. A measure that covers too few items is "not comparable" and not judged. A measure
  fails when it drops by more than its tolerance: a fixed floor, or twice the standard error of
  the paired difference when that is larger, so that a rerun of equal quality is not rejected
  for the noise of a small benchmark. The standard error comes from a seeded bootstrap over the
  benchmark's independent units: the items of a similarity set; the word pairs of an analogy
  set, whose questions pair each of a section's word pairs with every other, so that a pair's
  vectors, placed well or badly by a rerun, sway all its questions together (after Owen's
  pigeonhole bootstrap, 2007: the pairs are drawn, and each question counts the product of its
  two pairs' draws).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from prefect import task
from prefect.cache_policies import NONE

from quijote.errors import QuijoteError
from storage import warehouse
from storage.benchmarks import AnalogySet, Benchmark, SimilaritySet
from storage.stages import StageOutput
from storage.vectors import read_vectors, unit_rows
from tasks.evaluate import WordIndex, analogy_answers, pair_cosines, spearman

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
SPREAD_WORDS = 200  # the most frequent words, whose mean pairwise cosine tells collapse
COLLAPSED_COSINE = 0.8  # at or above: collapsed
CHANCE_SCORE = 0.6  # a probe score below this is no better than random words (0.5)
MIN_ITEMS = {"probes": 6, "similarity": 20, "analogy": 100}  # fewer: not comparable
FLOORS = {"probes": 0.02, "similarity": 0.02, "analogy": 0.01}  # smallest tolerated drops
LOSS_TOLERANCE = 0.01  # the held-out loss may rise by at most this share
BOOTSTRAP = 200  # resamples for the standard error of a paired difference


@dataclass(frozen=True)
class RunVectors:
    """What the gate knows of one run: its vectors (rows by frequency) and held-out loss."""

    words: list[str]
    vectors: np.ndarray
    heldout_loss: float | None = None
    heldout_set: str | None = None  # content hash of the held-out pairs the loss is on


@dataclass(frozen=True)
class Check:
    """One measure compared between the candidate and the current run."""

    measure: str
    candidate: float | None
    current: float | None
    items: int  # what both runs cover
    tolerance: float | None
    passed: bool | None  # None: not comparable
    note: str


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reasons: list[str]
    current_run: str | None = None
    checks: list[Check] = field(default_factory=list)


def mean_pair_cosine(units: np.ndarray) -> float:
    """The mean cosine over all pairs of distinct rows of unit vectors (exact, from their sum)."""
    n = len(units)
    total = units.sum(axis=0, dtype=np.float64)
    return float((total @ total - np.square(units, dtype=np.float64).sum()) / (n * (n - 1)))


def probe_scores(
    words: Sequence[str], units: np.ndarray, probes: Sequence[tuple[str, str]] = PROBES
) -> np.ndarray:
    """For each probe pair (a, b) in the vocabulary: the share of the other words that are
    less similar to a than b is, averaged with the same for b; 1 = each is the other's nearest
    word, 0.5 = no closer than a random word."""
    if len(words) < 3:
        return np.array([])
    index = {word: row for row, word in enumerate(words)}
    scores = []
    for a, b in probes:
        if a not in index or b not in index:
            continue
        shares = []
        for x, y in ((index[a], index[b]), (index[b], index[a])):
            cosines = units @ units[x]
            target = cosines[y]
            cosines[[x, y]] = np.inf
            shares.append(np.count_nonzero(cosines < target) / (len(words) - 2))
        scores.append(np.mean(shares))
    return np.array(scores)


def problems(run: RunVectors) -> list[str]:
    """Why these vectors are unusable, whatever they are compared with: [] when sane."""
    if len(run.words) < 2:
        return [f"a vocabulary of {len(run.words)} word(s): no pair of words to compare"]
    found = []
    top = unit_rows(run.vectors[:SPREAD_WORDS])
    cosine = mean_pair_cosine(top)
    if cosine >= COLLAPSED_COSINE:
        found.append(
            f"collapsed: the {len(top)} most frequent words have a mean pairwise cosine of "
            f"{cosine:.3f} (>= {COLLAPSED_COSINE}): random pairs are nearly as similar as "
            "related ones"
        )
    scores = probe_scores(run.words, unit_rows(run.vectors))
    if len(scores) >= MIN_ITEMS["probes"] and scores.mean() < CHANCE_SCORE:
        found.append(
            f"its probe pairs are no closer than random words: probe score "
            f"{scores.mean():.3f} < {CHANCE_SCORE} over {len(scores)} pairs (0.5 = chance)"
        )
    if run.heldout_loss is not None and not math.isfinite(run.heldout_loss):
        found.append("the held-out loss is not finite")
    return found


def resamples(units: np.ndarray, count: int) -> Iterator[np.ndarray]:
    """`count` seeded bootstrap resamples of the items, as rows with repeats: the units drawn
    with replacement, and each item repeated as many times as the product of its units' draws
    (`units[i]`: the units item i is built from)."""
    rng = np.random.default_rng(0)
    unique, numbered = np.unique(units, return_inverse=True)
    numbered = numbered.reshape(units.shape)
    items = np.arange(len(units))
    for drawn in rng.integers(0, len(unique), (count, len(unique))):
        times = np.bincount(drawn, minlength=len(unique))[numbered].prod(axis=1)
        yield np.repeat(items, times)


def compare(
    measure: str,
    kind: str,
    statistic: Callable[[np.ndarray, np.ndarray], float | None],
    candidate: np.ndarray,
    current: np.ndarray,
    units: np.ndarray | None = None,
) -> Check:
    """Compare `statistic` of the candidate's and the current run's values on the same items;
    `statistic(values, rows)` is taken over the items at `rows` (bootstrap resamples of the
    `units`, an array of the units each item is built from; by default each item its own)."""
    n = len(candidate)
    if n < MIN_ITEMS[kind]:
        note = f"{measure}: not comparable ({n} items in both runs, fewer than {MIN_ITEMS[kind]})"
        return Check(measure, None, None, n, None, None, note)
    every = np.arange(n)
    new, old = statistic(candidate, every), statistic(current, every)
    if new is None or old is None:
        return Check(measure, new, old, n, None, None, f"{measure}: not comparable (undefined)")
    gaps = []
    for rows in resamples(np.arange(n)[:, None] if units is None else units, BOOTSTRAP):
        if not len(rows):
            continue
        a, b = statistic(candidate, rows), statistic(current, rows)
        if a is not None and b is not None:
            gaps.append(a - b)
    tolerance = max(FLOORS[kind], 2 * float(np.std(gaps)) if gaps else 0.0)
    ok = new >= old - tolerance
    note = (
        f"{measure} ({n} items): {new:.3f} vs {old:.3f} "
        f"{'within' if ok else 'beyond'} the tolerance {tolerance:.3f}"
    )
    return Check(measure, new, old, n, round(tolerance, 4), ok, note)


def question_pairs(benchmark: AnalogySet) -> np.ndarray:
    """The two word pairs (a, b) and (c, d) of each question, numbered within the set: the
    same section and the same words, whatever their case, are the same pair."""
    numbers: dict[tuple[str, str, str], int] = {}
    return np.array(
        [
            [
                numbers.setdefault((section, *map(str.lower, pair)), len(numbers))
                for pair in (question[:2], question[2:])
            ]
            for question, section in zip(benchmark.questions, benchmark.sections, strict=True)
        ],
        dtype=np.int64,
    ).reshape(-1, 2)


def _mean(values: np.ndarray, rows: np.ndarray) -> float:
    return float(values[rows].mean())


def _rho(cosines: np.ndarray, rows: np.ndarray, gold: np.ndarray) -> float | None:
    return spearman(cosines[rows], gold[rows])


def benchmark_checks(
    candidate: RunVectors,
    current: RunVectors,
    benchmarks: Sequence[Benchmark],
    restrict_vocab: int = 0,
) -> list[Check]:
    """The probe score and every benchmark, both runs restricted to the words they share
    (ordered by the candidate's frequencies), so each covers the same items."""
    rows_of = {word: row for row, word in enumerate(current.words)}
    kept = np.array([word in rows_of for word in candidate.words], dtype=bool)
    shared = [word for word in candidate.words if word in rows_of]
    new = unit_rows(candidate.vectors[kept])
    old = unit_rows(current.vectors[[rows_of[word] for word in shared]])
    checks = [
        compare(
            "probe score", "probes", _mean, probe_scores(shared, new), probe_scores(shared, old)
        )
    ]
    limit = restrict_vocab or len(shared)
    index, new, old = WordIndex(shared[:limit]), new[:limit], old[:limit]
    for benchmark in benchmarks:
        if isinstance(benchmark, SimilaritySet):
            found, new_cosines = pair_cosines(index, new, benchmark)
            _, old_cosines = pair_cosines(index, old, benchmark)
            rho = functools.partial(_rho, gold=np.asarray(benchmark.scores)[found])
            measure = f"{benchmark.name} spearman"
            checks.append(compare(measure, "similarity", rho, new_cosines, old_cosines))
        else:
            found, new_right, _ = analogy_answers(index, new, benchmark)
            _, old_right, _ = analogy_answers(index, old, benchmark)
            measure = f"{benchmark.name} 3cosadd"
            pairs = question_pairs(benchmark)[found]
            checks.append(compare(measure, "analogy", _mean, new_right, old_right, pairs))
    return checks


def loss_check(candidate: RunVectors, current: RunVectors) -> Check:
    """The held-out loss, when both runs were measured on the same held-out pairs."""
    new, old = candidate.heldout_loss, current.heldout_loss
    if new is None or old is None or candidate.heldout_set != current.heldout_set:
        note = "held-out loss: not comparable (held-out sets differ or are missing)"
        return Check("held-out loss", new, old, 0, None, None, note)
    ok = new <= old * (1 + LOSS_TOLERANCE)
    note = (
        f"held-out loss {new:.4f} vs {old:.4f} {'within' if ok else 'beyond'} +{LOSS_TOLERANCE:.0%}"
    )
    return Check("held-out loss", new, old, 0, LOSS_TOLERANCE, ok, note)


def judge(
    candidate: RunVectors,
    current: RunVectors | None,
    benchmarks: Sequence[Benchmark] = (),
    current_run: str | None = None,
    restrict_vocab: int = 0,
) -> Verdict:
    """Reject a candidate that is not sane; else pass it unless a comparable measure is worse
    than the current run's beyond its tolerance."""
    trouble = problems(candidate)
    if trouble:
        return Verdict(False, trouble, current_run)
    if current is None:
        reason = (
            "first run" if current_run is None else f"the current run {current_run} is unreadable"
        )
        return Verdict(True, [f"{reason}: nothing to compare with"], current_run)
    current_trouble = problems(current)
    if current_trouble:
        reason = f"the current run {current_run} fails the sanity checks ({current_trouble[0]})"
        return Verdict(True, [f"{reason}: this sane run replaces it"], current_run)
    checks = benchmark_checks(candidate, current, benchmarks, restrict_vocab)
    checks.append(loss_check(candidate, current))
    judged = [check for check in checks if check.passed is not None]
    reasons = [check.note for check in checks]
    if not judged:
        reasons.append("nothing comparable with the current run: passed on the sanity checks")
    return Verdict(all(check.passed for check in judged), reasons, current_run, checks)


@task(name="gate", cache_policy=NONE)
def gate_task(
    trained: StageOutput, benchmarks: Sequence[Benchmark] = (), restrict_vocab: int = 0
) -> Verdict:
    """Judge the trained vectors against the warehouse's current run."""
    losses = trained.meta["heldout_loss_per_epoch"]
    words, vectors = read_vectors(trained.file("vectors.parquet"))
    candidate = RunVectors(
        words, vectors, losses[-1] if losses else None, trained.meta["heldout_set"]
    )
    row = warehouse.current_run()
    if row is None:
        return judge(candidate, None)
    heldout = row.metrics.get("heldout_loss"), row.metrics.get("heldout_set")
    try:  # the warehouse's copy: the stage files may be gone
        current = RunVectors(*warehouse.run_vectors(row.run_id), *heldout)
    except QuijoteError:  # registered before the copies, its files gone since
        current = None
    return judge(candidate, current, benchmarks, row.run_id, restrict_vocab)
