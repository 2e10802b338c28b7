"""The `quijote` command as a user runs it: exit status, one-line errors, nothing half-written."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from gensim.models import KeyedVectors

from storage import warehouse
from tests.data import OTHER_VECTORS, OTHER_WORDS, VECTORS, WORDS, make_run, quijote_slice

QUIJOTE_BIN = Path(sys.executable).parent / "quijote"


def cli_env(home: Path) -> dict[str, str]:
    """The environment of a `quijote` process on the data directory `home`."""
    return {**os.environ, "QUIJOTE_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def quijote(home: Path, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(QUIJOTE_BIN), *args],
        capture_output=True,
        text=True,
        env=cli_env(home),
        timeout=timeout,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, message: str) -> None:
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2, result.stderr
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def no_leftovers(home: Path) -> bool:
    """No temporary file or directory left anywhere in the data directory."""
    return not [p for p in home.rglob("*") if ".tmp" in p.name]


@pytest.fixture
def slice_file(tmp_path: Path) -> Path:
    path = tmp_path / "slice.txt"
    path.write_text(quijote_slice(20_000), encoding="utf-8")
    return path


def test_train_prints_one_json_line_and_writes_word2vec(
    home: Path, slice_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "v.txt"
    args = ["train", "--corpus", str(slice_file), "--out", str(out), "--dim", "16"]
    result = quijote(home, *args, "--epochs", "1", "--min-count", "3", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["device"] == "cpu" and summary["words"] > 19_000
    assert summary["words_per_s"] > 0 and summary["seconds"] > 0
    vectors = KeyedVectors.load_word2vec_format(str(out))
    assert vectors.vector_size == 16 and "sancho" in vectors.key_to_index


def test_train_path_imports_neither_prefect_nor_torch() -> None:
    """`quijote train` on the CPU loads no orchestrator and no torch (seconds of start-up)."""
    code = (
        "import sys, quijote.cli, flows.train_stages, storage.vectors;"
        "print(sorted(m for m in ('prefect', 'torch', 'matplotlib') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


def test_latin1_corpus_is_decoded(home: Path, slice_file: Path, tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(slice_file.read_text(encoding="utf-8").encode("cp1252"))
    out = tmp_path / "v.txt"
    result = quijote(home, "train", "-c", str(latin1), "--out", str(out), "--epochs", "1")
    assert result.returncode == 0, result.stderr
    assert "señor" in KeyedVectors.load_word2vec_format(str(out)).key_to_index


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file or directory"),
        (b"", "is empty"),
        (b"\x00\x01\x02binary\x00" * 100, "binary file"),
        ("Hola mundo. Adiós mundo.".encode(), "vocabulary is empty"),
    ],
)
def test_bad_corpus_is_one_line_and_writes_nothing(
    home: Path, tmp_path: Path, content: bytes | None, message: str
) -> None:
    corpus = tmp_path / "corpus.txt"
    if content is not None:
        corpus.write_bytes(content)
    out = tmp_path / "v.txt"
    assert_one_line_error(quijote(home, "train", "-c", str(corpus), "--out", str(out)), message)
    assert not out.exists() and no_leftovers(home)


def test_unreachable_url_explains_the_mirror(home: Path, tmp_path: Path) -> None:
    result = quijote(home, "train", "-c", "http://127.0.0.1:9/libro.txt", "--out", "v.txt")
    assert_one_line_error(result, "mirror")


@pytest.mark.parametrize(
    ("flag", "value"), [("--window", "0"), ("--dim", "0"), ("--negative", "0"), ("--sample", "0")]
)
def test_invalid_parameters_are_rejected_before_any_work(
    home: Path, slice_file: Path, flag: str, value: str
) -> None:
    result = quijote(home, "train", "-c", str(slice_file), flag, value)
    assert_one_line_error(result, f"invalid {flag[2:]}=")
    assert not (home / "stages").exists()


def test_run_rejects_bad_settings_before_starting_prefect(home: Path) -> None:
    result = quijote(home, "run", "--set", "window=0")
    assert_one_line_error(result, "invalid window=0")
    assert "Starting temporary server" not in result.stderr
    assert_one_line_error(quijote(home, "run", "--set", "colour=red"), "unknown option 'colour'")
    bad_classifier = quijote(home, "run", "--classify-set", "epoch=3")
    assert_one_line_error(bad_classifier, "unknown option 'epoch'")
    missing = quijote(home, "run", "--labelled", "missing.csv")
    assert_one_line_error(missing, "no labelled file 'missing.csv'")
    no_benchmark = quijote(home, "run", "--eval", "missing.txt")
    assert_one_line_error(no_benchmark, "no such benchmark file: missing.txt")
    assert "Starting temporary server" not in no_benchmark.stderr
    assert not (home / "stages").exists()


def test_run_with_a_missing_corpus_fails_in_one_line_before_starting_prefect(home: Path) -> None:
    for spec, message in (("missing.txt", "no such file"), ("qujote", "unrecognised corpus")):
        result = quijote(home, "run", "-c", spec)
        assert_one_line_error(result, message)
        assert "Starting temporary server" not in result.stderr
    assert not home.exists()


@pytest.fixture
def published(home: Path) -> Path:
    warehouse.register_run(make_run(home / "stages", "run-1", WORDS, VECTORS))
    return home


def test_queries_on_the_current_run(published: Path, tmp_path: Path) -> None:
    result = quijote(published, "neighbors", "rey", "-k", "2")
    assert result.returncode == 0 and "neighbours of rey" in result.stdout
    result = quijote(published, "analogy", "rey", "hombre", "mujer", "-k", "1")
    assert result.returncode == 0 and "reina" in result.stdout
    assert_one_line_error(quijote(published, "neighbors", "xyzzy"), "'xyzzy' is not in the")
    result = quijote(published, "sql", "SELECT word, count FROM vocab ORDER BY count DESC LIMIT 2")
    assert result.returncode == 0 and "rey" in result.stdout


def test_promote_makes_any_finished_run_current(published: Path) -> None:
    rejected = make_run(published / "stages", "run-2", OTHER_WORDS, OTHER_VECTORS)
    warehouse.register_run(rejected, status="rejected")
    result = quijote(published, "promote", "run-2")
    assert result.returncode == 0 and "run run-2 is now current" in result.stdout
    current = warehouse.current_run()
    assert current["run_id"] == "run-2" and current["promoted_at"] is not None
    assert "molino" in quijote(published, "neighbors", "sancho", "-k", "3").stdout
    assert_one_line_error(quijote(published, "promote", "run-9"), "no run 'run-9'")


def test_sql_is_read_only(published: Path) -> None:
    assert_one_line_error(quijote(published, "sql", "DROP TABLE runs"), "read-only")
    result = quijote(published, "sql", "SELECT count(*) AS n FROM runs")
    assert result.returncode == 0 and "1" in result.stdout


def test_export_formats(published: Path, tmp_path: Path) -> None:
    text = tmp_path / "w2v.txt"
    assert quijote(published, "export", "--format", "word2vec", "--out", str(text)).returncode == 0
    assert KeyedVectors.load_word2vec_format(str(text)).index_to_key == WORDS
    projector = tmp_path / "projector"
    assert (
        quijote(published, "export", "--format", "projector", "--out", str(projector)).returncode
        == 0
    )
    assert (projector / "metadata.tsv").read_text().split() == WORDS
    assert len((projector / "vectors.tsv").read_text().splitlines()) == len(WORDS)
    assert_one_line_error(quijote(published, "export", "--format", "pdf"), "unknown format")


def test_classify_bad_input_is_one_line_and_exit_status_2(home: Path, tmp_path: Path) -> None:
    args = ["--text-column", "texto", "--label-column", "tema", "--vectors", "none"]
    missing = quijote(home, "classify", "train", "--data", str(tmp_path / "no.csv"), *args)
    assert_one_line_error(missing, "no such file")
    once = tmp_path / "once.csv"
    once.write_text("texto,tema\nuno dos,a\ntres cuatro,a\ncinco,b\n", encoding="utf-8")
    result = quijote(home, "classify", "train", "--data", str(once), *args)
    assert_one_line_error(result, "label 'b' has only 1 example")
    assert not (home / "classifier").exists()


def test_prefect_gets_its_home_and_time_for_a_first_start(tmp_path: Path, monkeypatch) -> None:
    """A data directory whose parents do not exist yet, and a new Prefect database to migrate
    (about 20 s on two cores, Prefect's default timeout): the first `quijote run` works."""
    from quijote.cli import _prepare_prefect

    monkeypatch.setenv("QUIJOTE_HOME", str(tmp_path / "a" / "b"))
    for name in ("PREFECT_HOME", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    _prepare_prefect()
    assert (tmp_path / "a" / "b" / "prefect").is_dir()
    assert float(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]) >= 60
