"""The DuckDB warehouse (`data/warehouse.duckdb`): a `runs` table, every run's vocabulary and
vectors in tables, the current run's views and table macros, all usable in plain SQL from any
read-only connection or the CLI.

    SELECT * FROM neighbors('dulcinea', 10);
    SELECT * FROM analogy('rey', 'hombre', 'mujer', 5);
    SELECT word, count FROM vocab ORDER BY count DESC LIMIT 20;
    SELECT * FROM run_neighbors('<run id>', 'dulcinea', 10);  -- any run, rejected ones too
    SELECT r.run_id, e.value FROM runs r JOIN evaluations e USING (run_id)
    WHERE e.benchmark = 'es_ws353';                            -- benchmark scores per run

The file holds everything it serves (no paths to other files in its views), so it keeps
working when the data directory moves. The current run's vectors are also stored split into
cells (storage/cells.py): above INDEX_MIN_WORDS words `neighbors` and `analogy` search only the
query's nearest cells; `neighbors_exact` and `analogy_exact` always compare every word.

A run registers itself in one read-write transaction; everything else here reads through
`connect_read_only`, which also keeps DuckDB from touching files outside the data directory.
DuckDB lets one process write a database file, and only while no other process has it open,
so writers and readers take turns through a lock file beside it (`warehouse.duckdb.lock`).
"""

from __future__ import annotations

import fcntl
import json
import re
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from quijote.errors import QuijoteError, first_line
from storage.cells import build_cells
from storage.paths import warehouse_path
from storage.vectors import read_vectors, unit_rows, vector_array

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

INDEX_MIN_WORDS = 50_000  # from this many words `neighbors` and `analogy` search by cell
PROBES = 32  # the cells an approximate search reads (see bench/neighbors.py)

# Every run's vocabulary and vectors (FLOAT[]: runs may differ in dim), in file order.
_RUN_TABLES = (
    "CREATE TABLE IF NOT EXISTS run_vocab (run_id VARCHAR NOT NULL, id INTEGER NOT NULL, "
    "word VARCHAR NOT NULL, count BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS run_vectors (run_id VARCHAR NOT NULL, word VARCHAR NOT NULL, "
    "vector FLOAT[] NOT NULL)",
)

# The current run: its vectors in cell order with their cell, and the cells' centroids
# (replaced with the run's dim when a run becomes current; empty until one does).
_CURRENT_TABLES = """
CREATE OR REPLACE TABLE current_vectors (cell INTEGER, word VARCHAR, vector FLOAT[{dim:d}]);
CREATE OR REPLACE TABLE vector_cells (cell INTEGER, centroid FLOAT[{dim:d}]);
"""

# An index on the word: looking one up is a fraction of a millisecond at a million words.
_WORD_INDEX = "CREATE INDEX current_vectors_word ON current_vectors (word)"

_VIEWS = """
CREATE OR REPLACE VIEW vocab AS
SELECT id, word, count FROM run_vocab
WHERE run_id = (SELECT run_id FROM runs WHERE is_current);
CREATE OR REPLACE VIEW vectors AS SELECT word, vector FROM current_vectors;
"""

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

# The searches of the current run, by cosine similarity, ties broken by word. `candidates` is
# every word (exact) or the words of the `probes` cells whose centroids are nearest the query
# (approximate). The analogy's query is unit(a) - unit(b) + unit(c); FLOAT[n] has no
# arithmetic, so it is built as a list and cast back to the run's array type.
_SEARCH_MACROS = """
CREATE OR REPLACE MACRO neighbors_exact(w, k) AS TABLE
{neighbors}
CREATE OR REPLACE MACRO neighbors_approx(w, k, probes := {probes:d}) AS TABLE
{neighbors_approx}
CREATE OR REPLACE MACRO analogy_exact(a, b, c, k) AS TABLE
{analogy}
CREATE OR REPLACE MACRO analogy_approx(a, b, c, k, probes := {probes:d}) AS TABLE
{analogy_approx}
CREATE OR REPLACE MACRO neighbors(w, k) AS TABLE SELECT * FROM neighbors_{default}(w, k);
CREATE OR REPLACE MACRO analogy(a, b, c, k) AS TABLE SELECT * FROM analogy_{default}(a, b, c, k);
"""

