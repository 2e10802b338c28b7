"""Faults and hostile input (#6): each is refused in one clear line or is harmless, and nothing
already made is damaged."""

from __future__ import annotations

import errno
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import storage.files
import storage.stages
from flows.train_stages import train_stages
from quijote.errors import QuijoteError
from quijote.params import Params
from storage import queries, warehouse
from storage.files import atomic_path
from storage.stages import StageOutput, shards
from storage.tables import find_labelled
from tasks.gate import gate_task
from tasks.tokenize import BATCH_TOKENS, MAX_SENTENCE_WORDS, WORD
from tests.commands import QUIJOTE_BIN, assert_one_line_error, cli_env, no_leftovers, quijote
from tests.data import OTHER_VECTORS, OTHER_WORDS, VECTORS, WORDS, make_run, quijote_slice

REPO = Path(__file__).parents[1]
TINY = {"dim": 8, "epochs": 2, "min_count": 2, "threads": 1}


@pytest.fixture
def published(home: Path) -> Path:
    """A data directory whose warehouse has a current run (of WORDS, VECTORS)."""
    warehouse.register_run(make_run(home / "stages", "run-1", WORDS, VECTORS))
    return home


def runs_table() -> list[tuple]:
    return queries.query("SELECT run_id, status FROM runs ORDER BY run_id")[1]


def row_group_sizes(path: Path, column: str) -> list[int]:
    """Values of `column` (list elements for a list column) in each row group of `path`."""
    file = pq.ParquetFile(path)
    groups = (file.read_row_group(i, columns=[column])[column] for i in range(file.num_row_groups))
    return [
        len(group.combine_chunks().flatten()) if pa.types.is_list(group.type) else len(group)
        for group in groups
    ]


# --- SQL through the macros' arguments ------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT * FROM neighbors((SELECT content FROM read_text('/etc/passwd')), 3)",
         "Permission Error"),
        ("SELECT * FROM neighbors('rey', (SELECT count(*) FROM read_csv('/etc/passwd')))",
         "Permission Error"),
        ("SELECT * FROM analogy('a', 'b', (SELECT content FROM read_blob('{home}/../x')), 1)",
         "Permission Error"),
        ("SELECT * FROM run_neighbors((SELECT file FROM glob('/etc/*') LIMIT 1), 'rey', 3)",
         "Permission Error"),
        ("SELECT * FROM neighbors('rey', -1)", "LIMIT/OFFSET cannot be negative"),
        ("SELECT * FROM neighbors('rey', 'diez')", "Conversion Error"),
        ("PRAGMA profiling_output = '{home}/../profile.json'", "SET statements are not allowed"),
        ("EXPORT DATABASE '{home}/../exported'", "EXPORT statements are not allowed"),
    ],
)  # fmt: skip
def test_macro_arguments_cannot_read_outside_or_write(published: Path, sql: str, message: str):
    with pytest.raises(QuijoteError, match=re.escape(message)) as error:
        queries.query(sql.format(home=published))
    assert "\n" not in str(error.value)
    assert runs_table() == [("run-1", "current")]
    assert sorted(p.name for p in published.parent.iterdir()) == ["data"]


def test_words_are_parameters_never_sql(published: Path):
    for word in ["rey'); DROP TABLE runs; --", "rey' OR '1'='1", "%", "rey\nreina"]:
        with pytest.raises(QuijoteError, match="is not in the vocabulary"):
            warehouse.neighbors(word)
        with pytest.raises(QuijoteError, match="is not in the vocabulary"):
            warehouse.analogy("rey", word, "mujer")
    assert queries.query("SELECT * FROM neighbors('rey''); DROP TABLE runs; --', 3)")[1] == []
    result = quijote(published, "neighbors", "rey'); DROP TABLE runs; --")
    assert_one_line_error(result, "is not in the vocabulary of the current run")
    assert runs_table() == [("run-1", "current")]


# --- names that try to leave a directory ----------------------------------------------------


