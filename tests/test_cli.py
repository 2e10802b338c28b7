"""The `quijote` command as a user runs it: exit status, one-line errors, nothing half-written."""

import base64
import gzip
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
from gensim.models import KeyedVectors
from typer.testing import CliRunner

from cli.main import app
from models.skipgram import NVIDIA_DRIVER
from quijote.params import Params
from storage import queries, warehouse
from storage.vectors import read_vectors
from tasks.gate import Verdict
from tasks.publish import StageRun
from tests.commands import QUIJOTE_BIN, assert_one_line_error, cli_env, no_leftovers, quijote
from tests.data import (
    OTHER_VECTORS,
    OTHER_WORDS,
    VECTORS,
    WORDS,
    make_run,
    quijote_slice,
    summary_for,
)


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
    (stage,) = [json.loads(p.read_text()) for p in home.glob("stages/train/*/stage.json")]
    assert summary["heldout_loss"] == round(stage["heldout_loss_per_epoch"][-1], 6)
    assert summary["heldout_set"] == stage["heldout_set"] and summary["heldout_loss"] > 0
    vectors = KeyedVectors.load_word2vec_format(str(out))
    assert vectors.vector_size == 16 and "sancho" in vectors.key_to_index


def test_train_path_imports_neither_prefect_nor_torch() -> None:
    """`quijote train` on the CPU loads no orchestrator and no torch (seconds of start-up)."""
    code = (
        "import sys, cli.main, flows.train_stages, storage.vectors;"
        "print(sorted(m for m in ('prefect', 'torch', 'matplotlib') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


def test_version() -> None:
    shown = CliRunner().invoke(app, ["--version"])
    assert shown.exit_code == 0
    assert shown.output == f"quijote-embeddings {version('quijote-embeddings')}\n"


def test_train_help_gives_each_parameters_default() -> None:
    shown = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    defaults = Params()
    for option, name in (("--dim", "dim"), ("--min-count", "min_count"), ("--pairs", "pairs")):
        line = next(line for line in shown.splitlines() if f"{option} " in line)
        assert f"(default: {getattr(defaults, name)})" in line


def test_latin1_corpus_is_decoded(home: Path, slice_file: Path, tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(slice_file.read_text(encoding="utf-8").encode("cp1252"))
    out = tmp_path / "v.txt"
    result = quijote(home, "train", "-c", str(latin1), "--out", str(out), "--epochs", "1")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("is not valid UTF-8") == 1  # the early check reads quietly
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


def test_train_on_a_compressed_json_lines_corpus(
    home: Path, slice_file: Path, tmp_path: Path
) -> None:
    paragraphs = slice_file.read_text(encoding="utf-8").split(". ")
    lines = "".join(json.dumps({"id": i, "texto": p}) + "\n" for i, p in enumerate(paragraphs))
    corpus = tmp_path / "quijote.jsonl.gz"
    corpus.write_bytes(gzip.compress(lines.encode()))
    out = tmp_path / "v.txt"
    args = ["-c", str(corpus), "--text-field", "texto", "--out", str(out), "--epochs", "1"]
    result = quijote(home, "train", *args, "--dim", "16", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["words"] > 19_000
    assert "sancho" in KeyedVectors.load_word2vec_format(str(out)).key_to_index


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ([], "holds records: name their text field with --text-field"),
        (["--text-field", "text"], "no field 'text' in line 1 of"),
        (["--glob", "*.csv"], "no files matching '*.csv' in directory"),
    ],
)
def test_an_unreadable_corpus_is_one_line_before_any_work(
    home: Path, tmp_path: Path, options: list[str], message: str
) -> None:
    corpus = tmp_path / "corpus" / "news" / "a.jsonl"
    corpus.parent.mkdir(parents=True)
    corpus.write_text('{"texto": "Hola mundo."}\n')
    spec = str(tmp_path / "corpus") if "--glob" in options else str(corpus)
    for command in ("train", "run"):
        result = quijote(home, command, "-c", spec, *options)
        assert_one_line_error(result, message)
        assert "Starting temporary server" not in result.stderr
    assert not home.exists()


def test_unreachable_url_explains_the_mirror(home: Path, tmp_path: Path) -> None:
    result = quijote(home, "train", "-c", "http://127.0.0.1:9/libro.txt", "--out", "v.txt")
    assert_one_line_error(result, "mirror")


def test_train_takes_every_parameter_with_set_and_rejects_one_given_twice(
    home: Path, slice_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "v.txt"
    args = ["train", "-c", str(slice_file), "--out", str(out), "--dim", "16", "--epochs", "1"]
    result = quijote(home, *args, "--set", "max_vocab=100", "-s", "lr=0.05")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["vocab"] == 100
    for extra, message in [
        (["--set", "epochs=2"], "epochs is given twice: by --epochs and by --set epochs="),
        (["--set", "lr"], "expected key=value, got 'lr'"),
        (["--set", "learning_rate=0.1"], "unknown option 'learning_rate'"),
    ]:
        assert_one_line_error(quijote(home, *args, *extra), message)


@pytest.mark.parametrize(
    ("flag", "value"), [("--window", "0"), ("--dim", "0"), ("--negative", "0"), ("--sample", "0")]
)
def test_invalid_parameters_are_rejected_before_any_work(
    home: Path, slice_file: Path, flag: str, value: str
) -> None:
    result = quijote(home, "train", "-c", str(slice_file), flag, value)
    assert_one_line_error(result, f"invalid {flag[2:]}=")
    assert not (home / "stages").exists()


def test_an_unusable_output_or_device_is_rejected_before_any_work(
    home: Path, slice_file: Path, tmp_path: Path
) -> None:
    cases = [
        (["--out", str(slice_file / "v.txt")], "slice.txt is not a directory"),
        (["--out", str(tmp_path)], "it is a directory"),
    ]
    if Path("/proc/self").exists():  # a virtual file system takes no new file
        cases.append((["--out", "/proc/v.txt"], "no file can be made in /proc"))
    if not NVIDIA_DRIVER.exists():
        cases.append((["--device", "cuda"], "device=cuda, but there is no CUDA GPU"))
    for args, message in cases:
        assert_one_line_error(quijote(home, "train", "-c", str(slice_file), *args), message)
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
    for command in (["neighbors", "rey"], ["analogy", "rey", "hombre", "mujer"]):
        exact = quijote(published, *command, "-k", "3", "--exact")
        assert (
            exact.returncode == 0 and exact.stdout == quijote(published, *command, "-k", "3").stdout
        )
    assert_one_line_error(quijote(published, "neighbors", "xyzzy"), "'xyzzy' is not in the")
    result = quijote(published, "sql", "SELECT word, count FROM vocab ORDER BY count DESC LIMIT 2")
    assert result.returncode == 0 and "rey" in result.stdout


def test_promote_makes_any_finished_run_current(published: Path) -> None:
    rejected = make_run(published / "stages", "run-2", OTHER_WORDS, OTHER_VECTORS)
    warehouse.register_run(rejected, status="rejected")
    result = quijote(published, "promote", "run-2")
    assert result.returncode == 0 and "run run-2 is now current" in result.stdout
    current = warehouse.current_run()
    assert current.run_id == "run-2" and current.promoted_at is not None
    assert "molino" in quijote(published, "neighbors", "sancho", "-k", "3").stdout
    assert_one_line_error(quijote(published, "promote", "run-9"), "no run 'run-9'")
    result = quijote(published, "prune", "--keep", "0")
    assert result.returncode == 0 and "pruned the vectors of 1 run(s): run-1" in result.stdout
    assert_one_line_error(quijote(published, "promote", "run-1"), "has no vectors")
    assert "molino" in quijote(published, "neighbors", "sancho", "-k", "3").stdout


def test_sql_is_read_only(published: Path) -> None:
    assert_one_line_error(quijote(published, "sql", "DROP TABLE runs"), "read-only")
    result = quijote(published, "sql", "SELECT count(*) AS n FROM runs")
    assert result.returncode == 0 and "1" in result.stdout


LONG_QUERY = "SELECT sum(range) FROM range(100000000000)"  # a minute or more on two cores


def peak_rss_mb(home: Path, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    """Run `quijote` from a fresh parent that reports its only child's peak memory."""
    measure = (
        "import resource, subprocess, sys; "
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
        "sys.stdout.write(r.stdout); sys.stderr.write(r.stderr); sys.exit(r.returncode)"
    )
    result = subprocess.run(
        [sys.executable, "-c", measure, str(QUIJOTE_BIN), *args],
        capture_output=True, text=True, env=cli_env(home), timeout=120,
    )  # fmt: skip
    peak, _, stdout = result.stdout.partition("\n")
    return subprocess.CompletedProcess(result.args, result.returncode, stdout, result.stderr), int(
        peak
    ) / 1024


def table_rows(stdout: str) -> list[str]:
    return [line.strip("│ ").split()[0] for line in stdout.splitlines() if line.startswith("│")]


def test_sql_shows_the_first_and_last_rows_of_a_large_result_in_bounded_memory(
    published: Path,
) -> None:
    query = "SELECT range AS n, repeat('x', 100) AS s FROM range(3000000)"  # 3M rows, ~400 MB
    result, peak_mb = peak_rss_mb(published, "sql", query)
    assert result.returncode == 0, result.stderr
    rows = table_rows(result.stdout)
    assert rows[:2] == ["0", "1"] and rows[19:22] == ["19", "…", "2999980"]
    assert rows[-1] == "2999999" and len(rows) == 41
    assert result.stdout.rstrip().endswith("3,000,000 rows (40 shown)")
    assert peak_mb < 400, peak_mb  # the whole result as Python rows: over 1 GB
    few = quijote(published, "sql", "--max-rows", "3", "SELECT * FROM range(4)")
    assert table_rows(few.stdout) == ["0", "1", "…", "3"] and "4 rows (3 shown)" in few.stdout
    assert table_rows(quijote(published, "sql", "SELECT * FROM range(3)").stdout) == list("012")


def test_sql_counts_for_a_bounded_time(published: Path, monkeypatch) -> None:
    from storage import queries

    monkeypatch.setattr(queries, "COUNT_BUDGET_S", 0.5)
    preview = queries.preview("SELECT * FROM range(100000000000)", max_rows=10)
    assert not preview.counted and preview.rows > 10 and not preview.tail
    assert [row[0] for row in preview.head] == list(range(10))


def test_sql_writes_every_row_as_csv_json_or_parquet(published: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    query = "SELECT word, count, vector FROM vocab JOIN vectors USING (word) ORDER BY count DESC"
    for fmt in ("csv", "json", "parquet"):
        target = tmp_path / f"out.{fmt}"
        result = quijote(published, "sql", query, "--format", fmt, "--out", str(target))
        assert result.returncode == 0 and f"6 rows written to {target}" in result.stderr
        assert result.stdout == "" and oct(target.stat().st_mode & 0o777) != "0o600"
    lines = (tmp_path / "out.csv").read_text(encoding="utf-8").splitlines()
    assert lines[:2] == ["word,count,vector", 'rey,6,"[1.0, 1.0, 0.0]"'] and len(lines) == 7
    rows = [json.loads(line) for line in (tmp_path / "out.json").read_text().splitlines()]
    assert rows[-1]["word"] == "niña" and rows[-1]["vector"] == pytest.approx([0.1, 0.2, 1.0])
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column("word").to_pylist() == WORDS and table.num_rows == 6
    piped = quijote(published, "sql", "SELECT 1 AS a", "--format", "csv", "--out", "/dev/stdout")
    assert piped.stdout == "a\n1\n"
    assert_one_line_error(quijote(published, "sql", "SELECT 1", "--format", "csv"), "--out FILE")
    bad = quijote(published, "sql", "SELECT 1", "--format", "xml", "--out", str(tmp_path / "x"))
    assert_one_line_error(bad, "unknown format 'xml'")
    described = tmp_path / "describe.csv"
    result = quijote(published, "sql", "DESCRIBE vocab", "--format", "csv", "--out", str(described))
    assert result.returncode == 0 and described.read_text().startswith("column_name,column_type")
    result = quijote(published, "sql", "PRAGMA version", "--format", "json", "--out", "/dev/stdout")
    assert result.returncode == 0 and "library_version" in result.stdout
    explained = quijote(published, "sql", "EXPLAIN SELECT 1", "--format", "csv", "--out", "e.csv")
    assert_one_line_error(explained, "--format writes the rows of a query")


def test_sql_timeout_stops_a_long_query_and_leaves_no_file(published: Path, tmp_path: Path) -> None:
    target = tmp_path / "out" / "sum.csv"
    result = quijote(
        published, "sql", LONG_QUERY, "--timeout", "1", "--format", "csv", "--out", str(target),
        timeout=30,
    )  # fmt: skip
    assert_one_line_error(result, "query stopped after 1 s (--timeout)")
    assert not list(target.parent.iterdir())
    assert_one_line_error(quijote(published, "sql", LONG_QUERY, "--timeout", "0.5"), "after 0.5 s")


def test_ctrl_c_stops_a_long_query_with_one_line(published: Path) -> None:
    process = subprocess.Popen(
        [str(QUIJOTE_BIN), "sql", LONG_QUERY],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(published),
    )  # fmt: skip
    try:
        cpu = Path(f"/proc/{process.pid}/stat")
        while sum(int(field) for field in cpu.read_text().split()[13:15]) < 150:  # 1.5 s of CPU:
            assert process.poll() is None  # the query is running, past the imports
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 130 and stderr == "interrupted\n" and stdout == ""


# `quijote sql` started as its console script does, with Ctrl-C arriving while typer loads.
CTRL_C_WHILE_LOADING = """
import importlib.abc, os, signal, sys

class CtrlC(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "typer":
            os.kill(os.getpid(), signal.SIGINT)

sys.meta_path.insert(0, CtrlC())
sys.argv = ["quijote", "sql", "SELECT 1"]
from cli import main
main()
"""


def test_ctrl_c_while_the_command_loads_is_one_line(published: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CTRL_C_WHILE_LOADING],
        capture_output=True, text=True, env=cli_env(published), timeout=60,
    )  # fmt: skip
    assert done.returncode == 130 and done.stderr == "interrupted\n" and done.stdout == ""


def test_ctrl_c_is_a_keyboard_interrupt_again_once_the_command_runs(published: Path) -> None:
    import cli

    signal.signal(signal.SIGINT, cli._interrupted_while_loading)  # as the entry point sets it
    try:
        assert CliRunner().invoke(app, ["sql", "SELECT 1"]).exit_code == 0
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def test_ctrl_c_while_a_query_waits_is_a_keyboard_interrupt_once_the_query_stopped(
    published: Path,
) -> None:
    # Ctrl-C only marks the wait: a KeyboardInterrupt raised inside the future's lock would
    # leave the query's thread waiting on it forever.
    handler = signal.getsignal(signal.SIGINT)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        queries.preview(LONG_QUERY)
    assert time.monotonic() - started < 10
    assert signal.getsignal(signal.SIGINT) is handler


def test_the_run_summary_keeps_each_item_on_one_line_in_a_file(home: Path) -> None:
    reason = "first run: nothing to compare with, " + "and a long reason " * 8
    stages = {f"stage{i}": StageRun(key=f"k{i}", reused=False, seconds=1.5) for i in range(12)}
    summary = summary_for(
        Path("/tmp/run-1"),
        Path("/tmp/run-1/vectors.parquet"),
        stages,
        sentences=10,
        vocab_size=100,
        pairs=5000,
        loss_per_epoch=[2.5, 2.4],
        gate=Verdict(True, [reason]),
    )
    script = "import base64, pickle, sys\nfrom cli.main import _print_summary as show\n"
    script += "show(pickle.loads(base64.b64decode(sys.argv[1])))"
    result = subprocess.run(
        [sys.executable, "-c", script, base64.b64encode(pickle.dumps(summary)).decode()],
        capture_output=True, text=True, env=cli_env(home), timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"quality gate passed: the run is current ({reason})" in lines
    assert any(line.startswith("stages: stage0 1.5s") and "stage11 1.5s" in line for line in lines)


def test_export_formats(published: Path, tmp_path: Path) -> None:
    for stage_file in (published / "stages").rglob("*.parquet"):
        stage_file.unlink()  # the warehouse holds the run's vectors: a lone copy of it exports
    text = tmp_path / "w2v.txt"
    result = quijote(published, "export", "--format", "word2vec", "--out", str(text))
    assert result.returncode == 0 and f"wrote {text} (word2vec, run run-1)" in result.stdout
    assert KeyedVectors.load_word2vec_format(str(text)).index_to_key == WORDS
    projector = tmp_path / "projector"
    assert (
        quijote(published, "export", "--format", "projector", "--out", str(projector)).returncode
        == 0
    )
    assert (projector / "metadata.tsv").read_text().split() == WORDS
    assert len((projector / "vectors.tsv").read_text().splitlines()) == len(WORDS)
    parquet = tmp_path / "v.parquet"
    assert (
        quijote(published, "export", "--format", "parquet", "--out", str(parquet)).returncode == 0
    )
    words, vectors = read_vectors(parquet)
    assert words == WORDS and np.array_equal(vectors, VECTORS)
    assert_one_line_error(quijote(published, "export", "--format", "pdf"), "unknown format")
    unusable = quijote(published, "export", "--format", "projector", "--out", str(text))
    assert_one_line_error(unusable, "w2v.txt is not a directory")


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
    from cli.main import _prepare_prefect

    monkeypatch.setenv("QUIJOTE_HOME", str(tmp_path / "a" / "b"))
    for name in ("PREFECT_HOME", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    _prepare_prefect()
    assert (tmp_path / "a" / "b" / "prefect").is_dir()
    assert float(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]) >= 60


def test_queries_show_k_words_for_any_case_of_the_word(published: Path) -> None:
    result = quijote(published, "neighbors", "REY", "-k", "2")
    assert result.returncode == 0, result.stderr
    assert len(table_rows(result.stdout)) == 2 and "neighbours of REY" in result.stdout
    result = quijote(published, "analogy", "Rey", "Hombre", "Mujer", "-k", "1")
    assert result.returncode == 0, result.stderr
    assert table_rows(result.stdout) == ["reina"]


def test_exact_reaches_the_search(published: Path, monkeypatch) -> None:
    """A few words are always compared with every one: --exact shows only on 50,000 words."""
    asked = []
    monkeypatch.setattr(warehouse, "neighbors", lambda *a, exact: asked.append(exact) or [])
    monkeypatch.setattr(warehouse, "analogy", lambda *a, exact: asked.append(exact) or [])
    for command in (["neighbors", "rey"], ["analogy", "rey", "hombre", "mujer"]):
        for extra in ([], ["--exact"]):
            assert CliRunner().invoke(app, [*command, *extra]).exit_code == 0
    assert asked == [False, True, False, True]


def test_sql_out_needs_a_format(published: Path, tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    result = quijote(published, "sql", "SELECT 1", "--out", str(target))
    assert_one_line_error(result, "--out needs --format csv, json or parquet")
    assert result.stdout == "" and not target.exists()


def test_train_writes_parquet_and_rejects_an_unknown_format(
    home: Path, slice_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "v.parquet"
    args = ["train", "-c", str(slice_file), "--dim", "16", "--epochs", "1", "--device", "cpu"]
    result = quijote(home, *args, "--format", "parquet", "--out", str(out))
    assert result.returncode == 0, result.stderr
    words, vectors = read_vectors(out)
    assert "sancho" in words and vectors.shape == (len(words), 16)
    shutil.rmtree(home / "stages")
    bad = quijote(home, *args, "--format", "txt", "--out", str(tmp_path / "v.txt"))
    assert_one_line_error(bad, "unknown format 'txt': use word2vec or parquet")
    assert not (tmp_path / "v.txt").exists() and not (home / "stages").exists()


def test_evaluate_takes_restrict_vocab_and_one_source_of_vectors(
    published: Path, tmp_path: Path
) -> None:
    sim = tmp_path / "s.txt"
    sim.write_text("rey reina 3\nhombre mujer 2\nrey niño 1\n", encoding="utf-8")
    args = ["evaluate", "--similarity", str(sim), "--json"]
    found = {
        limit: json.loads(quijote(published, *args, "--restrict-vocab", limit).stdout)["scores"]
        for limit in ("0", "2")
    }
    assert [row["found"] for row in found["0"]] == [3] and [r["found"] for r in found["2"]] == [1]
    model = tmp_path / "v.parquet"
    model.write_bytes(warehouse.current_run().vectors_path.read_bytes())
    both = quijote(published, *args, "--run", "run-1", "--vectors", str(model))
    assert_one_line_error(both, "--run and --vectors exclude each other")


def test_run_hands_its_options_to_the_flow(home: Path, monkeypatch) -> None:
    """`quijote run`'s options as the flow gets them (the flow itself stubbed: no Prefect)."""
    import cli.main
    import flows.quijote_embeddings as flow

    class Called(Exception):
        pass

    calls = []

    def pipeline(*args):
        calls.append(args)
        raise Called

    for name in ("_prepare_prefect", "_quiet_console", "_start_prefect"):
        monkeypatch.setattr(cli.main, name, lambda: None)
    monkeypatch.setattr(flow, "quijote_embeddings", pipeline)
    options = ["--labelled", "None", "--eval", "NONE", "--promote", "--keep-runs", "2"]
    result = CliRunner().invoke(app, ["run", "-s", "dim=8", *options])
    assert isinstance(result.exception, Called), result.output
    corpus, settings, table, _, _, _, benchmarks, promote, _, _, keep_runs = calls[0]
    assert (corpus, settings, table, benchmarks) == (flow.DEFAULT_CORPUS, {"dim": "8"}, None, ())
    assert promote is True and keep_runs == 2


def test_the_run_summary_of_a_promoted_run_tells_how_to_query_it(home: Path, capsys) -> None:
    from cli.main import _print_summary

    summary = summary_for(
        Path("/tmp/run-1"),
        Path("/tmp/run-1/vectors.parquet"),
        {},
        heldout_loss=2.25,
        promoted=True,
        gate=Verdict(False, ["loss got worse"]),
    )
    _print_summary(summary)
    lines = capsys.readouterr().out.splitlines()
    assert "held-out loss: 2.2500" in lines
    assert "quality gate failed, and the run was made current by hand (loss got worse)" in lines
    assert any(line.startswith("try: quijote sql") for line in lines)


def test_serve_reports_stops_and_fails_in_one_line(home: Path, capsys) -> None:
    import socket

    from cli import serve

    assert serve.main(["status"]) == 1
    assert capsys.readouterr().out == "prefect server not running\nworker not running\n"
    layout = serve.Layout(home)
    layout.dir.mkdir(parents=True)
    other = subprocess.Popen(["sleep", "30"])  # a pid file naming some other process
    try:
        layout.server_pid.write_text(f"{other.pid}\n")
        assert serve.main(["stop"]) == 0
    finally:
        other.kill()
        other.wait()
    assert f"prefect server not running (removed stale {layout.server_pid})" in (
        capsys.readouterr().out
    )
    assert not layout.server_pid.exists()
    with socket.socket() as taken:
        taken.bind((serve.HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert serve.main(["start", "--port", str(port)]) == 1
    assert capsys.readouterr().err == (
        f"error: port {port} on {serve.HOST} is in use; choose another with PORT=\n"
    )
