"""The text classifier: split, metrics, vector init, modes, save/load, bad input, the CLI."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cli.classify import classify_app
from cli.main import app
from models.classifier import TextClassifier, build
from quijote.errors import QuijoteError
from storage import warehouse
from storage.paths import run_classifier_dir
from storage.stages import StageOutput
from storage.tables import DEFAULT_LABELLED, Labelled, find_labelled, read_columns
from storage.vectors import read_vectors_file, word2vec_lines
from tasks.classify import (
    ClassifyParams,
    RowAdam,
    Split,
    accuracy,
    classify_task,
    compare_modes,
    fit_and_evaluate,
    macro_f1,
    read_labelled,
    stratified_split,
    tokenize_texts,
    train,
    vocabulary,
)
from tests.data import COMMON, CORPORA, TOPICS, VECTORS, WORDS, make_run, news, news_csv

FAST = ClassifyParams(epochs=10, lr=0.05, batch_size=8, seeds=2)


def tiny_vectors() -> tuple[list[str], np.ndarray]:
    """8-dimensional vectors, one axis per topic; 'datos' and 'una' have none."""
    rng = np.random.default_rng(0)
    words, rows = [], []
    for axis, topic_words in enumerate(TOPICS.values()):
        for word in topic_words:
            if word not in words and word != "datos":
                words.append(word)
                rows.append(np.eye(8)[axis] + rng.normal(0, 0.1, 8))
    for word in COMMON[:-1]:
        words.append(word)
        rows.append(rng.normal(0, 0.1, 8))
    return words, np.array(rows, dtype=np.float32)


def write_csv(path: Path, columns: dict[str, list[str]]) -> Path:
    pacsv.write_csv(pa.table(columns), path)
    return path


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return news_csv(tmp_path / "news.csv")


@pytest.fixture
def vectors_file(tmp_path: Path) -> Path:
    words, matrix = tiny_vectors()
    path = tmp_path / "vectors.txt"
    path.write_text("".join(word2vec_lines(words, matrix)), encoding="utf-8")
    return path


def tokenized(rows_per_topic: int = 12) -> tuple[list[list[str]], list[str]]:
    texts, labels = news(rows_per_topic)
    return tokenize_texts(texts, "news", "texto"), labels


# Split and metrics


def test_stratified_split_keeps_proportions_and_is_seeded() -> None:
    labels = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    train_rows, validation_rows = stratified_split(labels, 0.2, seed=3)
    held = [labels[i] for i in validation_rows]
    assert (held.count("a"), held.count("b"), held.count("c")) == (10, 6, 4)
    assert sorted([*train_rows, *validation_rows]) == list(range(100))
    again = stratified_split(labels, 0.2, seed=3)
    assert all(
        np.array_equal(x, y) for x, y in zip(again, (train_rows, validation_rows), strict=True)
    )
    assert not np.array_equal(stratified_split(labels, 0.2, seed=4)[1], validation_rows)


def test_a_label_with_two_examples_keeps_one_in_training() -> None:
    train_rows, validation_rows = stratified_split(["a"] * 10 + ["b"] * 2, 0.2, seed=1)
    assert len(validation_rows) == 3 and len(train_rows) == 9
    assert 10 in train_rows or 11 in train_rows


@pytest.mark.parametrize(
    ("rows", "share", "held"),
    [(13, 0.2, 3), (12, 0.2, 2), (5, 0.5, 3), (7, 0.3, 2), (8, 0.3, 2)],
)
def test_each_label_holds_out_its_rounded_share(rows: int, share: float, held: int) -> None:
    """round(n * share), not its floor: 13 rows at 0.2 (2.6) hold out 3."""
    labels = ["a"] * rows + ["b"] * rows
    train_rows, validation_rows = stratified_split(labels, share, seed=1)
    assert [labels[i] for i in validation_rows].count("a") == held
    assert len(validation_rows) == 2 * held and len(train_rows) == 2 * (rows - held)


def test_metrics_match_hand_computed_values() -> None:
    true = ["a", "a", "b", "b", "c"]
    predicted = ["a", "b", "b", "b", "a"]
    assert accuracy(true, predicted) == pytest.approx(3 / 5)
    # F1 = 2tp / (2tp + fp + fn): a 2/(2+1+1) = 0.5, b 4/(4+1+0) = 0.8, c 0/(0+0+1) = 0
    assert macro_f1(true, predicted) == pytest.approx((0.5 + 0.8 + 0) / 3)
    assert macro_f1(["a", "b"], ["a", "b"]) == 1.0
    # a predicted label that never occurs counts as a label with F1 0
    assert macro_f1(["a", "a"], ["a", "z"]) == pytest.approx((2 / 3 + 0) / 2)


# The model


def test_words_without_a_vector_get_a_small_random_start() -> None:
    words, matrix = tiny_vectors()
    model = build(["gol", "datos", "ley"], ["x", "y"], "finetune", 8, (words, matrix), seed=5)
    weight = model.module.embedding.weight.detach().numpy()
    assert np.array_equal(weight[0], matrix[words.index("gol")])
    assert np.array_equal(weight[2], matrix[words.index("ley")])
    missing = weight[1]
    assert 0 < np.abs(missing).max() < 0.5 * float(matrix.std())
    again = build(["gol", "datos", "ley"], ["x", "y"], "finetune", 8, (words, matrix), seed=5)
    assert np.array_equal(again.module.embedding.weight.detach().numpy(), weight)


def test_frozen_keeps_the_vectors_and_finetune_moves_them() -> None:
    texts, labels = tokenized()
    vectors = tiny_vectors()
    starts = {}
    for mode in ("frozen", "finetune"):
        model = train(texts, labels, vectors, FAST.with_(mode=mode))
        weight = model.module.embedding.weight.detach().numpy()
        rows = [vectors[0].index(word) for word in model.vocab if word in vectors[0]]
        mine = [model.index[vectors[0][i]] for i in rows]
        starts[mode] = np.array_equal(weight[mine], vectors[1][rows])
    assert starts == {"frozen": True, "finetune": False}


def test_frozen_vocabulary_is_the_words_with_vectors() -> None:
    texts, labels = tokenized()
    words, _ = tiny_vectors()
    frozen = train(texts, labels, tiny_vectors(), FAST.with_(mode="frozen"))
    finetune = train(texts, labels, tiny_vectors(), FAST.with_(mode="finetune"))
    assert set(frozen.vocab) == set(words)
    assert {"datos", "una"} <= set(finetune.vocab) and set(words) <= set(finetune.vocab)


def test_words_in_most_texts_are_left_out() -> None:
    texts = [["de", "gol"], ["de", "ley"], ["de", "ley", "gol"], ["voto"]]
    assert vocabulary(texts, ClassifyParams(), None) == ["gol", "ley", "voto"]
    assert vocabulary(texts, ClassifyParams(max_df=1.0, min_count=2), None) == ["de", "gol", "ley"]
    vectors = (["de", "balón", "gol"], np.zeros((3, 2), dtype=np.float32))
    assert vocabulary(texts, ClassifyParams(), vectors) == ["gol", "ley", "voto", "balón"]
    frozen = ClassifyParams(mode="frozen")
    assert vocabulary(texts, frozen, vectors) == ["gol", "balón"]


def test_training_is_deterministic_and_learns_the_topics() -> None:
    texts, labels = tokenized()
    first, metrics = fit_and_evaluate(texts, labels, tiny_vectors(), FAST)
    second, _ = fit_and_evaluate(texts, labels, tiny_vectors(), FAST)
    for a, b in zip(
        first.module.state_dict().values(), second.module.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    assert metrics["accuracy"] >= 0.8 and metrics["n_validation"] == 6


def test_row_adam_moves_the_weights_as_sparse_adam_does_to_the_bit() -> None:
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(50, 4, generator=generator)
    mine, theirs = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    optimizers = RowAdam([mine], lr=0.05), torch.optim.SparseAdam([theirs], lr=0.05)
    for size in (30, 30, 0, 30, 5):  # rows repeat within a batch; one batch has no row
        ids = torch.randint(0, 50, (size,), generator=generator)
        offsets = torch.tensor([0, size // 3, 2 * size // 3])
        target = torch.randn(3, 4, generator=generator)
        for weight, optimizer in zip((mine, theirs), optimizers, strict=True):
            loss = ((F.embedding_bag(ids, weight, offsets, sparse=True) - target) ** 2).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        assert torch.equal(mine, theirs)
    assert not torch.equal(mine, start)


def test_save_and_load_predict_identically(tmp_path: Path) -> None:
    texts, labels = tokenized()
    model = train(texts, labels, tiny_vectors(), FAST.with_(hidden=4, dropout=0.2))
    unseen = [*tokenize_texts(news(3, seed=9)[0], "unseen", "texto"), ["palabra", "nueva"]]
    before = model.probabilities(unseen)
    model.save(tmp_path / "model")
    loaded = TextClassifier.load(tmp_path / "model")
    assert np.array_equal(loaded.probabilities(unseen), before)
    assert loaded.predict(unseen)[0] == model.predict(unseen)[0]
    assert loaded.labels == model.labels and loaded.vocab == model.vocab
    assert loaded.settings["hidden"] == 4
    model.save(tmp_path / "model")  # replacing a saved model is fine
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(QuijoteError, match="is not a classifier directory"):
        model.save(tmp_path / "mine")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_compare_modes_uses_one_split_and_the_same_seeds() -> None:
    texts, labels = tokenized()
    comparison = compare_modes(texts, labels, tiny_vectors(), FAST)
    rows = comparison.rows
    assert [row["mode"] for row in rows] == ["finetune", "frozen", "random"]
    for row in rows:
        assert (row["seeds"], row["n_train"], row["n_validation"]) == (2, 30, 6)
        assert 0 <= row["accuracy"] <= 1 and row["accuracy_std"] >= 0
    assert [row["mode"] for row in compare_modes(texts, labels, None, FAST).rows] == ["random"]
    # the kept first-seed model is the one fit_and_evaluate trains
    model, metrics = comparison.first["finetune"]
    again, again_metrics = fit_and_evaluate(texts, labels, tiny_vectors(), FAST)
    assert metrics == {k: again_metrics[k] for k in metrics}
    assert torch.equal(model.module.embedding.weight, again.module.embedding.weight)


def test_compare_modes_reports_the_mean_and_sample_std_of_consecutive_seeds() -> None:
    """Seeds seed, seed+1, seed+2 train different models; the std is over them with ddof=1."""
    texts, labels = tokenized()
    params = FAST.with_(mode="random", dim=8, epochs=1, seeds=3, seed=4)
    train_rows, validation_rows = stratified_split(labels, params.validation, params.seed)
    part = [
        ([texts[i] for i in rows], [labels[i] for i in rows])
        for rows in (train_rows, validation_rows)
    ]
    split = Split(part[0], part[1], None)
    each = [split.fit(params.with_(seed=seed), False)[0] for seed in (4, 5, 6)]
    [row] = compare_modes(texts, labels, None, params).rows
    for metric in ("accuracy", "macro_f1"):
        values = np.array([metrics[metric] for metrics in each])
        assert len(set(values)) > 1  # one epoch: the seeds give different models
        assert row[metric] == pytest.approx(values.mean())
        assert row[f"{metric}_std"] == pytest.approx(values.std(ddof=1))
        assert row[f"{metric}_std"] != pytest.approx(values.std(ddof=0))


def test_compare_modes_trains_every_mode_with_each_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every mode gets params.seed .. params.seed + seeds - 1; the row's std has ddof=1."""
    jobs_seen: list[tuple[str, int, bool]] = []
    model = object()

    def fake_fit_each(split: Split, jobs: list[tuple[ClassifyParams, bool]]) -> list:
        """Metrics that tell the seed; the 'model' where it is kept."""
        jobs_seen.extend((params.mode, params.seed, keep) for params, keep in jobs)
        metrics = [{"accuracy": p.seed / 10, "macro_f1": p.seed**2 / 100} for p, _ in jobs]
        return [(m, model if keep else None) for m, (_, keep) in zip(metrics, jobs, strict=True)]

    monkeypatch.setattr("tasks.classify._fit_each", fake_fit_each)
    texts, labels = tokenized()
    comparison = compare_modes(texts, labels, tiny_vectors(), FAST.with_(seeds=3, seed=7))
    for mode in ("finetune", "frozen", "random"):
        mine = sorted((seed, keep) for m, seed, keep in jobs_seen if m == mode)
        assert mine == [(7, True), (8, False), (9, False)]
        assert comparison.first[mode][0] is model
        assert comparison.first[mode][1]["accuracy"] == pytest.approx(0.7)
    for row in comparison.rows:
        assert row["accuracy"] == pytest.approx(0.8)
        assert row["accuracy_std"] == pytest.approx(np.std([0.7, 0.8, 0.9], ddof=1))
        assert row["macro_f1_std"] == pytest.approx(np.std([0.49, 0.64, 0.81], ddof=1))