_NEIGHBORS_QUERY = "WITH q AS MATERIALIZED (SELECT vector FROM current_vectors WHERE word = w)"

_ANALOGY_QUERY = """WITH u AS (
    SELECT word, vector, sqrt(array_inner_product(vector, vector)) AS norm
    FROM (
        SELECT * FROM current_vectors WHERE word = a
        UNION ALL SELECT * FROM current_vectors WHERE word = b
        UNION ALL SELECT * FROM current_vectors WHERE word = c
    )
), q AS MATERIALIZED (
    SELECT list_transform(
        list_zip(ua.vector::FLOAT[], ub.vector::FLOAT[], uc.vector::FLOAT[]),
        lambda t: t[1] / ua.norm - t[2] / ub.norm + t[3] / uc.norm
    )::FLOAT[{dim:d}] AS vector
    FROM u AS ua, u AS ub, u AS uc
    WHERE ua.word = a AND ub.word = b AND uc.word = c
)"""

_NEAR_CELLS = """, near AS (
    SELECT c.cell FROM vector_cells AS c, q
    ORDER BY array_cosine_similarity(c.centroid, q.vector) DESC
    LIMIT probes
)"""

# The query's own words are dropped after ranking: a filter on the word inside would be
# applied to every row scanned, decoding every word.
_RANKED = """
SELECT word, similarity FROM (
    SELECT v.word, array_cosine_similarity(v.vector, q.vector) AS similarity
    FROM current_vectors AS v, q
    {where}
    ORDER BY similarity DESC, v.word
    LIMIT k::BIGINT + {inputs:d}
)
WHERE {keep}
ORDER BY similarity DESC, word
LIMIT k;"""


@dataclass(frozen=True)
class RunColumns:
    """What the `runs` table holds of every run."""

    run_id: str
    started_at: datetime
    finished_at: datetime
    corpus: list[str]
    params: dict[str, Any]
    metrics: dict[str, Any]
    vocab_path: Path  # Parquet: id int32, word string, count int64 (ordered by count desc)
    vectors_path: Path  # Parquet: word string, vector fixed_size_list<float32>[dim]
    dim: int


@dataclass(frozen=True)
class RunRecord(RunColumns):
    """A finished run, to register in the warehouse."""

    classifier: list[dict[str, Any]] = field(default_factory=list)  # a row per mode
    evaluations: list[dict[str, Any]] = field(default_factory=list)  # a row per benchmark metric
    promoted: bool = False  # made current by an operator, whatever the gate said


def register_run(
    run: RunRecord,
    status: str = "current",
    db: Path | None = None,
    index_min_words: int = INDEX_MIN_WORDS,
) -> None:
    """Record `run` in the `runs` table with `status`, its vocabulary and vectors, its
    classifier metrics and its benchmark scores, all in one transaction: a reader sees the
    run before or after, never half of it. 'current' makes it the run the views and search
    macros serve (split into cells from `index_min_words` words); 'kept' and 'rejected'
    leave them. Every run stays queryable by id through `run_vectors` and `run_neighbors`.
    Registering a run_id again replaces its rows (a run that was current stays current)."""
    if status not in STATUSES:
        raise QuijoteError(f"unknown run status {status!r}: use one of {', '.join(STATUSES)}")
    db = _database(db)
    vocab = _data_file(run.vocab_path, db.parent)
    vectors = _data_file(run.vectors_path, db.parent)
    if run.dim < 1:
        raise QuijoteError(f"run {run.run_id}: dim must be positive, got {run.dim}")
    file_dim = pq.read_schema(vectors).field("vector").type.list_size
    current = (
        _current_tables(*read_vectors(vectors), index_min_words) if status == "current" else None
    )
    with _writing(db) as conn:
        try:
            _create_tables(conn, db.parent, index_min_words)  # even a failed one leaves it
            if file_dim != run.dim:
                raise QuijoteError(
                    f"cannot register run {run.run_id}: its vectors have dim {file_dim}, "
                    f"not {run.dim}"
                )
            conn.begin()
            was_current = conn.execute(
                "SELECT count(*) > 0 FROM runs WHERE run_id = ? AND is_current", [run.run_id]
            ).fetchone() == (True,)
            if was_current and current is None:
                current = _current_tables(*read_vectors(vectors), index_min_words)
            if current is not None:
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
                    vocab.relative_to(db.parent).as_posix(),
                    vectors.relative_to(db.parent).as_posix(),
                    run.dim,
                    "current" if current is not None else status,
                    run.finished_at if run.promoted else None,
                ],
            )
            _copy_run(conn, run.run_id, vocab, vectors)
            if current is not None:
                _make_current(conn, current, run.dim)
            _replace_rows(
                conn, "classifier_metrics", run.run_id, CLASSIFIER_COLUMNS, run.classifier
            )
            _replace_rows(conn, "evaluations", run.run_id, EVALUATION_COLUMNS, run.evaluations)
            conn.commit()
        except duckdb.Error as error:  # closing without COMMIT rolls everything back
            raise QuijoteError(f"cannot register run {run.run_id}: {first_line(error)}") from error


