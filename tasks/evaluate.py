"""Evaluate stage: word vectors scored on word-similarity and analogy benchmarks.

- Similarity: Spearman's ρ between each found pair's cosine and its human score.
- Analogies (a : b :: c : ?): 3CosAdd, argmax cos(d, b − a + c), and 3CosMul (Levy & Goldberg
  2014), argmax cos'(d, b)·cos'(d, c) / (cos'(d, a) + ε) with cos' = (1 + cos) / 2; the three
  inputs excluded; accuracy overall and per section.

Benchmark words are lowercased and looked up in the vocabulary, then accent-folded (several
public Spanish sets strip accents: `nino` finds `niño`); when several words match, the most
frequent wins. An item counts as found when all its words are among the `restrict_vocab` most
frequent words (0 = all, gensim's `restrict_vocab`), and only found items are scored: every
score comes with found/total.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from quijote.params import Params
from storage.benchmarks import AnalogySet, Benchmark, SimilaritySet
from storage.files import write_parquet
from storage.schemas import EVALUATION
from storage.stages import StageOutput, run_stage
from storage.vectors import read_vectors, unit_rows
from tasks.stage_task import stage_task

VERSION = 1
EPSILON = 1e-3  # 3CosMul's guard against division by zero (Levy & Goldberg's value)
SCORES_PER_BATCH = 1 << 23  # analogy questions x words scored at a time (3 such float arrays)


Items = tuple[np.ndarray, np.ndarray]  # which items are found (bool mask), a value per found one


@dataclass(frozen=True)
class Score:
    """One number of one benchmark, over the items found in the vocabulary."""

    benchmark: str  # the file's stem; `name/section` for an analogy section
    metric: str  # spearman, 3cosadd or 3cosmul
    value: float | None  # None when nothing was found
    found: int
    total: int


def fold(word: str) -> str:
    """`word` without accents, tildes or diaereses (canción -> cancion, niño -> nino)."""
    decomposed = unicodedata.normalize("NFD", word)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


class WordIndex:
    """Benchmark words to vocabulary rows (the vocabulary ordered by frequency): exact after
    lowercasing, else accent-folded; the first (most frequent) match wins."""

    def __init__(self, words: Sequence[str]) -> None:
        self.exact: dict[str, int] = {}
        self.folded: dict[str, int] = {}
        for row, word in enumerate(words):
            lower = word.lower()
            self.exact.setdefault(lower, row)
            self.folded.setdefault(fold(lower), row)

    def rows(self, words: Sequence[str]) -> np.ndarray:
        """The row of each word, -1 where it is not in the vocabulary."""
        found = []
        for word in words:
            lower = word.lower()
            row = self.exact.get(lower)
            found.append(self.folded.get(fold(lower), -1) if row is None else row)
        return np.array(found, dtype=np.int64)


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their mean rank."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(values)]
    mean_rank = (starts + ends + 1) / 2  # positions start..end-1 hold ranks start+1..end
    result = np.empty(len(values))
    result[order] = np.repeat(mean_rank, ends - starts)
    return result


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman's ρ (Pearson's r of the ranks); None for fewer than 2 values or a constant."""
    if len(x) < 2:
        return None
    rx, ry = ranks(np.asarray(x, dtype=np.float64)), ranks(np.asarray(y, dtype=np.float64))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = np.sqrt((rx @ rx) * (ry @ ry))
    return float(rx @ ry / denominator) if denominator > 0 else None


def pair_cosines(index: WordIndex, units: np.ndarray, benchmark: SimilaritySet) -> Items:
    """Which pairs are found, and the cosine of each found pair."""
    first = index.rows([a for a, _ in benchmark.pairs])
    second = index.rows([b for _, b in benchmark.pairs])
    found = (first >= 0) & (second >= 0)
    return found, np.einsum("ij,ij->i", units[first[found]], units[second[found]])


def similarity_score(index: WordIndex, units: np.ndarray, benchmark: SimilaritySet) -> Score:
    """Spearman's ρ between cosine and human score over the pairs found."""
    found, cosines = pair_cosines(index, units, benchmark)
    rho = spearman(cosines, np.asarray(benchmark.scores)[found])
    return Score(benchmark.name, "spearman", rho, int(found.sum()), len(benchmark.pairs))


