"""The DuckDB warehouse (`data/warehouse.duckdb`): a `runs` table, views over the current run's
Parquet and table macros, all usable in plain SQL from any read-only connection or the CLI.

    SELECT * FROM neighbors('dulcinea', 10);
    SELECT * FROM analogy('rey', 'hombre', 'mujer', 5);
    SELECT word, count FROM vocab ORDER BY count DESC LIMIT 20;
    SELECT * FROM run_neighbors('<run id>', 'dulcinea', 10);  -- any run, rejected ones too
    SELECT r.run_id, e.value FROM runs r JOIN evaluations e USING (run_id)
    WHERE e.benchmark = 'es_ws353';                            -- benchmark scores per run

A run registers itself in one short read-write transaction; everything else here reads through
`connect_read_only`, which also keeps DuckDB from touching files outside the data directory.
DuckDB lets one process write a database file, and only while no other process has it open,
so writers and readers take turns through a lock file beside it (`warehouse.duckdb.lock`).
"""

from __future__ import annotations

import fcntl
import json
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb

from quijote.errors import QuijoteError, first_line
from storage.paths import warehouse_path

LOCK_WAIT_S = 5.0  # how long a reader waits for another process's lock on the database file
WRITE_WAIT_S = 60.0  # how long a run waits to register (other writers, readers' open queries)

_RUNS_TABLE = """
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY,
    started_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ NOT NULL,
    corpus VARCHAR[] NOT NULL,
    params JSON NOT NULL,
    metrics JSON NOT NULL,
    vocab_path VARCHAR NOT NULL,
    vectors_path VARCHAR NOT NULL,
    dim INTEGER NOT NULL,
    status VARCHAR NOT NULL CHECK (status IN ('current', 'kept', 'rejected')),
    is_current BOOLEAN GENERATED ALWAYS AS (status = 'current') VIRTUAL
)"""

# When an operator made the run current by hand (NULL: the gate decided); a column added
# after the table's first release, so older warehouses get it too.
_PROMOTED_COLUMN = "ALTER TABLE runs ADD COLUMN IF NOT EXISTS promoted_at TIMESTAMPTZ"

_UPSERT_RUN = """
INSERT INTO runs (run_id, started_at, finished_at, corpus, params, metrics,
                  vocab_path, vectors_path, dim, status, promoted_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id) DO UPDATE SET
    started_at = excluded.started_at, finished_at = excluded.finished_at,
    corpus = excluded.corpus, params = excluded.params, metrics = excluded.metrics,
    vocab_path = excluded.vocab_path, vectors_path = excluded.vectors_path,
    dim = excluded.dim, status = excluded.status, promoted_at = excluded.promoted_at"""

_NEIGHBORS_MACRO = """
CREATE OR REPLACE MACRO neighbors(w, k) AS TABLE
SELECT v.word, array_cosine_similarity(v.vector, q.vector) AS similarity
FROM vectors AS v, (SELECT vector FROM vectors WHERE word = w) AS q
WHERE v.word <> w
ORDER BY similarity DESC, v.word
LIMIT k"""

_CLASSIFIER_TABLE = """
CREATE TABLE IF NOT EXISTS classifier_metrics (
    run_id VARCHAR NOT NULL,
    mode VARCHAR NOT NULL,
    accuracy DOUBLE NOT NULL,
    accuracy_std DOUBLE NOT NULL,
    macro_f1 DOUBLE NOT NULL,
    macro_f1_std DOUBLE NOT NULL,
    seeds INTEGER NOT NULL,
    n_train INTEGER NOT NULL,
    n_validation INTEGER NOT NULL,
    PRIMARY KEY (run_id, mode)
)"""

_EVALUATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS evaluations (
    run_id VARCHAR NOT NULL,
    benchmark VARCHAR NOT NULL,
    metric VARCHAR NOT NULL,
    value DOUBLE,
    found INTEGER NOT NULL,
    total INTEGER NOT NULL,
    PRIMARY KEY (run_id, benchmark, metric)
)"""

EVALUATION_COLUMNS = ("benchmark", "metric", "value", "found", "total")

CLASSIFIER_COLUMNS = (
    "mode", "accuracy", "accuracy_std", "macro_f1", "macro_f1_std", "seeds", "n_train",
    "n_validation",
)  # fmt: skip

_RUN_NEIGHBORS_MACRO = """
CREATE OR REPLACE MACRO run_neighbors(r, w, k) AS TABLE
SELECT v.word, list_cosine_similarity(v.vector, q.vector) AS similarity
FROM run_vectors AS v, (SELECT vector FROM run_vectors WHERE run_id = r AND word = w) AS q
WHERE v.run_id = r AND v.word <> w
ORDER BY similarity DESC, v.word
LIMIT k"""

STATUSES = ("current", "kept", "rejected")

# 3CosAdd: the target is unit(a) - unit(b) + unit(c); FLOAT[n] has no arithmetic, so it is
# built as a list and cast back to the run's array type.
_ANALOGY_MACRO = """
CREATE OR REPLACE MACRO analogy(a, b, c, k) AS TABLE
WITH u AS (
    SELECT word, vector, sqrt(array_inner_product(vector, vector)) AS norm
    FROM vectors
    WHERE word IN (a, b, c)
), q AS (
    SELECT list_transform(
        list_zip(ua.vector::FLOAT[], ub.vector::FLOAT[], uc.vector::FLOAT[]),
        lambda t: t[1] / ua.norm - t[2] / ub.norm + t[3] / uc.norm
    )::FLOAT[{dim}] AS vector
    FROM u AS ua, u AS ub, u AS uc
    WHERE ua.word = a AND ub.word = b AND uc.word = c
)
SELECT v.word, array_cosine_similarity(v.vector, q.vector) AS similarity
FROM vectors AS v, q
WHERE v.word NOT IN (a, b, c)
ORDER BY similarity DESC, v.word
LIMIT k"""


@dataclass(frozen=True)
class RunRecord:
    """A finished run, as registered in the warehouse."""

    run_id: str
    started_at: datetime
    finished_at: datetime
    corpus: list[str]
    params: dict[str, Any]
    metrics: dict[str, Any]
    vocab_path: Path  # Parquet: id int32, word string, count int64 (ordered by count desc)
    vectors_path: Path  # Parquet: word string, vector fixed_size_list<float32>[dim]
    dim: int
    classifier: list[dict[str, Any]] = field(default_factory=list)  # a row per mode
    evaluations: list[dict[str, Any]] = field(default_factory=list)  # a row per benchmark metric
    promoted: bool = False  # made current by an operator, whatever the gate said


def register_run(run: RunRecord, status: str = "current", db: Path | None = None) -> None:
    """Record `run` in the `runs` table with `status` ('current' points the views and macros at
    its Parquet; 'kept' and 'rejected' leave them), its classifier metrics and its benchmark
    scores, all in one transaction: a reader sees the run before or after, never half of it.
    Every run stays queryable by id through `run_vectors` and `run_neighbors`. Registering a
    run_id again replaces its rows (a run that was current stays current)."""
    if status not in STATUSES:
        raise QuijoteError(f"unknown run status {status!r}: use one of {', '.join(STATUSES)}")
    db = _database(db)
    vocab = _data_file(run.vocab_path, db.parent)
    vectors = _data_file(run.vectors_path, db.parent)
    if run.dim < 1:
        raise QuijoteError(f"run {run.run_id}: dim must be positive, got {run.dim}")
    with _writing(db) as conn:
        try:
            _create_tables(conn)  # the schema first: even a failed registration leaves it
            conn.begin()
            was_current = conn.execute(
                "SELECT count(*) > 0 FROM runs WHERE run_id = ? AND is_current", [run.run_id]
            ).fetchone() == (True,)
            current = status == "current" or was_current
            if current:
                conn.execute("UPDATE runs SET status = 'kept' WHERE is_current")
            conn.execute(
                _UPSERT_RUN,
                [
                    run.run_id,
                    run.started_at,
                    run.finished_at,
                    list(run.corpus),
                    _json(run.params),
                    _json(run.metrics),
                    str(vocab),
                    str(vectors),
                    run.dim,
                    "current" if current else status,
                    run.finished_at if run.promoted else None,
                ],
            )
            conn.execute(_run_vectors_ddl(conn))
            conn.execute(_RUN_NEIGHBORS_MACRO)
            if current:
                _point_views_at(conn, vocab, vectors, run.dim)
            _replace_rows(
                conn, "classifier_metrics", run.run_id, CLASSIFIER_COLUMNS, run.classifier
            )
            _replace_rows(conn, "evaluations", run.run_id, EVALUATION_COLUMNS, run.evaluations)
            conn.commit()
        except duckdb.Error as error:  # closing without COMMIT rolls everything back
            raise QuijoteError(f"cannot register run {run.run_id}: {first_line(error)}") from error


def promote(run_id: str, db: Path | None = None) -> None:
    """Make a registered run (kept or rejected) the current one by hand, in one transaction;
    `runs.promoted_at` records when."""
    db = _database(db)
    if not db.exists():
        raise QuijoteError(f"no warehouse yet at {db}: run `quijote run` first")
    with _writing(db) as conn:
        try:
            _create_tables(conn)
            conn.begin()
            row = conn.execute(
                "SELECT vocab_path, vectors_path, dim FROM runs WHERE run_id = ?", [run_id]
            ).fetchone()
            if row is None:
                raise QuijoteError(f"no run {run_id!r} in the warehouse (see: SELECT * FROM runs)")
            vocab, vectors = (_data_file(Path(path), db.parent) for path in row[:2])
            conn.execute("UPDATE runs SET status = 'kept' WHERE is_current")
            conn.execute(
                "UPDATE runs SET status = 'current', promoted_at = now() WHERE run_id = ?",
                [run_id],
            )
            _point_views_at(conn, vocab, vectors, row[2])
            conn.commit()
        except duckdb.Error as error:
            raise QuijoteError(f"cannot promote run {run_id}: {first_line(error)}") from error


def _create_tables(conn: duckdb.DuckDBPyConnection) -> None:
    for ddl in (_RUNS_TABLE, _PROMOTED_COLUMN, _CLASSIFIER_TABLE, _EVALUATIONS_TABLE):
        conn.execute(ddl)


def _point_views_at(conn: duckdb.DuckDBPyConnection, vocab: Path, vectors: Path, dim: int) -> None:
    """The current run's views and macros on these files, checked by reading one vector
    (a cast to FLOAT[dim] is checked only when a vector is read)."""
    for ddl in _current_run_ddl(vocab, vectors, dim):
        conn.execute(ddl)
    conn.execute("SELECT vector FROM vectors LIMIT 1").fetchall()


def _replace_rows(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    run_id: str,
    columns: tuple[str, ...],
    rows: list[dict[str, Any]],
) -> None:
    """A run's rows of a metrics table (`table` is one of this module's names)."""
    try:
        values = [[run_id, *(row[c] for c in columns)] for row in rows]
    except KeyError as error:
        raise QuijoteError(f"cannot register run {run_id}: a {table} row has no {error}") from None
    conn.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
    if values:
        conn.executemany(
            f"INSERT INTO {table} (run_id, {', '.join(columns)}) VALUES (?{', ?' * len(columns)})",
            values,
        )


def connect_read_only(
    db: Path | None = None, writable: Path | None = None
) -> duckdb.DuckDBPyConnection:
    """A read-only connection that can read files only inside the data directory (the
    warehouse's folder) and also write the one file `writable`. Settings are per database
    instance: another connection this process holds open on the same file at the same time
    shares them."""
    db = _database(db)
    if not db.exists():
        raise QuijoteError(f"no warehouse yet at {db}: run `quijote run` first")
    conn = _open(db, read_only=True)
    try:
        locked = conn.execute("SELECT current_setting('lock_configuration')").fetchone()
        if locked != (True,):  # else a connection this process holds open already did this
            conn.execute("SET allowed_directories = ?", [[str(db.parent)]])
            if writable is not None:
                conn.execute("SET allowed_paths = ?", [[str(writable)]])
            conn.execute("SET enable_external_access = false")
            conn.execute("SET lock_configuration = true")
    except BaseException:
        conn.close()
        raise
    return conn


def neighbors(word: str, k: int = 10, db: Path | None = None) -> list[tuple[str, float]]:
    """The k words of the current run closest to `word` by cosine similarity."""
    return _similar("SELECT word, similarity FROM neighbors(?, ?)", [word], k, db)


def analogy(a: str, b: str, c: str, k: int = 10, db: Path | None = None) -> list[tuple[str, float]]:
    """a - b + c (3CosAdd): analogy('rey', 'hombre', 'mujer') looks for 'reina'."""
    return _similar("SELECT word, similarity FROM analogy(?, ?, ?, ?)", [a, b, c], k, db)


def run_neighbors(
    run_id: str, word: str, k: int = 10, db: Path | None = None
) -> list[tuple[str, float]]:
    """The k words closest to `word` in any registered run (current, kept or rejected)."""
    if k < 1:
        raise QuijoteError(f"k must be at least 1, got {k}")
    with closing(connect_read_only(db)) as conn:
        try:
            found = conn.execute(
                "SELECT count(*) FROM run_vectors WHERE run_id = ? AND word = ?", [run_id, word]
            ).fetchone()
            if found == (0,):
                raise QuijoteError(f"'{word}' is not in the vocabulary of run {run_id}")
            rows = conn.execute("SELECT * FROM run_neighbors(?, ?, ?)", [run_id, word, k])
            return [(w, float(similarity)) for w, similarity in rows.fetchall()]
        except duckdb.Error as error:
            raise QuijoteError(first_line(error)) from error


def current_run(db: Path | None = None) -> dict[str, Any] | None:
    """The `runs` row of the current run (params and metrics decoded), or None when there is
    no warehouse or no current run."""
    return find_run(None, db)


def find_run(run_id: str | None, db: Path | None = None) -> dict[str, Any] | None:
    """The `runs` row of `run_id` (None: the current run), params and metrics decoded; None
    when there is no warehouse or no such run."""
    db = _database(db)
    if not db.exists():
        return None
    with closing(connect_read_only(db)) as conn:
        if run_id is None:
            result = conn.execute("SELECT * FROM runs WHERE is_current")
        else:
            result = conn.execute("SELECT * FROM runs WHERE run_id = ?", [run_id])
        row = result.fetchone()
        if row is None:
            return None
        record = dict(zip([column[0] for column in result.description or []], row, strict=True))
    return {
        **record,
        "params": json.loads(record["params"]),
        "metrics": json.loads(record["metrics"]),
    }


def vss_extension_path() -> Path:
    """The vss extension from the duckdb-extension-vss wheel: `LOAD '<path>'` works offline."""
    package = Path(str(resources.files("duckdb_extension_vss")))
    path = package / "extensions" / f"v{duckdb.__version__}" / "vss.duckdb_extension"
    if not path.is_file():
        raise QuijoteError(
            f"no vss extension for DuckDB {duckdb.__version__} at {path}: "
            f"install duckdb-extension-vss=={duckdb.__version__}"
        )
    return path


def _database(db: Path | None) -> Path:
    return (db or warehouse_path()).resolve()


@contextmanager
def _writing(db: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-write connection, for up to WRITE_WAIT_S: first the lock file exclusively (new
    readers now wait behind this writer, so a stream of them cannot starve it), then the
    database once the readers already in have closed it."""
    deadline = time.monotonic() + WRITE_WAIT_S
    with _turnstile(db, fcntl.LOCK_EX, deadline), closing(_open(db, False, deadline)) as conn:
        yield conn


def _open(db: Path, read_only: bool, deadline: float | None = None) -> duckdb.DuckDBPyConnection:
    """Connect, retrying until `deadline` (default: LOCK_WAIT_S from now) while another
    process holds a conflicting lock (a writer blocks readers, and open readers block a
    writer). A reader passes the lock file shared, so it waits while a writer holds it."""
    deadline = deadline or time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            if not read_only:
                return duckdb.connect(str(db))
            with _turnstile(db, fcntl.LOCK_SH, deadline):
                return duckdb.connect(str(db), read_only=True)
        except duckdb.Error as error:
            if "Could not set lock" in str(error) and time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            raise QuijoteError(f"cannot open the warehouse: {first_line(error)}") from error


@contextmanager
def _turnstile(db: Path, mode: int, deadline: float) -> Iterator[None]:
    """Hold the lock file beside `db` in `mode` (fcntl.LOCK_EX or LOCK_SH), polling for it
    until `deadline`."""
    with db.with_name(db.name + ".lock").open("a") as lock:
        while True:
            try:
                fcntl.flock(lock, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise QuijoteError(
                        "cannot open the warehouse: another run is registering itself; try again"
                    ) from None
                time.sleep(0.05)
        yield  # closing the file releases the lock


def _data_file(path: Path, data_dir: Path) -> Path:
    """`path` resolved, checked to be a file inside the data directory (readers may only read
    there, so a view over a file elsewhere would not work)."""
    resolved = Path(path).resolve()
    if not resolved.is_file():
        raise QuijoteError(f"cannot read {path}: no such file")
    if not resolved.is_relative_to(data_dir):
        raise QuijoteError(f"cannot use {path}: it is outside the data directory {data_dir}")
    return resolved


def _current_run_ddl(vocab: Path, vectors: Path, dim: int) -> list[str]:
    """The views and macros of the current run (DDL takes no parameters: paths are quoted)."""
    return [
        "CREATE OR REPLACE VIEW vocab AS "
        f"SELECT id, word, count FROM read_parquet({_sql_string(vocab)})",
        "CREATE OR REPLACE VIEW vectors AS "
        f"SELECT word, vector::FLOAT[{dim:d}] AS vector FROM read_parquet({_sql_string(vectors)})",
        _NEIGHBORS_MACRO,
        _ANALOGY_MACRO.format(dim=dim),
    ]


def _run_vectors_ddl(conn: duckdb.DuckDBPyConnection) -> str:
    """`run_vectors`: every registered run's vectors, with its run_id, as FLOAT[] lists (runs
    may differ in dim)."""
    runs = conn.execute("SELECT run_id, vectors_path FROM runs ORDER BY run_id").fetchall()
    parts = [
        f"SELECT {_sql_string(run_id)} AS run_id, word, vector::FLOAT[] AS vector "
        f"FROM read_parquet({_sql_string(path)})"
        for run_id, path in runs
    ]
    return "CREATE OR REPLACE VIEW run_vectors AS " + " UNION ALL ".join(parts)


def _similar(sql: str, words: list[str], k: int, db: Path | None) -> list[tuple[str, float]]:
    """Call a similarity macro after checking that every word is in the current run."""
    if k < 1:
        raise QuijoteError(f"k must be at least 1, got {k}")
    with closing(connect_read_only(db)) as conn:
        try:
            found = conn.execute("SELECT word FROM vectors WHERE list_contains(?, word)", [words])
            known = {word for (word,) in found.fetchall()}
            for word in words:
                if word not in known:
                    raise QuijoteError(f"'{word}' is not in the vocabulary of the current run")
            rows = conn.execute(sql, [*words, k]).fetchall()
        except duckdb.CatalogException as error:
            raise QuijoteError(
                "the warehouse has no current run: run `quijote run` first"
            ) from error
        except duckdb.Error as error:
            raise QuijoteError(first_line(error)) from error
    return [(word, float(similarity)) for word, similarity in rows]


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _sql_string(value: Path | str) -> str:
    return "'" + str(value).replace("'", "''") + "'"