def promote(run_id: str, db: Path | None = None, index_min_words: int = INDEX_MIN_WORDS) -> None:
    """Make a registered run (kept or rejected) the current one by hand, in one transaction;
    `runs.promoted_at` records when. The run's vectors come from the warehouse itself."""
    with _changing(db, f"promote run {run_id}", index_min_words) as conn:
        words, vectors = _run_vectors(conn, run_id)
        current = _current_tables(words, vectors, index_min_words)
        conn.execute("UPDATE runs SET status = 'kept' WHERE is_current")
        conn.execute(
            "UPDATE runs SET status = 'current', promoted_at = now() WHERE run_id = ?", [run_id]
        )
        _make_current(conn, current, vectors.shape[1])


def prune(keep: int, db: Path | None = None) -> list[str]:
    """Drop the vocabulary and vectors of every run but the current one and the `keep` most
    recent others, in one transaction; their `runs` rows, classifier metrics and scores stay.
    Returns the pruned run ids. DuckDB reuses the freed space for later runs' rows, so a
    warehouse pruned after each run stops growing."""
    if keep < 0:
        raise QuijoteError(f"keep must be 0 or more, got {keep}")
    with _changing(db, "prune the warehouse") as conn:
        pruned = [run_id for (run_id,) in conn.execute(_PRUNABLE, [keep]).fetchall()]
        for table in ("run_vocab", "run_vectors"):
            conn.execute(f"DELETE FROM {table} WHERE list_contains(?, run_id)", [pruned])
    return pruned


def runs_without_vectors(db: Path | None = None) -> list[str]:
    """The runs registered whose vectors are no longer in the warehouse (pruned), oldest
    first; none when there is no warehouse."""
    db = _database(db)
    if not db.exists():
        return []
    with closing(connect_read_only(db)) as conn:
        rows = conn.execute(_WITHOUT_VECTORS).fetchall()
    return [run_id for (run_id,) in rows]


_WITHOUT_VECTORS = """
SELECT run_id FROM runs
WHERE NOT is_current AND run_id NOT IN (SELECT DISTINCT run_id FROM run_vectors)
ORDER BY finished_at, run_id"""

# Runs with vectors in the warehouse, except the current one and the ? most recent others.
_PRUNABLE = """
SELECT run_id FROM runs
WHERE NOT is_current AND run_id IN (SELECT DISTINCT run_id FROM run_vectors)
ORDER BY finished_at DESC, run_id DESC
OFFSET ?"""


@dataclass(frozen=True)
class _Current:
    """A run about to become current: its vectors in cell order, the cells, the search."""

    vectors: pa.Table  # cell int32, word string, vector fixed_size_list<float32>[dim]
    cells: pa.Table  # cell int32, centroid fixed_size_list<float32>[dim]
    default: str  # 'exact' or 'approx'


def _current_tables(words: list[str], vectors: np.ndarray, index_min_words: int) -> _Current:
    """The current-run tables of these vectors: one cell below `index_min_words` words."""
    indexed = len(words) >= index_min_words
    built = build_cells(vectors) if indexed else None
    cell = built.cell if built else np.zeros(len(words), np.int32)
    centroids = built.centroids if built else unit_rows(vectors.sum(0, keepdims=True))
    order = np.argsort(cell, kind="stable")
    return _Current(
        vectors=pa.table(
            {
                "cell": cell[order],
                "word": pa.array(words).take(order),
                "vector": vector_array(vectors[order]),
            }
        ),
        cells=pa.table(
            {"cell": np.arange(len(centroids), dtype=np.int32), "centroid": vector_array(centroids)}
        ),
        default="approx" if indexed else "exact",
    )


