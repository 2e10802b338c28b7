"""The DuckDB warehouse: views and macros in plain SQL, run switching, read-only `quijote sql`."""

from __future__ import annotations

import fcntl
import time
from contextlib import closing
from pathlib import Path

import duckdb
import numpy as np
import pytest

from quijote.errors import QuijoteError
from storage import queries, warehouse
from storage.paths import warehouse_path
from storage.warehouse import RunRecord
from tests.data import OTHER_VECTORS, OTHER_WORDS, VECTORS, WORDS, make_run, warehouse_held


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The data directory; its name has a quote and a space, which the view DDL must survive."""
    path = tmp_path / "data d'Quijote"
    monkeypatch.setenv("QUIJOTE_HOME", str(path))
    return path


@pytest.fixture
def run(home: Path) -> RunRecord:
    record = make_run(home / "stages", "run-1", WORDS, VECTORS)
    warehouse.register_run(record)
    return record


def cosine_ranking(target: np.ndarray, exclude: set[str]) -> list[tuple[str, float]]:
    """The reference: every word but `exclude` by cosine similarity to `target`, best first."""
    units = VECTORS / np.linalg.norm(VECTORS, axis=1, keepdims=True)
    similarities = units @ (target / np.linalg.norm(target))
    ranked = [(w, float(s)) for w, s in zip(WORDS, similarities, strict=True) if w not in exclude]
    return sorted(ranked, key=lambda pair: -pair[1])


def unit(word: str) -> np.ndarray:
    vector = VECTORS[WORDS.index(word)]
    return vector / np.linalg.norm(vector)


def runs_table() -> list[tuple]:
    with closing(duckdb.connect(str(warehouse_path()), read_only=True)) as conn:
        return conn.execute(
            "SELECT run_id, status, is_current FROM runs ORDER BY run_id"
        ).fetchall()


def vocab_words() -> list[str]:
    with closing(duckdb.connect(str(warehouse_path()), read_only=True)) as conn:
        return [w for (w,) in conn.execute("SELECT word FROM vocab ORDER BY id").fetchall()]


def test_views_and_macros_work_from_a_plain_read_only_connection(home: Path, run: RunRecord):
    assert warehouse_path() == home.resolve() / "warehouse.duckdb"
    with closing(duckdb.connect(str(warehouse_path()), read_only=True)) as conn:
        top = conn.execute("SELECT word, count FROM vocab ORDER BY count DESC LIMIT 2").fetchall()
        assert top == [("rey", 6), ("reina", 5)]
        assert conn.execute("SELECT DISTINCT typeof(vector) FROM vectors").fetchall() == [
            ("FLOAT[3]",)
        ]
        near = conn.execute("SELECT * FROM neighbors('rey', 2)").fetchall()
        assert [w for w, _ in near] == ["niño", "hombre"]
        found = conn.execute("SELECT * FROM analogy('rey', 'hombre', 'mujer', 1)").fetchall()
        assert found[0][0] == "reina"
        row = conn.execute("SELECT run_id, corpus, dim, status, is_current FROM runs").fetchall()
        assert row == [("run-1", ["quijote"], 3, "current", True)]


def test_neighbors_are_ordered_by_cosine_without_the_word_itself(run: RunRecord):
    expected = cosine_ranking(VECTORS[0], exclude={"rey"})
    found = warehouse.neighbors("rey", k=10)
    assert [w for w, _ in found] == [w for w, _ in expected]
    assert [s for _, s in found] == pytest.approx([s for _, s in expected], abs=1e-6)
    assert warehouse.neighbors("rey", k=2) == found[:2]


def test_analogy_finds_the_constructed_answer_and_excludes_its_inputs(run: RunRecord):
    target = unit("rey") - unit("hombre") + unit("mujer")
    expected = cosine_ranking(target, exclude={"rey", "hombre", "mujer"})
    found = warehouse.analogy("rey", "hombre", "mujer", k=10)
    assert found[0][0] == "reina"
    assert [w for w, _ in found] == [w for w, _ in expected]
    assert [s for _, s in found] == pytest.approx([s for _, s in expected], abs=1e-6)


def test_a_new_run_switches_the_views_and_is_the_only_current_one(home: Path, run: RunRecord):
    warehouse.register_run(make_run(home / "stages", "run-2", OTHER_WORDS, OTHER_VECTORS))
    assert vocab_words() == OTHER_WORDS
    assert runs_table() == [("run-1", "kept", False), ("run-2", "current", True)]
    assert warehouse.neighbors("molino", 1)[0][0] in OTHER_WORDS
    assert queries.query("SELECT DISTINCT typeof(vector) FROM vectors")[1] == [("FLOAT[4]",)]
    current = warehouse.current_run()
    assert current is not None
    assert current.run_id == "run-2"
    assert current.params == {"dim": 4, "window": 5}
    assert current.metrics["loss_per_epoch"] == [2.5, 1.5]
    assert current.status == "current" and current.promoted_at is None and current.dim == 4
    assert current.vocab_path.is_file() and current.vectors_path.is_file()
    kept = warehouse.find_run("run-1")
    assert kept is not None and kept.status == "kept" and kept.corpus == run.corpus
    assert warehouse.find_run("run-9") is None


def test_a_kept_run_leaves_the_views_alone(home: Path, run: RunRecord):
    warehouse.register_run(
        make_run(home / "stages", "run-2", OTHER_WORDS, OTHER_VECTORS), status="kept"
    )
    assert vocab_words() == WORDS
    assert runs_table() == [("run-1", "current", True), ("run-2", "kept", False)]
    current = warehouse.current_run()
    assert current is not None and current.run_id == "run-1"


def test_a_rejected_run_stays_queryable_by_id(home: Path, run: RunRecord):
    rejected = make_run(home / "stages", "run-2", OTHER_WORDS, OTHER_VECTORS)
    warehouse.register_run(rejected, status="rejected")
    assert runs_table() == [("run-1", "current", True), ("run-2", "rejected", False)]
    assert vocab_words() == WORDS
    near = warehouse.run_neighbors("run-2", "molino", 3)
    assert sorted(w for w, _ in near) == ["dulcinea", "gigante", "sancho"]  # equally close
    assert warehouse.run_neighbors("run-1", "rey", 1)[0][0] == "niño"
    with duckdb.connect(str(warehouse_path()), read_only=True) as con:
        rows = con.execute("SELECT word FROM run_neighbors('run-2', 'molino', 5)").fetchall()
    assert len(rows) == 3 and ("molino",) not in rows
    with pytest.raises(QuijoteError, match="not in the vocabulary of run run-2"):
        warehouse.run_neighbors("run-2", "rey")
    with pytest.raises(QuijoteError, match="unknown run status"):
        warehouse.register_run(rejected, status="maybe")


def test_registering_a_run_again_replaces_its_row_and_keeps_it_current(run: RunRecord):
    again = RunRecord(**{**vars(run), "metrics": {"vocab_size": 6, "loss_per_epoch": [1.0]}})
    warehouse.register_run(again, status="kept")
    assert runs_table() == [("run-1", "current", True)]
    current = warehouse.current_run()
    assert current is not None and current.metrics["loss_per_epoch"] == [1.0]


def test_registering_a_run_again_leaves_one_copy_of_its_vocab_and_vectors(run: RunRecord):
    warehouse.register_run(run, status="kept")
    for sql in (
        "SELECT run_id, count(*) FROM run_vocab GROUP BY run_id",
        "SELECT run_id, count(*) FROM run_vectors GROUP BY run_id",
    ):
        assert queries.query(sql)[1] == [("run-1", len(WORDS))], sql
    near = [w for w, _ in warehouse.run_neighbors("run-1", "rey", 10)]
    assert sorted(near) == sorted(set(WORDS) - {"rey"})  # each word once


def test_a_failed_registration_changes_nothing(home: Path, run: RunRecord):
    broken = make_run(home / "stages", "run-2", OTHER_WORDS, OTHER_VECTORS)
    with pytest.raises(QuijoteError, match="cannot register run run-2"):
        warehouse.register_run(RunRecord(**{**vars(broken), "dim": 3}))
    assert runs_table() == [("run-1", "current", True)]
    assert vocab_words() == WORDS


def test_registration_needs_files_inside_the_data_directory(tmp_path: Path, run: RunRecord):
    outside = make_run(tmp_path / "elsewhere", "run-2", OTHER_WORDS, OTHER_VECTORS)
    with pytest.raises(QuijoteError, match="outside the data directory"):
        warehouse.register_run(outside)
    missing = RunRecord(**{**vars(run), "run_id": "run-3", "vocab_path": run.vocab_path.parent})
    with pytest.raises(QuijoteError, match="no such file"):
        warehouse.register_run(missing)
    assert runs_table() == [("run-1", "current", True)]


def test_query_runs_read_statements(run: RunRecord):
    top = queries.query("SELECT word, count FROM vocab ORDER BY count DESC LIMIT 2")
    assert top == (["word", "count"], [("rey", 6), ("reina", 5)])
    assert queries.query("SELECT * FROM neighbors('rey', 1)")[1][0][0] == "niño"
    assert "library_version" in queries.query("PRAGMA version")[0]
    assert queries.query("EXPLAIN SELECT * FROM vectors")[0] == ["explain_key", "explain_value"]
    assert queries.query("EXPLAIN ANALYZE SELECT count(*) FROM vocab")[1]
    assert ("vector", "FLOAT[3]") in [row[:2] for row in queries.query("DESCRIBE vectors")[1]]
    assert queries.query("SELECT 1 AS a; SELECT 2 AS b") == (["b"], [(2,)])
    vocab = str(run.vocab_path).replace("'", "''")
    assert queries.query(f"SELECT count(*) FROM read_parquet('{vocab}')")[1] == [(6,)]


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("DROP TABLE runs", "DROP"),
        ("INSERT INTO runs (run_id) VALUES ('x')", "INSERT"),
        ("UPDATE runs SET status = 'kept'", "UPDATE"),
        ("COPY runs TO '{home}/out.csv'", "COPY"),
        ("EXPLAIN ANALYZE COPY runs TO '{home}/out.csv'", "COPY"),
        ("ATTACH '{home}/out.duckdb' AS other", "ATTACH"),
        ("INSTALL vss", "LOAD"),
        ("LOAD vss", "LOAD"),
        ("SET threads = 1", "SET"),
        ("CREATE TABLE t AS SELECT 1", "CREATE"),
        ("SELECT 1; DROP TABLE runs", "DROP"),
    ],
)
def test_query_rejects_everything_but_reads(home: Path, run: RunRecord, sql: str, kind: str):
    before = runs_table()
    statement = sql.format(home=str(home).replace("'", "''"))
    message = f"quijote sql is read-only: {kind} statements are not allowed"
    with pytest.raises(QuijoteError, match=message):
        queries.query(statement)
    assert runs_table() == before
    assert not (home / "out.csv").exists()
    assert not (home / "out.duckdb").exists()


def test_query_cannot_read_outside_the_data_directory(tmp_path: Path, run: RunRecord):
    outside = tmp_path / "outside.csv"
    outside.write_text("a,b\n1,2\n")
    for path in (outside, Path("/etc/passwd")):
        with pytest.raises(QuijoteError, match="Permission Error"):
            queries.query(f"SELECT * FROM read_csv('{path}')")


def test_query_errors_are_one_line(run: RunRecord):
    with pytest.raises(QuijoteError, match=r"^Catalog Error: Table with name nowhere") as error:
        queries.query("SELECT * FROM nowhere")
    assert "\n" not in str(error.value)
    with pytest.raises(QuijoteError, match=r"^Parser Error"):
        queries.query("SELEC 1")
    with pytest.raises(QuijoteError, match="no SQL statement"):
        queries.query("  ")


def test_unknown_words_are_named(run: RunRecord):
    with pytest.raises(QuijoteError) as error:
        warehouse.neighbors("xyz")
    assert str(error.value) == "'xyz' is not in the vocabulary of the current run"
    with pytest.raises(QuijoteError, match=r"^'dragón' is not in the vocabulary"):
        warehouse.analogy("rey", "dragón", "mujer")
    with pytest.raises(QuijoteError, match="k must be at least 1"):
        warehouse.neighbors("rey", k=0)


def test_a_missing_warehouse_is_explained(home: Path):
    for call in (warehouse.connect_read_only, lambda: warehouse.neighbors("rey")):
        with pytest.raises(QuijoteError, match=r"no warehouse yet at .*: run `quijote run` first"):
            call()
    with pytest.raises(QuijoteError, match="no warehouse yet"):
        queries.query("SELECT 1")
    assert warehouse.current_run() is None
    assert not home.exists()  # looking for it created nothing


def test_a_warehouse_without_a_current_run(home: Path):
    record = make_run(home / "stages", "run-1", WORDS, VECTORS)
    with pytest.raises(QuijoteError, match="cannot register run run-1"):
        warehouse.register_run(RunRecord(**{**vars(record), "dim": 4}))
    assert warehouse.current_run() is None
    assert queries.query("SELECT count(*) FROM runs") == (["count_star()"], [(0,)])
    warehouse.register_run(record, status="kept")
    assert warehouse.current_run() is None
    with pytest.raises(QuijoteError, match="no current run"):
        warehouse.neighbors("rey")


def test_read_only_connections_can_be_open_together(run: RunRecord):
    with closing(warehouse.connect_read_only()) as conn:
        assert warehouse.neighbors("rey", 1)[0][0] == "niño"
        assert conn.execute("SELECT count(*) FROM vocab").fetchall() == [(6,)]
        with pytest.raises(duckdb.Error, match="locked"):
            conn.execute("SET enable_external_access = true")


def test_readers_wait_for_a_writer_then_fail_clearly(run: RunRecord, monkeypatch):
    with warehouse_held(warehouse_path(), "write", 0.8) as holder:
        monkeypatch.setattr(warehouse, "LOCK_WAIT_S", 0.2)
        with pytest.raises(QuijoteError) as raised:
            warehouse.connect_read_only()
        assert str(raised.value) == (
            f"the warehouse is busy: another process (pid {holder.pid}) is writing to it (a "
            "run, promote or prune); try again when it ends"
        )
        monkeypatch.setattr(warehouse, "LOCK_WAIT_S", 10.0)
        assert warehouse.neighbors("rey", 1)[0][0] == "niño"


def test_a_writer_waits_for_an_open_query_then_fails_clearly(run: RunRecord, monkeypatch):
    with warehouse_held(warehouse_path(), "read", 0.8) as query:
        monkeypatch.setattr(warehouse, "WRITE_WAIT_S", 0.2)
        with pytest.raises(QuijoteError) as raised:
            warehouse.register_run(run, "kept")
        message = str(raised.value)
        assert message == (
            f"the warehouse is busy: another process (pid {query.pid}) has it open (a query "
            "or a run); try again when it ends"
        )
        assert "readonly" not in message
        monkeypatch.setattr(warehouse, "WRITE_WAIT_S", 10.0)
        warehouse.register_run(run, "kept")  # once the query has ended
        assert runs_table() == [("run-1", "current", True)]  # a current run stays current


def test_classifier_metrics_per_run_and_mode_come_with_the_run(home: Path, run: RunRecord):
    row = {
        "mode": "finetune", "accuracy": 0.7, "accuracy_std": 0.01, "macro_f1": 0.5,
        "macro_f1_std": 0.02, "seeds": 5, "n_train": 540, "n_validation": 136,
    }  # fmt: skip
    warehouse.register_run(
        RunRecord(**{**vars(run), "classifier": [row, {**row, "mode": "random"}]})
    )
    again = RunRecord(**{**vars(run), "classifier": [{**row, "accuracy": 0.75}]})
    warehouse.register_run(again)  # replaces
    columns, rows = queries.query("SELECT run_id, mode, accuracy FROM classifier_metrics")
    assert columns == ["run_id", "mode", "accuracy"] and rows == [("run-1", "finetune", 0.75)]
    broken = RunRecord(**{**vars(run), "run_id": "run-2", "classifier": [{"mode": "frozen"}]})
    with pytest.raises(QuijoteError, match="run-2: a classifier_metrics row has no"):
        warehouse.register_run(broken)
    assert runs_table() == [("run-1", "current", True)]  # nothing of run-2
    assert queries.query("SELECT count(*) FROM classifier_metrics")[1] == [(1,)]


def test_benchmark_scores_come_with_the_run_and_join_with_runs(home: Path, run: RunRecord):
    rows = [
        {"benchmark": "es_rg65", "metric": "spearman", "value": 0.41, "found": 54, "total": 65},
        {"benchmark": "analogias", "metric": "3cosadd", "value": None, "found": 0, "total": 9},
    ]
    warehouse.register_run(RunRecord(**{**vars(run), "evaluations": rows}))
    _, found = queries.query(
        "SELECT r.run_id, r.status, e.benchmark, e.value, e.found FROM runs r "
        "JOIN evaluations e USING (run_id) ORDER BY e.benchmark"
    )
    assert found == [
        ("run-1", "current", "analogias", None, 0), ("run-1", "current", "es_rg65", 0.41, 54)
    ]  # fmt: skip
    warehouse.register_run(RunRecord(**{**vars(run), "evaluations": rows[:1]}))  # replaces
    assert queries.query("SELECT count(*) FROM evaluations")[1] == [(1,)]


def test_an_operator_promotes_any_finished_run(home: Path, run: RunRecord):
    rejected = make_run(home / "stages", "run-2", OTHER_WORDS, OTHER_VECTORS)
    warehouse.register_run(rejected, status="rejected")
    warehouse.promote("run-2")
    assert runs_table() == [("run-1", "kept", False), ("run-2", "current", True)]
    assert vocab_words() == OTHER_WORDS
    assert queries.query("SELECT DISTINCT typeof(vector) FROM vectors")[1] == [("FLOAT[4]",)]
    _, promoted = queries.query("SELECT run_id FROM runs WHERE promoted_at IS NOT NULL")
    assert promoted == [("run-2",)]
    warehouse.promote("run-1")
    assert runs_table() == [("run-1", "current", True), ("run-2", "kept", False)]
    with pytest.raises(QuijoteError, match="no run 'run-9' in the warehouse"):
        warehouse.promote("run-9")
    rejected.vectors_path.unlink()  # the warehouse holds its own copy
    warehouse.promote("run-2")
    assert vocab_words() == OTHER_WORDS
    assert warehouse.neighbors("molino", 1)[0][0] in OTHER_WORDS


def test_pruning_keeps_the_current_run_and_the_most_recent_others(home: Path, run: RunRecord):
    for n in (2, 3, 4):
        later = make_run(home / "stages", f"run-{n}", OTHER_WORDS, OTHER_VECTORS)
        warehouse.register_run(later, status="current" if n == 3 else "kept")
    assert warehouse.prune(1) == ["run-2", "run-1"]  # run-3 current, run-4 the most recent
    assert warehouse.prune(1) == []
    assert [r[0] for r in runs_table()] == ["run-1", "run-2", "run-3", "run-4"]  # rows stay
    _, held = queries.query("SELECT DISTINCT run_id FROM run_vectors ORDER BY run_id")
    assert held == [("run-3",), ("run-4",)]
    assert warehouse.neighbors("molino", 1)[0][0] in OTHER_WORDS
    assert warehouse.run_neighbors("run-4", "molino", 1)[0][0] in OTHER_WORDS
    with pytest.raises(QuijoteError, match=r"run run-1 has no vectors in the warehouse \(pruned"):
        warehouse.run_neighbors("run-1", "rey")
    with pytest.raises(QuijoteError, match=r"run run-2 has no vectors in the warehouse \(pruned"):
        warehouse.promote("run-2")
    with pytest.raises(QuijoteError, match="no run 'run-9' in the warehouse"):
        warehouse.run_neighbors("run-9", "rey")
    assert warehouse.prune(0) == ["run-4"]
    with pytest.raises(QuijoteError, match="keep must be 0 or more"):
        warehouse.prune(-1)


def test_an_older_warehouse_gets_the_new_column_and_table(home: Path, run: RunRecord):
    with closing(duckdb.connect(str(warehouse_path()))) as conn:
        conn.execute("ALTER TABLE runs DROP COLUMN promoted_at")
        conn.execute("DROP TABLE evaluations")
    current = warehouse.current_run()  # read-only: the column is not there yet
    assert current is not None and current.run_id == "run-1" and current.promoted_at is None
    warehouse.register_run(make_run(home / "stages", "run-2", OTHER_WORDS, OTHER_VECTORS))
    _, rows = queries.query("SELECT run_id, promoted_at FROM runs ORDER BY run_id")
    assert rows == [("run-1", None), ("run-2", None)]
    assert queries.query("SELECT count(*) FROM evaluations")[1] == [(0,)]


def test_the_warehouse_keeps_working_when_the_data_directory_moves(
    home: Path, run: RunRecord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    warehouse.register_run(
        make_run(home / "stages", "run-2", OTHER_WORDS, OTHER_VECTORS), status="rejected"
    )
    moved = tmp_path / "moved"
    home.rename(moved)
    monkeypatch.setenv("QUIJOTE_HOME", str(moved))
    with closing(duckdb.connect(str(moved / "warehouse.duckdb"), read_only=True)) as conn:
        assert conn.execute("SELECT * FROM neighbors('rey', 1)").fetchall()[0][0] == "niño"
        assert conn.execute("SELECT count(*) FROM vocab").fetchall() == [(len(WORDS),)]
        found = conn.execute("SELECT word FROM run_neighbors('run-2', 'molino', 1)").fetchall()
        assert found[0][0] in OTHER_WORDS
        paths = conn.execute("SELECT vocab_path, vectors_path FROM runs").fetchall()
    assert all(not Path(path).is_absolute() for row in paths for path in row)
    current = warehouse.current_run()
    assert current is not None and current.vectors_path.is_file()
    assert current.vectors_path.is_relative_to(moved)


def test_an_older_warehouse_reading_parquet_by_path_gets_its_runs_copied_in(home: Path):
    """Before the copies the views read each run's Parquet by absolute path."""
    old = make_run(home / "stages", "run-1", WORDS, VECTORS)
    gone = make_run(home / "stages", "run-0", OTHER_WORDS, OTHER_VECTORS)
    home.mkdir(exist_ok=True)
    with closing(duckdb.connect(str(warehouse_path()))) as conn:
        conn.execute(warehouse._RUNS_TABLE)
        for record, status in ((gone, "kept"), (old, "current")):
            conn.execute(
                "INSERT INTO runs (run_id, started_at, finished_at, corpus, params, metrics, "
                "vocab_path, vectors_path, dim, status) VALUES (?, now(), now(), ['quijote'], "
                "'{}', '{}', ?, ?, ?, ?)",
                [
                    record.run_id,
                    str(record.vocab_path),
                    str(record.vectors_path),
                    record.dim,
                    status,
                ],
            )
        vectors = str(old.vectors_path).replace("'", "''")
        conn.execute(f"CREATE VIEW vectors AS SELECT * FROM read_parquet('{vectors}')")
        conn.execute(
            "CREATE VIEW run_vectors AS SELECT 'run-1' AS run_id, word, vector::FLOAT[] AS vector "
            f"FROM read_parquet('{vectors}')"
        )
    gone.vectors_path.unlink()  # a run whose files are gone stays listed, without vectors
    warehouse.register_run(make_run(home / "stages", "run-2", OTHER_WORDS, OTHER_VECTORS), "kept")
    assert runs_table() == [
        ("run-0", "kept", False), ("run-1", "current", True), ("run-2", "kept", False)
    ]  # fmt: skip
    assert vocab_words() == WORDS
    assert warehouse.neighbors("rey", 1)[0][0] == "niño"
    assert warehouse.run_neighbors("run-2", "molino", 1)[0][0] in OTHER_WORDS
    _, paths = queries.query("SELECT vectors_path FROM runs WHERE run_id = 'run-1'")
    assert paths == [("stages/run-1/vectors.parquet",)]
    _, views = queries.query("SELECT sql FROM duckdb_views() WHERE NOT internal")
    assert not any("read_parquet" in sql for (sql,) in views)
    with pytest.raises(QuijoteError, match="run run-0 has no vectors in the warehouse"):
        warehouse.promote("run-0")