def test_compare_modes_trains_the_same_models_in_workers_and_in_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    texts, labels = tokenized()
    in_workers = compare_modes(texts, labels, tiny_vectors(), FAST)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    in_turn = compare_modes(texts, labels, tiny_vectors(), FAST)
    assert in_workers.rows == in_turn.rows
    for mode, (model, metrics) in in_workers.first.items():
        again, again_metrics = in_turn.first[mode]
        assert metrics == again_metrics
        weights = model.module.state_dict().values(), again.module.state_dict().values()
        assert all(torch.equal(a, b) for a, b in zip(*weights, strict=True))


def test_classify_stage_compares_saves_the_finetuned_model_and_is_reused(
    dataset: Path, home: Path
) -> None:
    words, matrix = tiny_vectors()
    run = make_run(home / "train", "k", words, matrix)
    trained = StageOutput("train", "k", run.vectors_path.parent)
    table, params = Labelled(dataset, "texto", "tema"), FAST.with_(seeds=1)
    output = classify_task(trained, table, params)
    assert [row["mode"] for row in output.meta["rows"]] == ["finetune", "frozen", "random"]
    assert (output.meta["label_column"], output.meta["labels"]) == ("tema", sorted(TOPICS))
    model = TextClassifier.load(output.file("model"))
    assert model.settings["mode"] == "finetune"
    assert model.settings["accuracy"] == output.meta["validation"]["accuracy"]
    again = classify_task(trained, table, params)
    assert again.reused and again.path == output.path
    assert not classify_task(trained, table, params.with_(epochs=11)).reused