def _make_current(conn: duckdb.DuckDBPyConnection, current: _Current, dim: int) -> None:
    """Fill the current-run tables and point the search macros at them."""
    conn.execute(_CURRENT_TABLES.format(dim=dim))
    conn.register("new_vectors", current.vectors)
    conn.register("new_cells", current.cells)
    try:
        conn.execute("INSERT INTO current_vectors SELECT * FROM new_vectors")
        conn.execute("INSERT INTO vector_cells SELECT * FROM new_cells")
    finally:
        conn.unregister("new_vectors")
        conn.unregister("new_cells")
    conn.execute(_WORD_INDEX)
    conn.execute(_search_macros(dim, current.default))


def _search_macros(dim: int, default: str) -> str:
    analogy = _ANALOGY_QUERY.format(dim=dim)
    by_cell = "WHERE v.cell IN (SELECT cell FROM near)"
    neighbors = {"inputs": 1, "keep": "word <> w"}
    analogies = {"inputs": 3, "keep": "word NOT IN (a, b, c)"}
    return _SEARCH_MACROS.format(
        neighbors=_NEIGHBORS_QUERY + _RANKED.format(where="", **neighbors),
        neighbors_approx=_NEIGHBORS_QUERY
        + _NEAR_CELLS
        + _RANKED.format(where=by_cell, **neighbors),
        analogy=analogy + _RANKED.format(where="", **analogies),
        analogy_approx=analogy + _NEAR_CELLS + _RANKED.format(where=by_cell, **analogies),
        probes=PROBES,
        default=default,
    )


def _copy_run(conn: duckdb.DuckDBPyConnection, run_id: str, vocab: Path, vectors: Path) -> None:
    """The run's vocabulary and vectors into the warehouse (replacing any earlier copy)."""
    for table in ("run_vocab", "run_vectors"):
        conn.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
    conn.execute(
        "INSERT INTO run_vocab SELECT ?, id, word, count FROM read_parquet(?)",
        [run_id, str(vocab)],
    )
    conn.execute(
        "INSERT INTO run_vectors SELECT ?, word, vector::FLOAT[] FROM read_parquet(?)",
        [run_id, str(vectors)],
    )


def run_vectors(run_id: str, db: Path | None = None) -> tuple[list[str], np.ndarray]:
    """A registered run's words and vectors, from the warehouse's own copy."""
    with closing(connect_read_only(db)) as conn:
        return _run_vectors(conn, run_id)


def _run_vectors(conn: duckdb.DuckDBPyConnection, run_id: str) -> tuple[list[str], np.ndarray]:
    row = conn.execute("SELECT dim FROM runs WHERE run_id = ?", [run_id]).fetchone()
    if row is None:
        raise QuijoteError(f"no run {run_id!r} in the warehouse (see: SELECT * FROM runs)")
    table = conn.execute(
        "SELECT word, vector FROM run_vectors WHERE run_id = ? ORDER BY rowid", [run_id]
    ).to_arrow_table()
    if table.num_rows == 0:
        _no_vectors(conn, run_id)
    flat = table["vector"].combine_chunks().flatten().to_numpy()
    return table["word"].to_pylist(), flat.astype(np.float32).reshape(-1, row[0])


def _no_vectors(conn: duckdb.DuckDBPyConnection, run_id: str) -> None:
    """Raise why `run_id` has no vectors in the warehouse, if it has none: no such run, or
    pruned, or registered before the copies with its files gone since."""
    known = conn.execute("SELECT count(*) FROM runs WHERE run_id = ?", [run_id])
    if known.fetchone() == (0,):
        raise QuijoteError(f"no run {run_id!r} in the warehouse (see: SELECT * FROM runs)")
    held = conn.execute("SELECT count(*) FROM run_vectors WHERE run_id = ?", [run_id])
    if held.fetchone() == (0,):
        raise QuijoteError(
            f"run {run_id} has no vectors in the warehouse (pruned, or its files are gone)"
        )