def test_ties_are_broken_by_word_and_k_is_checked_for_any_run(home: Path, run: RunRecord):
    words = ["zeta", "beta", "alfa", "omega"]  # beta and alfa the same vector: a true tie
    vectors = np.array([[1, 0, 0], [1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=np.float32)
    warehouse.register_run(make_run(home / "stages", "run-2", words, vectors), status="kept")
    near = warehouse.run_neighbors("run-2", "zeta", 2)
    assert [w for w, _ in near] == ["alfa", "beta"]  # by word, not in file order
    with pytest.raises(QuijoteError, match="k must be at least 1"):
        warehouse.run_neighbors("run-2", "zeta", 0)


def test_analogy_returns_k_words_when_its_inputs_rank_first(run: RunRecord):
    target = unit("niño") - unit("rey") + unit("hombre")  # close to niño and hombre
    expected = cosine_ranking(target, exclude={"niño", "rey", "hombre"})
    found = warehouse.analogy("niño", "rey", "hombre", k=2)
    assert [w for w, _ in found] == [w for w, _ in expected[:2]]
    assert [s for _, s in found] == pytest.approx([s for _, s in expected[:2]], abs=1e-6)


def default_search(name: str) -> str:
    with closing(warehouse.connect_read_only()) as conn:
        (definition,) = conn.execute(
            "SELECT macro_definition FROM duckdb_functions() WHERE function_name = ?", [name]
        ).fetchone()
    return definition


def test_search_is_by_cell_from_exactly_index_min_words_words(home: Path):
    record = make_run(home / "stages", "run-1", WORDS, VECTORS)
    warehouse.register_run(record, index_min_words=len(WORDS) + 1)
    assert "neighbors_exact" in default_search("neighbors")
    assert "analogy_exact" in default_search("analogy")
    warehouse.register_run(record, index_min_words=len(WORDS))
    assert "neighbors_approx" in default_search("neighbors")
    assert "analogy_approx" in default_search("analogy")
    assert warehouse.neighbors("rey", 2, exact=True)[0][0] == "niño"


def test_a_promoted_run_records_when_it_was_made_current(home: Path, run: RunRecord):
    forced = make_run(home / "stages", "run-2", OTHER_WORDS, OTHER_VECTORS)
    warehouse.register_run(RunRecord(**{**vars(forced), "promoted": True}))
    current = warehouse.current_run()
    assert current is not None and current.promoted_at == forced.finished_at
    warehouse.promote("run-1")
    promoted = warehouse.find_run("run-1")
    assert promoted is not None and promoted.status == "current"
    assert promoted.promoted_at is not None and promoted.promoted_at > forced.finished_at


def test_pruning_and_listing_go_by_when_runs_finished_not_by_id(home: Path, run: RunRecord):
    for n, minute in ((2, 30), (3, 20), (4, 10)):  # run-2 the latest, run-4 the oldest
        later = make_run(home / "stages", f"run-{n}", OTHER_WORDS, OTHER_VECTORS)
        finished = later.finished_at.replace(minute=minute)
        warehouse.register_run(RunRecord(**{**vars(later), "finished_at": finished}), "kept")
    assert warehouse.prune(1) == ["run-3", "run-4"]  # run-2 the most recent other
    assert warehouse.runs_without_vectors() == ["run-4", "run-3"]  # oldest first


def test_a_reader_waits_its_turn_behind_a_writer_holding_the_lock_file(
    run: RunRecord, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(warehouse, "LOCK_WAIT_S", 0.2)
    lock_file = warehouse_path().with_name("warehouse.duckdb.lock")
    with lock_file.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a writer waiting for the open queries to end
        started = time.monotonic()
        with pytest.raises(QuijoteError, match="the warehouse is busy"):
            warehouse.connect_read_only()
        assert time.monotonic() - started < 5
    assert warehouse.neighbors("rey", 1)[0][0] == "niño"  # its turn once the lock is let go


def clustered_run(home: Path, words: int, dim: int, seed: int = 0) -> tuple[RunRecord, np.ndarray]:
    """A run of `words` vectors around a few hundred centres, as word vectors cluster."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((words // 20, dim))
    vectors = centres[rng.integers(0, len(centres), words)] + 0.5 * rng.standard_normal(
        (words, dim)
    )
    names = [f"w{i:05d}" for i in range(words)]
    return make_run(home / "stages", "big", names, vectors.astype(np.float32)), vectors


def test_a_large_vocabulary_is_searched_by_cell_and_exact_search_stays_by_name(home: Path):
    run, vectors = clustered_run(home, 6000, 16)
    warehouse.register_run(run, index_min_words=5000)
    units = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    with closing(warehouse.connect_read_only()) as conn:
        cells = conn.execute("SELECT count(*) FROM vector_cells").fetchone()[0]
        assert cells == 6
        recalls = []
        for query in range(0, 6000, 120):
            word = f"w{query:05d}"
            similarities = units @ units[query]
            similarities[query] = -2
            truth = {f"w{i:05d}" for i in np.argsort(-similarities, kind="stable")[:10]}
            exact = conn.execute("SELECT word FROM neighbors_exact(?, 10)", [word]).fetchall()
            assert {w for (w,) in exact} == truth
            approx = conn.execute(
                "SELECT word FROM neighbors_approx(?, 10, probes := 2)", [word]
            ).fetchall()
            recalls.append(len({w for (w,) in approx} & truth) / 10)
            every_cell = conn.execute(
                "SELECT word FROM neighbors_approx(?, 10, probes := ?)", [word, cells]
            ).fetchall()
            assert every_cell == exact
        assert np.mean(recalls) >= 0.8  # a third of the cells read (0.86 when written)
        default = conn.execute("SELECT * FROM neighbors('w00000', 10)").fetchall()
        assert default == conn.execute("SELECT * FROM neighbors_approx('w00000', 10)").fetchall()
        one_cell = conn.execute(
            "SELECT count(*) FROM neighbors_approx('w00000', 5000, probes := 1)"
        )
        assert one_cell.fetchone()[0] < 5000  # only the nearest cell's words
        analogy = "SELECT word FROM {}('w00001', 'w00002', 'w00003', 10)"
        exact = conn.execute(analogy.format("analogy_exact")).fetchall()
        assert len(set(conn.execute(analogy.format("analogy")).fetchall()) & set(exact)) >= 8
    assert warehouse.neighbors("w00000", 3, exact=True) == warehouse.neighbors("w00000", 3)


def test_a_preview_of_exactly_max_rows_rows_shows_them_all(run: RunRecord):
    whole = queries.preview("SELECT * FROM range(10)", max_rows=10)
    assert [row[0] for row in whole.head] == list(range(10))
    assert whole.tail == [] and whole.rows == 10 and whole.counted
    split = queries.preview("SELECT * FROM range(11)", max_rows=10)
    assert [row[0] for row in split.head] == list(range(5))
    assert [row[0] for row in split.tail] == list(range(6, 11)) and split.rows == 11
