"""Benchmarks: reading similarity and analogy files, Spearman's ρ, 3CosAdd and 3CosMul, against
hand-computed values and gensim's evaluate_word_pairs / evaluate_word_analogies; `quijote
evaluate` and its one-line errors."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from gensim.models import KeyedVectors
from scipy.stats import spearmanr

from quijote.errors import QuijoteError
from quijote.params import Params
from storage import warehouse
from storage.benchmarks import ANALOGY, SIMILARITY, read_benchmark, read_benchmarks
from storage.stages import StageOutput
from storage.vectors import word2vec_lines
from tasks import evaluate as evaluation
from tasks.evaluate import WordIndex, evaluate, fold, spearman
from tests.commands import assert_one_line_error, quijote
from tests.data import VECTORS, WORDS, make_run


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding)
    return path


def scores_by_name(scores) -> dict[tuple[str, str], evaluation.Score]:
    return {(s.benchmark, s.metric): s for s in scores}


def test_spearman_matches_scipy_with_ties() -> None:
    rng = np.random.default_rng(0)
    for n in (2, 5, 40, 300):
        x, y = rng.integers(0, 6, n).astype(float), rng.normal(size=n)
        expected = spearmanr(x, y).statistic
        assert spearman(x, y) == (pytest.approx(expected) if np.isfinite(expected) else None)
    assert spearman(np.array([1.0]), np.array([2.0])) is None
    assert spearman(np.ones(4), np.arange(4.0)) is None  # constant: undefined


def test_similarity_by_hand(tmp_path: Path) -> None:
    """Cosines 0.71 (twice, a tie) and 0 (twice) against four different scores."""
    words = ["uno", "dos", "tres", "cuatro", "niño"]
    vectors = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0.2, 1]])
    text = (
        "palabra1\tpalabra2\tpuntuación\n"  # a header line
        "Uno\tdos\t3\ndos\ttres\t2\nuno\tcuatro\t1\ndos\tcuatro\t0.5\n"
        "uno\tausente\t4\n"  # not in the vocabulary
    )
    benchmark = read_benchmark(write(tmp_path / "sim.txt", text))
    assert benchmark.kind == SIMILARITY and benchmark.name == "sim"
    (score,) = evaluate(words, vectors, [benchmark])
    # cosine ranks 3.5, 3.5, 1.5, 1.5 against score ranks 4, 3, 2, 1: centred (1, 1, -1, -1)
    # and (1.5, 0.5, -0.5, -1.5), so ρ = 4 / sqrt(4 * 5).
    assert score.value == pytest.approx(4 / np.sqrt(20))
    assert (score.metric, score.found, score.total) == ("spearman", 4, 5)
    spaced = write(tmp_path / "spaced.txt", "uno dos 2\nnino cuatro 3\nuno tres 1\n")
    (score,) = evaluate(words, vectors, [read_benchmark(spaced)])
    assert score.found == 3 and score.value == pytest.approx(1.0)  # nino: niño, folded


def test_lookup_lowercases_then_folds_accents_most_frequent_first() -> None:
    index = WordIndex(["Canción", "cancion", "niño", "año", "ano", "Sancho", "sancho",
                       "pingüino", "pinguino"])  # fmt: skip
    assert index.rows(["CANCIÓN", "canción", "nino", "año", "ano", "xyz"]).tolist() == [
        0, 0, 2, 3, 4, -1
    ]  # fmt: skip
    # two words with one lowercase form, two with one folded form: the more frequent wins,
    # and an exact match wins over a folded one
    assert index.rows(["SANCHO", "pingúino", "pinguino"]).tolist() == [5, 7, 8]
    assert fold("pingüino ñandú") == "pinguino nandu"


def test_analogies_by_hand(tmp_path: Path) -> None:
    """rey - hombre + mujer = reina; hombre : mujer :: niño : niña; one question wrong, one
    with a word outside the vocabulary."""
    text = (
        ": realeza\nhombre rey mujer reina\nHOMBRE MUJER REY REINA\n"
        ": familia\nhombre mujer niño niña\nhombre mujer niño rey\nhombre mujer gato gata\n"
    )
    benchmark = read_benchmark(write(tmp_path / "analogias.txt", text))
    assert benchmark.kind == ANALOGY and benchmark.sections == (
        "realeza", "realeza", "familia", "familia", "familia"
    )  # fmt: skip
    scores = scores_by_name(evaluate(WORDS, VECTORS, [benchmark]))
    for metric in ("3cosadd", "3cosmul"):
        assert scores["analogias", metric] == evaluation.Score("analogias", metric, 0.75, 4, 5)
        assert scores["analogias/realeza", metric].value == 1.0
        assert scores["analogias/familia", metric].value == 0.5
        assert scores["analogias/familia", metric].found == 2
    units = VECTORS / np.linalg.norm(VECTORS, axis=1, keepdims=True)
    target = units[WORDS.index("niño")] - units[WORDS.index("hombre")] + units[WORDS.index("mujer")]
    ranked = sorted(
        (w for w in WORDS if w not in ("hombre", "mujer", "niño")),
        key=lambda w: -(units[WORDS.index(w)] @ target),
    )
    assert ranked[0] == "niña"  # the reference for the third question, by brute force


def random_model(tmp_path: Path, words: int = 300, dim: int = 16) -> tuple[list[str], np.ndarray]:
    """Vectors with some structure: word 2i+1 is word 2i plus a shared offset and noise."""
    rng = np.random.default_rng(7)
    vocab = [f"w{i}" for i in range(words)]
    vectors = rng.normal(size=(words, dim)).astype(np.float32)
    offset = rng.normal(size=dim)
    vectors[1::2] = vectors[0::2] + offset + 0.8 * rng.normal(size=(words // 2, dim))
    return vocab, vectors


def test_the_same_numbers_as_gensim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    words, vectors = random_model(tmp_path)
    model = tmp_path / "model.txt"
    model.write_text("".join(word2vec_lines(words, vectors)), encoding="utf-8")
    kv = KeyedVectors.load_word2vec_format(str(model))
    rng = np.random.default_rng(8)
    pairs = rng.integers(0, 320, (120, 2))  # some beyond the vocabulary
    sim_lines = [f"w{a}\tw{b}\t{rng.uniform(0, 10):.2f}" for a, b in pairs if a != b]
    sim = write(tmp_path / "sim.txt", "\n".join(sim_lines) + "\n")
    lines = []
    for section in ("uno", "dos"):
        lines.append(f": {section}")
        for a, c in rng.integers(0, 160, (150, 2)):
            lines.append(f"w{2 * a} w{2 * a + 1} w{2 * c} w{2 * c + 1}")
    questions = write(tmp_path / "questions.txt", "\n".join(lines) + "\n")
    monkeypatch.setattr(evaluation, "EPSILON", 1e-6)  # gensim's guard in most_similar_cosmul
    for restrict in (0, 200):
        limit = restrict or len(words)
        ours = scores_by_name(
            evaluate(words, vectors, read_benchmarks([sim], [questions]), restrict)
        )
        _, (rho, _), oov = kv.evaluate_word_pairs(str(sim), restrict_vocab=limit)
        assert ours["sim", "spearman"].value == pytest.approx(rho, abs=1e-6)
        found = ours["sim", "spearman"]
        assert 100 * (1 - found.found / found.total) == pytest.approx(oov)
        total, sections = kv.evaluate_word_analogies(str(questions), restrict_vocab=limit)
        assert ours["questions", "3cosadd"].value == pytest.approx(total)
        for section in sections[:-1]:  # the last one is gensim's total
            n = len(section["correct"]) + len(section["incorrect"])
            mine = ours[f"questions/{section['section']}", "3cosadd"]
            assert (mine.found, mine.value) == (n, pytest.approx(len(section["correct"]) / n))
        allowed = set(kv.index_to_key[:limit])
        right = found_count = 0
        for line in lines:
            q = line.split()
            if line.startswith(":") or not set(q) <= allowed:
                continue
            found_count += 1
            # gensim's most_similar_cosmul searches every word (it ignores restrict_vocab)
            dists = kv.most_similar_cosmul(positive=[q[1], q[2]], negative=[q[0]], topn=None)
            dists = dists[:limit].copy()
            dists[[kv.key_to_index[w] for w in q[:3]]] = -np.inf
            right += kv.index_to_key[int(np.argmax(dists))] == q[3]
        assert ours["questions", "3cosmul"].found == found_count
        assert ours["questions", "3cosmul"].value == pytest.approx(right / found_count)
        assert 0.1 < right / found_count < 0.9  # the test tells right from wrong answers


def test_thousands_of_questions_on_a_large_vocabulary_in_batches() -> None:
    """4,000 questions over 30,000 words, answered in many batches: x_k : y_k :: x_j : y_j,
    where y_k = x_k + a shared relation, is right in every batch; the same question asking for
    another word is wrong."""
    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(30_000)]
    vectors = rng.normal(size=(30_000, 100))
    pairs = 1_000  # x_k is row k, y_k row pairs + k
    vectors[pairs : 2 * pairs] = vectors[:pairs] + 3 * rng.normal(size=100)
    a, c = rng.integers(0, pairs, (2, 4_000))
    c = np.where(a == c, (c + 1) % pairs, c)
    d = np.where(np.arange(4_000) % 4 == 0, 2 * pairs + c, pairs + c)  # every 4th: wrong
    questions = np.stack([a, pairs + a, c, d], axis=1)
    benchmark = evaluation.AnalogySet(
        "big", "0", tuple(tuple(f"w{i}" for i in q) for q in questions), ("s",) * 4_000
    )
    assert 4 * max(16, evaluation.SCORES_PER_BATCH // 30_000) < 4_000  # several batches
    scores = scores_by_name(evaluate(words, vectors.astype(np.float32), [benchmark]))
    for metric in ("3cosadd", "3cosmul"):
        assert scores["big", metric].found == 4_000 and scores["big", metric].value == 0.75


@pytest.mark.parametrize(
    ("option", "content", "message"),
    [
        ("--similarity", None, "no such benchmark file"),
        ("--similarity", b"", "is empty"),
        ("--similarity", b"rey reina\nhombre mujer\n", "line 1 of"),
        ("--similarity", b"rey reina 3\nhombre mujer alto\n", "the score 'alto' is not a number"),
        ("--similarity", "rey reina 3\nniño niña 2\n".encode("latin-1"), "is not UTF-8 (line 2)"),
        ("--similarity", b"w1 w2 score\n", "has no word pairs"),
        ("--analogies", b": s\nrey reina hombre\n", "expected an analogy 'a b c d'"),
        ("--analogies", b"rey reina hombre mujer\n", "a question before any ': section'"),
        ("--similarity", b": capitales\na b c d\n", "is an analogy file"),
    ],
)
def test_bad_benchmark_files_are_one_line_and_exit_status_2(
    home: Path, tmp_path: Path, option: str, content: bytes | None, message: str
) -> None:
    model = tmp_path / "v.txt"
    model.write_text("".join(word2vec_lines(WORDS, VECTORS)), encoding="utf-8")
    bad = tmp_path / "bad.txt"
    if content is not None:
        bad.write_bytes(content)
    result = quijote(home, "evaluate", "--vectors", str(model), option, str(bad))
    assert_one_line_error(result, message)


def test_evaluate_the_current_run_a_run_by_id_or_a_file(home: Path, tmp_path: Path) -> None:
    questions = write(tmp_path / "q.txt", ": s\nhombre rey mujer reina\n")
    sim = write(tmp_path / "s.txt", "rey reina 3\nhombre mujer 2\nrey niño 1\n")
    args = ["--similarity", str(sim), "--analogies", str(questions)]
    assert_one_line_error(
        quijote(home, "evaluate", *args),
        "no current run in the warehouse: run `quijote run` first, or give --vectors FILE",
    )
    warehouse.register_run(make_run(home / "stages", "run-1", WORDS, VECTORS))
    model = tmp_path / "v.parquet"
    model.write_bytes(warehouse.current_run().vectors_path.read_bytes())
    shutil.rmtree(home / "stages")  # a run's vectors are read from the warehouse's own copy
    shown = quijote(home, "evaluate", *args)
    assert shown.returncode == 0, shown.stderr
    assert "3cosadd" in shown.stdout and "3 / 3" in shown.stdout and "run-1" in shown.stdout
    line = quijote(home, "evaluate", "--run", "run-1", "--json", *args)
    assert line.returncode == 0 and len(line.stdout.strip().splitlines()) == 1
    result = json.loads(line.stdout)
    assert result["run_id"] == "run-1"
    assert {"benchmark": "q", "metric": "3cosadd", "value": 1.0, "found": 1, "total": 1} in (
        result["scores"]
    )
    assert_one_line_error(quijote(home, "evaluate", "--run", "run-9", *args), "no run 'run-9'")
    by_file = json.loads(quijote(home, "evaluate", "--vectors", str(model), "--json", *args).stdout)
    assert by_file["scores"] == result["scores"] and by_file["run_id"] is None


def test_default_benchmarks_are_the_eval_folder_beside_the_mirror() -> None:
    from storage.benchmarks import find_benchmarks

    names = {b.name: b.kind for b in find_benchmarks(None)}
    assert names == {"es_rg65": SIMILARITY, "es_ws353": SIMILARITY, "es_analogy_dev": ANALOGY}
    assert find_benchmarks(()) == []


@pytest.mark.parametrize("score", ["nan", "inf", "-Infinity"])
def test_a_non_finite_similarity_score_is_an_error_naming_its_line(
    tmp_path: Path, score: str
) -> None:
    path = write(tmp_path / "sim.txt", f"rey reina 3\nhombre mujer {score}\nrey niño 1\n")
    with pytest.raises(QuijoteError, match=f"line 2 of .*sim.txt: the score '{score}' is not fin"):
        read_benchmark(path, SIMILARITY)


def test_comment_lines_are_ignored_in_similarity_and_analogy_files(tmp_path: Path) -> None:
    """`#` lines anywhere, even first (where an analogy file's kind is told), are skipped."""
    sim = write(
        tmp_path / "sim.txt",
        "# pares traducidos de RG65\nrey reina 3\n# otra nota: de la versión 2\nhombre mujer 2\n",
    )
    similarity = read_benchmark(sim)
    assert similarity.kind == SIMILARITY
    assert similarity.pairs == (("rey", "reina"), ("hombre", "mujer"))
    assert similarity.scores == (3.0, 2.0)
    text = "# analogías: a b c\n: realeza\nhombre rey mujer reina\n# a b c d\n: familia\n" + (
        "hombre mujer niño niña\n"
    )
    for kind in (None, ANALOGY):
        analogies = read_benchmark(write(tmp_path / "q.txt", text), kind)
        assert analogies.kind == ANALOGY
        assert analogies.questions == (
            ("hombre", "rey", "mujer", "reina"), ("hombre", "mujer", "niño", "niña")
        )  # fmt: skip
        assert analogies.sections == ("realeza", "familia")


def test_score_table_shows_analogy_sections_unless_told_not_to() -> None:
    """`quijote evaluate` shows each analogy section under its benchmark; the run summary and
    the report (sections=False) show the benchmarks alone."""
    rows = [
        {"benchmark": "sim", "metric": "spearman", "value": 0.5, "found": 3, "total": 4},
        {"benchmark": "q", "metric": "3cosadd", "value": 0.75, "found": 4, "total": 5},
        {"benchmark": "q/realeza", "metric": "3cosadd", "value": 1.0, "found": 2, "total": 2},
        {"benchmark": "q/familia", "metric": "3cosadd", "value": None, "found": 0, "total": 3},
    ]
    header, lines = evaluation.score_table(rows)
    assert header == ["benchmark", "found / total", "spearman", "3cosadd"]
    assert lines == [
        ["sim", "3 / 4", "0.500", ""],
        ["q", "4 / 5", "", "0.750"],
        ["  realeza", "2 / 2", "", "1.000"],
        ["  familia", "0 / 3", "", "–"],
    ]
    assert evaluation.score_table(rows, sections=False)[1] == lines[:2]


def test_an_edited_benchmark_file_with_the_same_name_is_scored_again(
    home: Path, tmp_path: Path
) -> None:
    """The evaluate stage's key covers each benchmark file's content: editing a file (same
    name) builds a new output with the new scores, the same content reuses the old one."""
    record = make_run(tmp_path / "train", "t", WORDS, VECTORS)
    trained = StageOutput("train", "trained-key", record.vectors_path.parent)
    path = tmp_path / "sim.txt"
    write(path, "rey reina 3\nhombre mujer 2\nrey niño 1\n")
    first = evaluation.evaluate_task(trained, [read_benchmark(path)], Params())
    write(path, "rey reina 1\nhombre mujer 2\nrey niño 3\n")
    edited = read_benchmark(path)
    second = evaluation.evaluate_task(trained, [edited], Params())
    assert not second.reused and second.key != first.key and second.path != first.path
    (expected,) = evaluate(WORDS, VECTORS, [edited])
    (row,) = second.meta["rows"]
    assert row["value"] == pytest.approx(expected.value)
    assert row["value"] != pytest.approx(first.meta["rows"][0]["value"])
    again = evaluation.evaluate_task(trained, [read_benchmark(path)], Params())
    assert again.reused and again.key == second.key