def _create_tables(conn: duckdb.DuckDBPyConnection, data_dir: Path, index_min_words: int) -> None:
    """The schema, with what older warehouses lack."""
    for ddl in (_RUNS_TABLE, _PROMOTED_COLUMN, _CLASSIFIER_TABLE, _EVALUATIONS_TABLE):
        conn.execute(ddl)
    if _has_view(conn, "run_vectors"):  # views over Parquet by absolute path: copy the runs in
        _copy_older_runs(conn, data_dir, index_min_words)
    for ddl in _RUN_TABLES:
        conn.execute(ddl)
    if not _has_table(conn, "current_vectors"):
        conn.execute(_CURRENT_TABLES.format(dim=1))
    conn.execute(_VIEWS)
    conn.execute(_RUN_NEIGHBORS_MACRO)


def _copy_older_runs(conn: duckdb.DuckDBPyConnection, data_dir: Path, index_min_words: int) -> None:
    """A warehouse from before the copies: each run whose files are still there copied into
    the tables (the current one made current again), its paths made relative."""
    conn.begin()
    for view in ("vocab", "vectors", "run_vectors"):
        conn.execute(f"DROP VIEW IF EXISTS {view}")
    for ddl in _RUN_TABLES:
        conn.execute(ddl)
    runs = conn.execute("SELECT run_id, vocab_path, vectors_path, dim, is_current FROM runs")
    for run_id, vocab, vectors, dim, is_current in runs.fetchall():
        vocab, vectors = Path(vocab), Path(vectors)
        if not (vocab.is_file() and vectors.is_file()):
            continue
        _copy_run(conn, run_id, vocab, vectors)
        if is_current:
            _make_current(conn, _current_tables(*read_vectors(vectors), index_min_words), dim)
        if vocab.is_relative_to(data_dir) and vectors.is_relative_to(data_dir):
            conn.execute(
                "UPDATE runs SET vocab_path = ?, vectors_path = ? WHERE run_id = ?",
                [
                    vocab.relative_to(data_dir).as_posix(),
                    vectors.relative_to(data_dir).as_posix(),
                    run_id,
                ],
            )
    conn.commit()


def _has_view(conn: duckdb.DuckDBPyConnection, name: str) -> bool:
    found = conn.execute(
        "SELECT count(*) FROM duckdb_views() WHERE NOT internal AND view_name = ?", [name]
    ).fetchone()
    return found == (1,)


def _has_table(conn: duckdb.DuckDBPyConnection, name: str) -> bool:
    found = conn.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name])
    return found.fetchone() == (1,)


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


def neighbors(
    word: str, k: int = 10, db: Path | None = None, exact: bool = False
) -> list[tuple[str, float]]:
    """The k words of the current run closest to `word` by cosine similarity (searched by
    cell from INDEX_MIN_WORDS words unless `exact`)."""
    macro = "neighbors_exact" if exact else "neighbors"
    return _similar(f"SELECT word, similarity FROM {macro}(?, ?)", [word], k, db)


def analogy(
    a: str, b: str, c: str, k: int = 10, db: Path | None = None, exact: bool = False
) -> list[tuple[str, float]]:
    """a - b + c (3CosAdd): analogy('rey', 'hombre', 'mujer') looks for 'reina'."""
    macro = "analogy_exact" if exact else "analogy"
    return _similar(f"SELECT word, similarity FROM {macro}(?, ?, ?, ?)", [a, b, c], k, db)


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
                _no_vectors(conn, run_id)
                raise QuijoteError(f"'{word}' is not in the vocabulary of run {run_id}")
            rows = conn.execute("SELECT * FROM run_neighbors(?, ?, ?)", [run_id, word, k])
            return [(w, float(similarity)) for w, similarity in rows.fetchall()]
        except duckdb.Error as error:
            raise QuijoteError(first_line(error)) from error


@dataclass(frozen=True)
class RegisteredRun(RunColumns):
    """A `runs` row as read back: params and metrics decoded, paths resolved in the data
    directory wherever it now is."""

    status: str  # one of STATUSES
    promoted_at: datetime | None  # when an operator last made it current (None: never)


def current_run(db: Path | None = None) -> RegisteredRun | None:
    """The current run, or None when there is no warehouse or no current run."""
    return find_run(None, db)