def test_labelled_tables_by_path_or_inside_the_mirror(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert find_labelled(str(dataset), "texto", "tema") == Labelled(dataset, "texto", "tema")
    monkeypatch.setenv("QUIJOTE_MIRROR", str(tmp_path))
    assert find_labelled("news.csv", "id", "tema") == Labelled(dataset, "id", "tema")
    assert find_labelled(DEFAULT_LABELLED, "t", "l") is None  # the default: no classifier
    with pytest.raises(QuijoteError, match=r"no labelled file 'nothing\.csv'"):
        find_labelled("nothing.csv", "t", "l")


def test_a_path_inside_the_mirror_cannot_leave_it(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`../` may move within the mirror, never out of it: a table beside the mirror is not
    found through it (one line), even though `mirror/../news.csv` is a file."""
    mirror = tmp_path / "mirror"
    (mirror / "sub").mkdir(parents=True)
    shutil.copy(dataset, mirror / "inside.csv")
    monkeypatch.setenv("QUIJOTE_MIRROR", str(mirror))
    monkeypatch.chdir(mirror / "sub")  # nor is `../news.csv` a file from here
    found = find_labelled("sub/../inside.csv", "texto", "tema")
    assert found == Labelled(mirror / "inside.csv", "texto", "tema")
    with pytest.raises(QuijoteError, match=r"^no labelled file '\.\./news\.csv' ") as error:
        find_labelled("../news.csv", "texto", "tema")
    assert "\n" not in str(error.value)


def test_an_absolute_path_is_used_as_it_is_never_inside_the_mirror(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An absolute path names its own file: one outside the mirror is found where it is, a
    missing one is an error even when the mirror holds a file of that path below it."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    monkeypatch.setenv("QUIJOTE_MIRROR", str(mirror))
    assert find_labelled(str(dataset), "texto", "tema") == Labelled(dataset, "texto", "tema")
    missing = tmp_path / "gone" / "news.csv"
    rebased = mirror / str(missing).lstrip("/")
    rebased.parent.mkdir(parents=True)
    shutil.copy(dataset, rebased)
    with pytest.raises(QuijoteError, match=r"^no labelled file '/.*gone/news\.csv' "):
        find_labelled(str(missing), "texto", "tema")


@pytest.mark.parametrize(
    ("header", "label"),
    [
        ('"texto","tema"\n', "tema"),  # quoted, as pyarrow writes it
        ("\ufefftexto,tema\r\n", "tema"),  # a byte-order mark, CRLF
        ('"texto","te\nma"\n', "te\nma"),  # a name with a line break
        (None, "tema"),  # Parquet
    ],
)
def test_a_missing_column_fails_when_the_table_is_found(
    tmp_path: Path, header: str | None, label: str
) -> None:
    path = tmp_path / ("news.parquet" if header is None else "news.csv")
    if header is None:
        pq.write_table(pa.table({"texto": ["a"], "tema": ["x"]}), path)
    else:  # only the header is read: a broken body does not matter yet
        path.write_text(header + '"sin cerrar,\n' * 3, encoding="utf-8")
    assert find_labelled(str(path), "texto", label) == Labelled(path, "texto", label)
    with pytest.raises(QuijoteError, match=r"^no column 'Nope' in .*; its columns: 'texto', "):
        find_labelled(str(path), "texto", "Nope")
    with pytest.raises(QuijoteError, match=r"^no column 'Nope' in "):
        find_labelled(str(path), "Nope", label)


@pytest.mark.parametrize(("count", "more"), [(20, ""), (21, " …")])
def test_a_missing_column_names_the_first_20_columns(tmp_path: Path, count: int, more: str) -> None:
    """The message lists at most 20 columns, and says there are more only when there are."""
    path = tmp_path / "wide.csv"
    path.write_text(",".join(f"c{i}" for i in range(count)) + "\n", encoding="utf-8")
    shown = ", ".join(f"'c{i}'" for i in range(20))
    with pytest.raises(QuijoteError) as error:
        find_labelled(str(path), "c0", "Nope")
    assert str(error.value) == f"no column 'Nope' in {path}; its columns: {shown}{more}"


def test_run_checks_the_labelled_columns_before_any_work(dataset: Path, home: Path) -> None:
    args = ["run", "--labelled", str(dataset), "--text-column", "texto", "--label-column", "Nope"]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, QuijoteError)
    assert str(result.exception).startswith(f"no column 'Nope' in {dataset}; its columns: 'id'")
    assert not home.exists()  # nothing downloaded, no Prefect server started


# Reading


def test_quoted_multiline_fields_are_read(tmp_path: Path) -> None:
    path = tmp_path / "quoted.csv"
    path.write_bytes(
        'texto,tema\r\n"Primera línea,\ncon ""comillas""\n\ny párrafo",a\r\nsencillo,b\r\n'.encode()
    )
    data = read_columns(path, ["texto", "tema"])
    assert data["texto"] == ['Primera línea,\ncon "comillas"\n\ny párrafo', "sencillo"]
    assert data["tema"] == ["a", "b"]


@pytest.mark.parametrize("first", ["Text", "Text,", "Text\n", "Texto\r\n"])
def test_a_byte_order_mark_is_skipped_before_the_first_column(tmp_path: Path, first: str) -> None:
    """A CSV saved with a byte-order mark (as Excel saves it) has its first column by name,
    that name quoted: the mark is not the start of its field, so the quote opens a value (a
    quote taken as closing one would leave the rest of the file open)."""
    path = tmp_path / "bom.csv"
    path.write_text(f'\ufeff"{first}",Topic\nhola,a\nadiós,b\n', encoding="utf-8")
    assert read_columns(path, [first, "Topic"]) == {first: ["hola", "adiós"], "Topic": ["a", "b"]}
    assert find_labelled(str(path), first, "Topic") == Labelled(path, first, "Topic")


@pytest.mark.parametrize("bom", ["", "\ufeff"])
def test_an_unclosed_quote_in_a_labelled_table_is_one_line(tmp_path: Path, bom: str) -> None:
    path = tmp_path / "news.csv"
    header = f'{bom}"texto, con coma","te\nma"\n'
    path.write_text(header + 'uno,a\n"dos,b\ntres,c\n', encoding="utf-8")
    with pytest.raises(QuijoteError, match=r"^unclosed quote in .*news\.csv from line 4: "):
        read_columns(path, ["texto, con coma", "te\nma"])
    path.write_text(header + 'uno,a\n"dos",b\n', encoding="utf-8")
    assert read_columns(path, ["te\nma"]) == {"te\nma": ["a", "b"]}


def test_the_labelled_corpus_is_read_with_its_multiline_texts() -> None:
    texts, labels = read_labelled(
        CORPORA / "labelled" / "spanish_fake_news_v1_train.csv", "Text", "Topic"
    )
    assert len(texts) == len(labels) == 676
    assert len(set(labels)) == 9 and labels.count("Politics") == 226
    assert texts[0][:6] == ["rae", "incluirá", "la", "palabra", "lady", "en"]
    assert "villanueva" in texts[0]  # a later line of the same quoted field


def test_parquet_tables_and_integer_labels(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"t": ["uno dos", "tres"], "y": [1, 2]}), path)
    texts, labels = read_labelled(path, "t", "y")
    assert texts == [["uno", "dos"], ["tres"]] and labels == ["1", "2"]


def test_vectors_from_word2vec_text_and_parquet(vectors_file: Path, tmp_path: Path) -> None:
    words, matrix = read_vectors_file(vectors_file)
    assert words == tiny_vectors()[0]
    assert np.allclose(matrix, tiny_vectors()[1], atol=1e-5)
    run = make_run(tmp_path, "r", WORDS, VECTORS)
    words, matrix = read_vectors_file(run.vectors_path)
    assert words == WORDS and np.array_equal(matrix, VECTORS)


# Bad input: one clear line


@pytest.mark.parametrize(
    ("columns", "text_column", "label_column", "message"),
    [
        ({"texto": ["a b", "c d"], "tema": ["x", "x"]}, "text", "tema",
         "no column 'text' in .*; its columns: 'texto', 'tema'"),
        ({"texto": ["a b", "c d"], "tema": ["x", "x"]}, "texto", "topic",
         "no column 'topic'"),
        ({"texto": ["a b", "  ", "e"], "tema": ["x", "x", "y"]}, "texto", "tema",
         r"row 2 of .*bad\.csv has an empty text \(column 'texto'\)"),
        ({"texto": ["a b", "12 !", "e"], "tema": ["x", "x", "y"]}, "texto", "tema",
         "row 2 of .* has no words"),
        ({"texto": ["a b", "c", "e"], "tema": ["x", "", "y"]}, "texto", "tema",
         "row 2 of .* has an empty label"),
        ({"texto": ["a b", "c", "e"], "tema": ["x", "x", "y"]}, "texto", "tema",
         "label 'y' has only 1 example"),
        ({"texto": [], "tema": []}, "texto", "tema", "bad.csv has no rows"),
    ],
)  # fmt: skip
def test_bad_tables_fail_with_one_line(
    tmp_path: Path, columns: dict, text_column: str, label_column: str, message: str
) -> None:
    path = write_csv(tmp_path / "bad.csv", columns)
    with pytest.raises(QuijoteError, match=message) as error:
        texts, labels = read_labelled(path, text_column, label_column)
        fit_and_evaluate(texts, labels, None, FAST)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b'texto,tema\n"sin cerrar,a\n', "unclosed quote in .* from line 2"),
        (b"texto,tema\n\xff\xfe,a\n", "cannot read"),
    ],
)
def test_unreadable_files_fail_with_one_line(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "data.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(QuijoteError, match=message) as error:
        read_labelled(path, "texto", "tema")
    assert "\n" not in str(error.value)


def test_bad_vectors_and_models_fail_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "v.txt").write_text("hola 1 2\n")
    with pytest.raises(QuijoteError, match="not a word2vec text file"):
        read_vectors_file(tmp_path / "v.txt")
    (tmp_path / "v.txt").write_text("1 3\nhola 1 2\n")
    with pytest.raises(QuijoteError, match=r"line 2 of .* is not 'word' and 3 numbers"):
        read_vectors_file(tmp_path / "v.txt")
    with pytest.raises(QuijoteError, match="no such vectors file"):
        read_vectors_file(tmp_path / "none.parquet")
    with pytest.raises(QuijoteError, match="no classifier at"):
        TextClassifier.load(tmp_path / "nothing")
    with pytest.raises(QuijoteError, match="not a classifier directory"):
        TextClassifier.load(tmp_path)
    with pytest.raises(QuijoteError, match="unknown option 'epoch'"):
        ClassifyParams.from_mapping({"epoch": 3})
    with pytest.raises(QuijoteError, match=r"invalid validation=1\.0"):
        ClassifyParams.from_mapping({"validation": "1"})


# The command line


def test_cli_train_then_predict(
    dataset: Path, vectors_file: Path, tmp_path: Path, home: Path
) -> None:
    runner = CliRunner()
    model = tmp_path / "model"
    args = ["--data", str(dataset), "--text-column", "texto", "--label-column", "tema"]
    result = runner.invoke(
        classify_app, ["train", *args, "--vectors", str(vectors_file), "--model", str(model)]
    )
    assert result.exit_code == 0, result.output
    assert "validation (6 rows): accuracy" in result.output and str(model) in result.output
    for out in (tmp_path / "p.csv", tmp_path / "p.parquet"):
        predict = ["predict", "--data", str(dataset), "--text-column", "texto"]
        result = runner.invoke(classify_app, [*predict, "--out", str(out), "--model", str(model)])
        assert result.exit_code == 0, result.output
        table = pq.read_table(out) if out.suffix == ".parquet" else pacsv.read_csv(out)
        assert table.column_names == ["row", "label", "probability"]
        assert table["row"].to_pylist() == list(range(1, 37))
        assert set(table["label"].to_pylist()) <= set(TOPICS)
        assert all(0 < p <= 1 for p in table["probability"].to_pylist())
    # the defaults: no current run -> a clear error; random init -> <data dir>/classifier
    result = runner.invoke(classify_app, ["train", *args])
    assert isinstance(result.exception, QuijoteError) and "no current run" in str(result.exception)
    result = runner.invoke(classify_app, ["train", *args, "--vectors", "none", "--seed", "2"])
    assert result.exit_code == 0 and "random classifier" in result.output
    assert TextClassifier.load(home / "classifier").settings["seed"] == 2


def test_cli_train_defaults_to_the_current_runs_vectors(dataset: Path, home: Path) -> None:
    warehouse.register_run(make_run(home / "stages", "run-1", WORDS, VECTORS))
    warehouse.register_run(make_run(home / "stages", "run-2", WORDS, VECTORS * 2), "kept")
    shutil.rmtree(home / "stages")  # the warehouse's own copy is what is read
    args = ["--data", str(dataset), "--text-column", "texto", "--label-column", "tema"]
    result = CliRunner().invoke(classify_app, ["train", *args, "--freeze"])
    assert result.exit_code == 0, result.output
    model = TextClassifier.load(home / "classifier")
    assert model.settings["vectors"] == "run run-1"
    assert (model.settings["mode"], model.settings["dim"]) == ("frozen", 3)
    weight = model.module.embedding.weight.detach().numpy()
    assert np.array_equal(weight[model.index["rey"]], VECTORS[WORDS.index("rey")])
    result = CliRunner().invoke(classify_app, ["train", *args, "--vectors", "run-2"])
    assert result.exit_code == 0, result.output
    model = TextClassifier.load(home / "classifier")
    assert model.settings["vectors"] == "run run-2"


def test_cli_predict_defaults_to_the_current_runs_classifier(
    dataset: Path, tmp_path: Path, home: Path
) -> None:
    warehouse.register_run(make_run(home / "stages", "run-1", WORDS, VECTORS))
    predict = ["predict", "--data", str(dataset), "--text-column", "texto"]
    result = CliRunner().invoke(classify_app, [*predict, "--out", str(tmp_path / "p.csv")])
    assert "run-1 has no classifier" in str(result.exception)
    texts, labels = tokenized()
    model, _ = fit_and_evaluate(texts, labels, None, FAST.with_(mode="random"))
    model.save(run_classifier_dir("run-1"))
    result = CliRunner().invoke(classify_app, [*predict, "--out", str(tmp_path / "p.csv")])
    assert result.exit_code == 0, result.output
    predicted = pacsv.read_csv(tmp_path / "p.csv")["label"].to_pylist()
    assert predicted == model.predict(texts)[0]


def test_cli_predict_tells_a_missing_model_from_a_run_without_classifier(
    dataset: Path, tmp_path: Path, home: Path
) -> None:
    run = make_run(home / "stages", "run-1", WORDS, VECTORS)
    rows = [{"mode": "finetune", "accuracy": 0.9, "macro_f1": 0.9}]
    warehouse.register_run(replace(run, metrics={**run.metrics, "classifier": rows}))
    predict = ["predict", "--data", str(dataset), "--text-column", "texto"]
    result = CliRunner().invoke(classify_app, [*predict, "--out", str(tmp_path / "p.csv")])
    assert isinstance(result.exception, QuijoteError)
    assert str(result.exception).startswith(
        f"the current run run-1 trained a classifier, but its model folder "
        f"{run_classifier_dir('run-1')} is missing"
    )
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--freeze", "--random-init"], "exclude each other"),
        (["--vectors", "none", "--freeze"], "--freeze needs vectors"),
        (["--vectors", "missing.txt"], "neither a file nor a run id"),
    ],
)
def test_cli_train_rejects_bad_options(dataset: Path, extra: list[str], message: str) -> None:
    args = ["train", "--data", str(dataset), "--text-column", "texto", "--label-column", "tema"]
    result = CliRunner().invoke(classify_app, [*args, *extra])
    assert isinstance(result.exception, QuijoteError) and message in str(result.exception)


def test_cli_predict_rejects_a_missing_model_and_an_unknown_format(
    dataset: Path, tmp_path: Path
) -> None:
    args = ["predict", "--data", str(dataset), "--text-column", "texto"]
    result = CliRunner().invoke(
        classify_app, [*args, "--out", str(tmp_path / "p.csv"), "--model", str(tmp_path / "no")]
    )
    assert isinstance(result.exception, QuijoteError) and "no classifier at" in str(
        result.exception
    )
    result = CliRunner().invoke(classify_app, [*args, "--out", str(tmp_path / "p.json")])
    assert "use a .csv or .parquet file" in str(result.exception)
    assert not (tmp_path / "p.csv").exists()


# Fuzz: whatever the file holds, reading it gives texts and labels or one QuijoteError

CSV_PIECES = st.sampled_from(['"', ",", "\n", "\r\n", "a", "b", "texto", "tema", "ñ", " ", "é"])


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    header=st.sampled_from(["texto,tema\n", "tema,texto\n", '"texto","tema"\n', "texto\n", ""]),
    body=st.lists(CSV_PIECES, max_size=60).map("".join) | st.text(max_size=60),
    raw=st.binary(max_size=40),
)
def test_any_csv_is_read_or_refused_in_one_line(
    tmp_path: Path, header: str, body: str, raw: bytes
) -> None:
    path = tmp_path / "fuzz.csv"
    path.write_bytes((header + body).encode() + raw)
    try:
        texts, labels = read_labelled(path, "texto", "tema")
    except QuijoteError as error:
        assert "\n" not in str(error)
    else:
        assert len(texts) == len(labels) > 0 and all(texts) and all(labels)
