"""Benchmark files for vector quality: word similarity (`word1 word2 score`, tab- or
space-separated, a header line tolerated) and analogies (word2vec's `questions-words`:
`: section` lines, then `a b c d`). Each is read once into a small frozen value; a file that is
missing, empty, not UTF-8 or not in its format is one clear error naming the line."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from quijote.errors import QuijoteError
from storage.files import file_sha256
from storage.paths import eval_dir

SIMILARITY, ANALOGY = "similarity", "analogy"


@dataclass(frozen=True)
class SimilaritySet:
    """Word pairs with a human similarity score each."""

    name: str  # the file's stem: es_rg65
    sha256: str
    pairs: tuple[tuple[str, str], ...]
    scores: tuple[float, ...]

    kind = SIMILARITY


@dataclass(frozen=True)
class AnalogySet:
    """Questions a : b :: c : d, each in a section."""

    name: str
    sha256: str
    questions: tuple[tuple[str, str, str, str], ...]
    sections: tuple[str, ...]  # the section of each question

    kind = ANALOGY


Benchmark = SimilaritySet | AnalogySet


def read_benchmark(path: Path, kind: str | None = None) -> Benchmark:
    """The benchmark in `path`; its kind is `kind`, or told by its first line (an analogy file
    starts with a `: section` line)."""
    lines = _lines(path)
    if kind is None:
        kind = ANALOGY if lines[0][1].startswith(":") else SIMILARITY
    sha256 = file_sha256(path)
    if kind == SIMILARITY:
        return _similarity(path, sha256, lines)
    return _analogies(path, sha256, lines)


def read_benchmarks(
    similarity: Sequence[Path] = (), analogies: Sequence[Path] = ()
) -> list[Benchmark]:
    """Similarity and analogy files read as such; two benchmarks may not share a name."""
    sets = [read_benchmark(p, SIMILARITY) for p in similarity]
    sets += [read_benchmark(p, ANALOGY) for p in analogies]
    return _distinct(sets)


def find_benchmarks(specs: Sequence[str] | None) -> list[Benchmark]:
    """The flow's benchmarks: files named by `specs` (their kind told by their content), or
    with `specs` None the `*.txt` files of the eval folder beside the corpus mirror (none when
    there is no such folder)."""
    if specs is None:
        folder = eval_dir()
        paths = sorted(folder.glob("*.txt")) if folder else []
    else:
        paths = [Path(spec).expanduser() for spec in specs]
    return _distinct([read_benchmark(path) for path in paths])


def _distinct(sets: list[Benchmark]) -> list[Benchmark]:
    names = [s.name for s in sets]
    for name in names:
        if names.count(name) > 1:
            raise QuijoteError(f"two benchmark files are named {name!r}: rename one")
    return sets


def _lines(path: Path) -> list[tuple[int, str]]:
    """The file's non-blank lines that are not `#` comments, stripped, with their numbers."""
    if not path.is_file():
        raise QuijoteError(f"no such benchmark file: {path}")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise QuijoteError(f"{path} is not UTF-8 (line {line}): convert it to UTF-8") from None
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1)]
    lines = [(n, line) for n, line in lines if line and not line.startswith("#")]
    if not lines:
        raise QuijoteError(f"benchmark file {path} is empty")
    return lines


def _similarity(path: Path, sha256: str, lines: list[tuple[int, str]]) -> SimilaritySet:
    if lines[0][1].startswith(":"):
        raise QuijoteError(f"{path} is an analogy file (': section' lines), not word pairs")
    pairs, scores = [], []
    for position, (number, line) in enumerate(lines):
        fields = line.split("\t") if "\t" in line else line.split()
        fields = [f.strip() for f in fields]
        if len(fields) != 3 or not all(fields):
            raise QuijoteError(
                f"line {number} of {path}: expected 'word1 word2 score' (tab- or space-"
                f"separated), got {len(fields)} fields"
            )
        try:
            score = float(fields[2])
        except ValueError:
            if position == 0:  # a header line
                continue
            raise QuijoteError(
                f"line {number} of {path}: the score {fields[2]!r} is not a number"
            ) from None
        if not math.isfinite(score):
            raise QuijoteError(f"line {number} of {path}: the score {fields[2]!r} is not finite")
        pairs.append((fields[0], fields[1]))
        scores.append(score)
    if not pairs:
        raise QuijoteError(f"{path} has no word pairs (only a header)")
    return SimilaritySet(path.stem, sha256, tuple(pairs), tuple(scores))


def _analogies(path: Path, sha256: str, lines: list[tuple[int, str]]) -> AnalogySet:
    questions, sections = [], []
    section = None
    for number, line in lines:
        if line.startswith(":"):
            section = line[1:].strip() or f"line {number}"
            continue
        words = line.split()
        if len(words) != 4:
            raise QuijoteError(
                f"line {number} of {path}: expected an analogy 'a b c d' or a ': section' "
                f"line, got {len(words)} words"
            )
        if section is None:
            raise QuijoteError(
                f"line {number} of {path}: a question before any ': section' line (analogy "
                "files start with one; word pairs with scores are a similarity file)"
            )
        questions.append((words[0], words[1], words[2], words[3]))
        sections.append(section)
    if not questions:
        raise QuijoteError(f"{path} has no analogy questions")
    return AnalogySet(path.stem, sha256, tuple(questions), tuple(sections))