def find_run(run_id: str | None, db: Path | None = None) -> RegisteredRun | None:
    """The run `run_id` (None: the current run); None when there is no warehouse or no such
    run."""
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
    return RegisteredRun(
        run_id=record["run_id"],
        started_at=record["started_at"],
        finished_at=record["finished_at"],
        corpus=record["corpus"],
        params=json.loads(record["params"]),
        metrics=json.loads(record["metrics"]),
        vocab_path=db.parent / record["vocab_path"],
        vectors_path=db.parent / record["vectors_path"],
        dim=record["dim"],
        status=record["status"],
        promoted_at=record.get("promoted_at"),  # absent from a warehouse not written since
    )


def _database(db: Path | None) -> Path:
    return (db or warehouse_path()).resolve()


@contextmanager
def _writing(db: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-write connection, for up to WRITE_WAIT_S: first the lock file exclusively (new
    readers now wait behind this writer, so a stream of them cannot starve it), then the
    database once the readers already in have closed it."""
    deadline = time.monotonic() + WRITE_WAIT_S
    db.parent.mkdir(parents=True, exist_ok=True)
    with _turnstile(db, fcntl.LOCK_EX, deadline), closing(_open(db, False, deadline)) as conn:
        # Stored as they are: a search by cell reads whole chunks of 2,048 vectors, and
        # DuckDB's float compression (ALP-RD) saves little on them and slows that down.
        conn.execute("SET force_compression = 'uncompressed'")
        yield conn


@contextmanager
def _changing(
    db: Path | None, doing: str, index_min_words: int = INDEX_MIN_WORDS
) -> Iterator[duckdb.DuckDBPyConnection]:
    """One write transaction on an existing warehouse, its schema brought up to date first;
    committed when the block ends, rolled back if it raises; a DuckDB error is one line,
    "cannot <doing>: …"."""
    db = _database(db)
    if not db.exists():
        raise QuijoteError(f"no warehouse yet at {db}: run `quijote run` first")
    with _writing(db) as conn:
        try:
            _create_tables(conn, db.parent, index_min_words)
            conn.begin()
            yield conn
            conn.commit()
        except duckdb.Error as error:  # closing without COMMIT rolls everything back
            raise QuijoteError(f"cannot {doing}: {first_line(error)}") from error


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
            if "Could not set lock" not in str(error):
                raise QuijoteError(f"cannot open the warehouse: {first_line(error)}") from error
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            raise QuijoteError(_busy(str(error), read_only)) from error


def _busy(error: str, read_only: bool) -> str:
    """The warehouse still locked at the deadline, said without DuckDB's hints (its CLI's
    -readonly flag): who holds it (the pid DuckDB names) and what to do."""
    pid = re.search(r"\(PID (\d+)\)", error)
    holder = f"another process (pid {pid[1]})" if pid else "another process"
    doing = (
        "is writing to it (a run, promote or prune)"
        if read_only
        else "has it open (a query or a run)"
    )
    return f"the warehouse is busy: {holder} {doing}; try again when it ends"


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
                        "the warehouse is busy: another process is writing to it (a run, "
                        "promote or prune); try again when it ends"
                    ) from None
                time.sleep(0.05)
        yield  # closing the file releases the lock


def _data_file(path: Path, data_dir: Path) -> Path:
    """`path` resolved, checked to be a file inside the data directory (`runs` records it
    relative to that directory, which find_run resolves wherever the directory now is)."""
    resolved = Path(path).resolve()
    if not resolved.is_file():
        raise QuijoteError(f"cannot read {path}: no such file")
    if not resolved.is_relative_to(data_dir):
        raise QuijoteError(f"cannot use {path}: it is outside the data directory {data_dir}")
    return resolved


def _similar(sql: str, words: list[str], k: int, db: Path | None) -> list[tuple[str, float]]:
    """Call a similarity macro after checking that every word is in the current run."""
    if k < 1:
        raise QuijoteError(f"k must be at least 1, got {k}")
    with closing(connect_read_only(db)) as conn:
        try:
            if conn.execute("SELECT count(*) FROM runs WHERE is_current").fetchone() == (0,):
                raise QuijoteError("the warehouse has no current run: run `quijote run` first")
            for word in words:  # one lookup each: the word's index answers it
                found = conn.execute("SELECT count(*) FROM vectors WHERE word = ?", [word])
                if found.fetchone() == (0,):
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