def answer_analogies(units: np.ndarray, questions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For questions (rows a, b, c, d into `units`): whether 3CosAdd and 3CosMul answer d."""
    add = np.zeros(len(questions), dtype=bool)
    mul = np.zeros(len(questions), dtype=bool)
    size = max(16, min(1024, SCORES_PER_BATCH // max(len(units), 1)))
    for start in range(0, len(questions), size):
        batch = questions[start : start + size]
        rows = np.arange(len(batch))[:, None]
        cos_a, cos_b, cos_c = (units[batch[:, i]] @ units.T for i in range(3))
        additive = cos_b - cos_a + cos_c
        multiplicative = (1 + cos_b) * (1 + cos_c) / (1 + cos_a + 2 * EPSILON)  # / 2 dropped
        for scores, correct in ((additive, add), (multiplicative, mul)):
            scores[rows, batch[:, :3]] = -np.inf
            correct[start : start + len(batch)] = scores.argmax(axis=1) == batch[:, 3]
    return add, mul


def analogy_answers(
    index: WordIndex, units: np.ndarray, benchmark: AnalogySet
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which questions are found, and for each found one whether 3CosAdd and 3CosMul are right."""
    questions = index.rows([w for q in benchmark.questions for w in q]).reshape(-1, 4)
    found = (questions >= 0).all(axis=1)
    return found, *answer_analogies(units, questions[found])


def analogy_scores(index: WordIndex, units: np.ndarray, benchmark: AnalogySet) -> list[Score]:
    """3CosAdd and 3CosMul accuracy over the questions found: overall, then per section."""
    found, add, mul = analogy_answers(index, units, benchmark)
    sections = np.asarray(benchmark.sections)
    groups = [(benchmark.name, np.ones(len(sections), dtype=bool))]
    groups += [(f"{benchmark.name}/{s}", sections == s) for s in dict.fromkeys(benchmark.sections)]
    scores = []
    for name, members in groups:
        hits = members[found]
        for metric, correct in (("3cosadd", add), ("3cosmul", mul)):
            n = int(hits.sum())
            value = float(correct[hits].mean()) if n else None
            scores.append(Score(name, metric, value, n, int(members.sum())))
    return scores


def evaluate(
    words: Sequence[str],
    vectors: np.ndarray,
    benchmarks: Sequence[Benchmark],
    restrict_vocab: int = 0,
) -> list[Score]:
    """Every benchmark's scores on these vectors (rows ordered by frequency), searching only
    the `restrict_vocab` most frequent words (0 = all)."""
    limit = restrict_vocab or len(words)
    index = WordIndex(words[:limit])
    units = unit_rows(vectors[:limit])
    scores = []
    for benchmark in benchmarks:
        if isinstance(benchmark, SimilaritySet):
            scores.append(similarity_score(index, units, benchmark))
        else:
            scores.extend(analogy_scores(index, units, benchmark))
    return scores


def score_rows(scores: Sequence[Score]) -> list[dict[str, Any]]:
    return [asdict(score) for score in scores]


def score_table(
    rows: Sequence[Mapping[str, Any]], sections: bool = True
) -> tuple[list[str], list[list[str]]]:
    """Score rows as a table of text: a line per benchmark (then its analogy sections,
    indented, unless not `sections`) with found / total and a column per metric."""
    metrics = list(dict.fromkeys(row["metric"] for row in rows))
    lines: dict[str, list[str]] = {}
    for row in rows:
        benchmark, _, section = row["benchmark"].partition("/")
        if section and not sections:
            continue
        line = lines.setdefault(
            row["benchmark"],
            [f"  {section}" if section else benchmark, f"{row['found']:,} / {row['total']:,}"]
            + [""] * len(metrics),
        )
        line[2 + metrics.index(row["metric"])] = _number(row["value"])
    return ["benchmark", "found / total", *metrics], list(lines.values())


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


@stage_task("evaluate")
def evaluate_task(trained: StageOutput, benchmarks: list[Benchmark], params: Params) -> StageOutput:
    """Score the trained vectors on every benchmark; `evaluation.parquet` holds one row per
    benchmark (and analogy section) and metric."""

    def build(out):
        words, vectors = read_vectors(trained.file("vectors.parquet"))
        rows = score_rows(evaluate(words, vectors, benchmarks, params.restrict_vocab))
        batch = pa.RecordBatch.from_pylist(rows, schema=EVALUATION)
        write_parquet(out / "evaluation.parquet", EVALUATION, [batch])
        return {"rows": rows}  # the files' sha256 are among the stage's inputs

    inputs = [trained.key, *(f"{b.kind}:{b.name}:{b.sha256}" for b in benchmarks)]
    return run_stage("evaluate", VERSION, params.subset("restrict_vocab"), inputs, build)