def test_a_labelled_name_cannot_leave_the_mirror(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a" / "mirror").mkdir(parents=True)
    (tmp_path / "b" / "c").mkdir(parents=True)
    (tmp_path / "a" / "secret.csv").write_text("texto,tema\nhola,a\n")
    monkeypatch.setenv("QUIJOTE_MIRROR", str(tmp_path / "a" / "mirror"))
    monkeypatch.chdir(tmp_path / "b" / "c")  # ../secret.csv: no file from here, one in the mirror
    with pytest.raises(QuijoteError, match=r"^no labelled file '\.\./secret\.csv'"):
        find_labelled("../secret.csv", "texto", "tema")
    found = find_labelled("../../a/secret.csv", "texto", "tema")  # a path: the user's choice
    assert found.path == tmp_path / "a" / "secret.csv"


def test_a_corpus_name_with_dot_dot_is_one_line_and_writes_nothing(home: Path, tmp_path: Path):
    out = tmp_path / "v.txt"
    result = quijote(home, "train", "-c", "../../quijote/../etc/passwd.txt", "--out", str(out))
    assert_one_line_error(result, "no such file or directory: ../../quijote/../etc/passwd.txt")
    assert not out.exists() and not (home / "stages").exists()


# --- corpora: one huge line, no words -------------------------------------------------------


def test_a_huge_line_goes_through_the_stages_in_bounded_batches(home: Path, tmp_path: Path):
    words = WORD.findall(quijote_slice(5_000).lower()) * 260
    corpus = tmp_path / "line.txt"  # 1.3 M words (7 MB) on one line, no full stop
    corpus.write_text(" ".join(words), encoding="utf-8")
    params = Params.from_mapping({**TINY, "epochs": 1})
    stages = train_stages([str(corpus)], params, orchestrated=False)
    bound = BATCH_TOKENS + MAX_SENTENCE_WORDS
    sentences = row_group_sizes(stages.tokenize[0].file("sentences.parquet"), "tokens")
    assert sum(sentences) == len(words) and len(sentences) == 2 and max(sentences) <= bound
    lengths = pq.read_table(stages.tokenize[0].file("sentences.parquet"))["tokens"]
    assert max(len(tokens) for tokens in lengths.to_pylist()) == MAX_SENTENCE_WORDS
    kept = row_group_sizes(stages.subsample[0].file("epoch-000.parquet"), "ids")
    pairs = row_group_sizes(stages.pairs[0].file("epoch-000.parquet"), "center")
    assert len(kept) >= 2 and max(kept) <= bound
    assert max(pairs) <= 2 * params.window * bound
    assert stages.train.meta["pairs"] == sum(pairs)


def test_a_file_of_only_punctuation_is_one_line(home: Path, tmp_path: Path):
    corpus = tmp_path / "signos.txt"
    corpus.write_text("¡¿…?! «—» ;:, (1605) [½] §§ ...\n" * 1000, encoding="utf-8")
    out = tmp_path / "v.txt"
    result = quijote(home, "train", "-c", str(corpus), "--out", str(out))
    assert_one_line_error(result, "signos.txt has no words: it is empty or holds only punctuation")
    assert not out.exists() and no_leftovers(home)
    assert not [p for p in (home / "stages").rglob("*") if p.is_file()]


# --- damaged Parquet in stage and run directories -------------------------------------------


def test_damaged_stage_files_are_found_and_rebuilt(home: Path, tmp_path: Path):
    corpus = tmp_path / "slice.txt"
    corpus.write_text(quijote_slice(5_000), encoding="utf-8")
    params = Params.from_mapping(TINY)
    first = train_stages([str(corpus)], params, orchestrated=False)
    pairs = first.pairs[0].file("epoch-001.parquet")
    expected = pq.read_table(pairs)
    pairs.write_bytes(pairs.read_bytes()[: pairs.stat().st_size // 2])  # truncated
    vocab = first.vocab.file("vocab.parquet")
    pq.write_table(pa.table({"word": ["foreign"]}), vocab)  # a foreign Parquet file
    (first.download.path / "stage.json").write_text('{"stage": "downlo')  # half a JSON
    (first.negatives.file("noise.parquet")).unlink()

    again = train_stages([str(corpus)], params, orchestrated=False)
    reused = {name for name, output in again.items() if all(p.reused for p in shards(output))}
    assert reused == {"tokenize", "subsample", "train"}  # keys unchanged: only the damaged rerun
    assert pq.read_table(pairs).equals(expected)
    assert pq.read_table(vocab).num_rows == first.vocab.meta["words"]
    assert no_leftovers(home) and not list((home / "stages").rglob(".damaged-*"))


def test_a_damaged_current_run_is_explained_and_replaced(published: Path, tmp_path: Path):
    current = warehouse.current_run()
    current.vectors_path.write_bytes(b"PAR1 cut short")
    for args in (["neighbors", "rey"], ["sql", "SELECT * FROM vectors"]):  # the warehouse's copy
        assert quijote(published, *args).returncode == 0
    candidate = make_run(tmp_path, "train", OTHER_WORDS, OTHER_VECTORS).vectors_path.parent
    meta = {"heldout_loss_per_epoch": [2.0], "heldout_set": "h"}
    trained = StageOutput("train", "k", candidate, meta)
    verdict = gate_task.fn(trained)  # judged against the warehouse's copy
    assert verdict.passed and verdict.current_run == "run-1"
    assert verdict.reasons[-1].startswith("nothing comparable with the current run")
    with duckdb.connect(str(published / "warehouse.duckdb")) as conn:  # as if registered before
        conn.execute("DELETE FROM run_vectors WHERE run_id = 'run-1'")  # the copies, files gone
    verdict = gate_task.fn(trained)
    assert verdict.passed and verdict.current_run == "run-1"
    assert verdict.reasons == ["the current run run-1 is unreadable: nothing to compare with"]


# --- runs at the same time ------------------------------------------------------------------

# What a reader sees of the current run: every part must belong to the same run.
CURRENT = """
SELECT r.run_id, r.dim = (SELECT any_value(len(vector)) FROM vectors),
       (SELECT count(*) FROM vocab) = json_extract(r.metrics, '$.vocab_size')::BIGINT,
       (SELECT count(*) FROM neighbors((SELECT word FROM vocab WHERE id = 0), 3))
FROM runs AS r WHERE r.is_current"""


@pytest.mark.slow
def test_two_runs_at_once_both_finish_and_readers_never_see_a_mix(home: Path, tmp_path: Path):
    # A current run sharing no probe pair, no benchmark item and no held-out loss with the new
    # ones: nothing is comparable, so the first new run passes the gate on its sanity alone
    # (these settings train sane vectors, multi-threaded or not), and the current run moves.
    warehouse.register_run(make_run(home / "stages", "run-1", OTHER_WORDS, OTHER_VECTORS))
    corpus = tmp_path / "slice.txt"
    corpus.write_text(quijote_slice(20_000), encoding="utf-8")
    env = cli_env(home)
    args = [str(QUIJOTE_BIN), "run", "-c", str(corpus), "--labelled", "none"]
    settings = ["--set", "epochs=3", "--set", "lr=0.2", "--set", "min_count=3", "--set"]
    runs = [
        subprocess.Popen([*args, *settings, f"dim={dim}"], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
        for dim in (8, 12)
    ]  # fmt: skip
    seen, errors = Counter(), []
    while any(run.poll() is None for run in runs):
        try:
            seen[queries.query(CURRENT)[1][0]] += 1
        except QuijoteError as error:
            errors.append(str(error))
        time.sleep(0.02)
    outputs = [run.communicate()[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert errors == []
    assert all(state[1:] == (True, True, 3) for state in seen), seen
    finished = runs_table()
    assert len(finished) == 3 and [s for _, s in finished].count("current") == 1
    new = {run_id for run_id, _ in finished} - {"run-1"}
    assert {state[0] for state in seen} <= new | {"run-1"}
    assert len(seen) >= 2  # the reader saw the current run move
    assert {p.name for p in (home / "runs").iterdir()} == new


# --- a full disk ----------------------------------------------------------------------------


def test_a_full_disk_is_one_line_and_leaves_no_partial_file(tmp_path: Path):
    target = tmp_path / "out" / "x.json"
    message = r"^no space left on the device for .*x\.json: free"
    with pytest.raises(QuijoteError, match=message), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert list(target.parent.iterdir()) == []
    with pytest.raises(OSError, match="Permission"), atomic_path(target):  # other errors: as is
        raise PermissionError("Permission denied")


# In a user and mount namespace (no privileges needed where unprivileged namespaces are
# allowed): a 16 MiB tmpfs as the data directory, a current run, then a run with FREE_KB left.
DISK_FULL = """
mount -t tmpfs -o size=16m tmpfs "$DISK" || exit 77
"$PYTHON" -c 'from storage import warehouse; from pathlib import Path; from tests.data import *
warehouse.register_run(make_run(Path("'"$QUIJOTE_HOME"'") / "stages", "run-1", WORDS, VECTORS))'
free=$(df -k --output=avail "$DISK" | tail -1)
head -c $(( (free - FREE_KB) * 1024 )) /dev/zero > "$DISK/filler"
"$QUIJOTE" run -c "$CORPUS" --labelled none --set epochs=1 --set min_count=3 \
  >"$OUT/run.out" 2>"$OUT/run.err"
echo $? >"$OUT/run.rc"
"$QUIJOTE" sql "SELECT run_id FROM runs WHERE is_current" >"$OUT/current" 2>&1
"$QUIJOTE" neighbors rey -k 1 >"$OUT/neighbors" 2>&1
find "$DISK" -name "*.tmp*" >"$OUT/leftovers"
"""


@pytest.mark.slow
def test_a_disk_that_fills_during_a_stage_leaves_the_current_run_queryable(tmp_path: Path):
    disk, out, prefect = tmp_path / "disk", tmp_path / "out", tmp_path / "prefect"
    for directory in (disk, out, prefect):
        directory.mkdir()
    corpus = tmp_path / "slice.txt"
    corpus.write_text(quijote_slice(20_000), encoding="utf-8")
    env = {
        **cli_env(disk / "home"),
        "DISK": str(disk), "OUT": str(out), "CORPUS": str(corpus), "FREE_KB": "100",
        "PYTHON": sys.executable, "QUIJOTE": str(QUIJOTE_BIN), "PREFECT_HOME": str(prefect),
    }  # fmt: skip
    command = ["unshare", "--user", "--map-root-user", "--mount", "bash", "-c", DISK_FULL]
    try:
        done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("no unshare here to mount a small tmpfs")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {done.stderr.strip()}")
    status, stdout, stderr = ((out / name).read_text() for name in ("run.rc", "run.out", "run.err"))
    run = subprocess.CompletedProcess([], int(status), stdout, stderr)
    assert_one_line_error(run, "no space left on the device for ")
    assert f"{disk}/home/stages/" in run.stderr  # it filled during a stage
    assert "run-1" in (out / "current").read_text()
    assert "neighbours of rey" in (out / "neighbors").read_text()
    assert (out / "leftovers").read_text() == ""


def test_a_killed_builders_temporary_directory_is_removed_a_live_ones_kept(
    home: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(storage.files, "ABANDONED_AFTER_S", 0.0)
    parent = home / "stages" / "toy"

    def build(directory: Path) -> dict:
        (directory / "out.txt").write_text("done")
        return {}

    # `live`: what a run building a stage here at this moment holds; `abandoned`: unlocked
    with storage.files.temporary_directory(parent, "bbbb") as live:
        abandoned = parent / ".tmp-aaaa-1"
        for directory in (abandoned, live):
            directory.mkdir(exist_ok=True)
            (directory / "part.parquet").write_bytes(b"PAR1")
        output = storage.stages.run_stage("toy", 1, {}, [], build)
        assert (output.path / "out.txt").read_text() == "done"
        assert not abandoned.exists() and (live / "part.parquet").exists()
