"""Read-only SQL on the warehouse, as `quijote sql` runs it: every statement is checked before
any runs (only SELECT, and EXPLAIN of a SELECT, pass), results are streamed rather than held
(a preview of the first and last rows with the row count, or the whole result written by
DuckDB as CSV, JSON lines or Parquet), and Ctrl-C or a timeout interrupts the query."""

from __future__ import annotations

import re
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import duckdb
import pyarrow as pa

from quijote.errors import QuijoteError, first_line
from storage.files import atomic_path
from storage.warehouse import connect_read_only

T = TypeVar("T")
FORMATS = ("csv", "json", "parquet")  # what `export` writes: DuckDB's COPY formats
BATCH_ROWS = 65_536  # rows fetched at a time while counting a preview
COUNT_BUDGET_S = 5.0  # a preview stops counting rows after this long and says so
POLL_S = 0.05  # how often the waiting looks for Ctrl-C, the timeout and the query's end

# The keywords before the statement an EXPLAIN wraps (leading comments, ANALYZE, options).
_EXPLAIN_PREFIX = re.compile(
    r"(?:\s|--[^\n]*|/\*.*?\*/)*EXPLAIN(?:\s+ANALYZE)?(?:\s*\([^)]*\))?", re.IGNORECASE | re.DOTALL
)


@dataclass(frozen=True)
class Preview:
    """The first and last rows of a result and how many rows it has."""

    columns: list[str]
    head: list[tuple]
    tail: list[tuple]  # empty when every row is in `head` or the count stopped
    rows: int  # rows counted
    counted: bool  # False: the count stopped after COUNT_BUDGET_S; `rows` is a lower bound


def query(sql: str, db: Path | None = None) -> tuple[list[str], list[tuple]]:
    """Column names and every row of the last statement (for small results)."""
    with closing(connect_read_only(db)) as conn:
        return _run(conn, sql, lambda last: (_columns(conn.execute(last)), conn.fetchall()))


def preview(
    sql: str, max_rows: int = 40, timeout: float | None = None, db: Path | None = None
) -> Preview:
    """At most `max_rows` rows of the last statement (the first half and the last half when
    there are more) and the row count, in memory bounded by BATCH_ROWS rows."""

    def scan(last: duckdb.Statement) -> Preview:
        columns = _columns(conn.execute(last))
        keep_last = max_rows // 2
        first: list[pa.RecordBatch] = []
        last_batches: deque[pa.RecordBatch] = deque()
        rows, kept, stop = 0, 0, time.monotonic() + COUNT_BUDGET_S
        for batch in conn.to_arrow_reader(BATCH_ROWS):
            if rows < max_rows:
                first.append(batch.slice(0, max_rows - rows))
            rows += batch.num_rows
            last_batches.append(batch)
            kept += batch.num_rows
            while len(last_batches) > 1 and kept - last_batches[0].num_rows >= keep_last:
                kept -= last_batches.popleft().num_rows
            if time.monotonic() > stop:
                return Preview(columns, _rows(first), [], rows, False)
        if rows <= max_rows:
            return Preview(columns, _rows(first), [], rows, True)
        tail = _rows(list(last_batches))[-keep_last:] if keep_last else []
        return Preview(columns, _rows(first)[: max_rows - keep_last], tail, rows, True)

    if max_rows < 1:
        raise QuijoteError(f"max_rows must be at least 1, got {max_rows}")
    with closing(connect_read_only(db)) as conn:
        return _run(conn, sql, scan, timeout)


def export(
    sql: str, fmt: str, target: Path, timeout: float | None = None, db: Path | None = None
) -> int:
    """Write the whole result of the last statement to `target` in `fmt`, streamed by
    DuckDB. A file appears only once complete; a pipe or device (/dev/stdout) is written as
    it comes. Returns the number of rows written."""
    if fmt not in FORMATS:
        raise QuijoteError(f"unknown format {fmt!r}: use {', '.join(FORMATS)}")

    def copy(path: Path) -> int:
        path = path.absolute()
        with closing(connect_read_only(db, writable=path)) as conn:

            def write(last: duckdb.Statement) -> int:
                if last.type == duckdb.StatementType.EXPLAIN:
                    raise QuijoteError(
                        "--format writes the rows of a query: run EXPLAIN without it"
                    )
                # query() also takes DESCRIBE, SHOW, SUMMARIZE and PRAGMA; fmt is one of FORMATS
                copy_sql = (
                    f"COPY (SELECT * FROM query($2)) TO $1 (FORMAT {fmt}, USE_TMP_FILE false)"
                )
                result = conn.execute(copy_sql, [str(path), last.query])
                (count,) = result.fetchone() or (0,)
                return int(count)

            return _run(conn, sql, write, timeout)

    with atomic_path(target) as path:
        return copy(path)


def _run(
    conn: duckdb.DuckDBPyConnection, sql: str, last: Callable[[duckdb.Statement], T],
    timeout: float | None = None,
) -> T:  # fmt: skip
    """Check every statement, then run all but the last and call `last` on the last one, in
    a thread: Ctrl-C or `timeout` seconds interrupt the query (a KeyboardInterrupt, or a
    QuijoteError naming the timeout)."""

    def work() -> T:
        statements = _read_statements(conn, sql)
        for statement in statements[:-1]:
            conn.execute(statement)
        return last(statements[-1])

    deadline = None if timeout is None else time.monotonic() + timeout
    with ThreadPoolExecutor(1) as pool, _ctrl_c() as pressed:
        future = pool.submit(work)
        while not pressed and (deadline is None or time.monotonic() < deadline):
            try:
                return future.result(POLL_S)
            except FutureTimeout:
                continue
            except duckdb.Error as error:
                if pressed:  # the query stopped by Ctrl-C
                    break
                raise QuijoteError(first_line(error)) from error
        _interrupt(conn, future)
    if pressed:
        raise KeyboardInterrupt
    raise QuijoteError(f"query stopped after {timeout:g} s (--timeout)")


@contextmanager
def _ctrl_c() -> Iterator[list[bool]]:
    """A list that Ctrl-C (SIGINT) makes true, instead of raising KeyboardInterrupt in the
    middle of the waiting (inside a lock of the future's, which its thread then waits on
    forever); a second Ctrl-C raises as usual. Only in the main thread, where signals go."""
    pressed: list[bool] = []
    if threading.current_thread() is not threading.main_thread():
        yield pressed
        return

    def press(signum: int, frame: object) -> None:
        pressed.append(True)
        signal.signal(signal.SIGINT, previous)

    previous = signal.signal(signal.SIGINT, press)
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, previous)


def _interrupt(conn: duckdb.DuckDBPyConnection, future: Future[T]) -> None:
    """Interrupt the connection until the work stops (it may be between two statements)."""
    while not future.done():
        conn.interrupt()
        wait([future], POLL_S)


def _read_statements(conn: duckdb.DuckDBPyConnection, sql: str) -> list[duckdb.Statement]:
    statements = conn.extract_statements(sql)
    if not statements:
        raise QuijoteError("no SQL statement given")
    for statement in statements:
        kind = _effective_type(conn, statement)
        if kind != duckdb.StatementType.SELECT:
            raise QuijoteError(f"quijote sql is read-only: {kind.name} statements are not allowed")
    return statements


def _effective_type(
    conn: duckdb.DuckDBPyConnection, statement: duckdb.Statement
) -> duckdb.StatementType:
    """The statement's type, looking through EXPLAIN (EXPLAIN ANALYZE runs what it explains)."""
    if statement.type != duckdb.StatementType.EXPLAIN:
        return statement.type
    prefix = _EXPLAIN_PREFIX.match(statement.query)
    inner = conn.extract_statements(statement.query[prefix.end() :]) if prefix else []
    return _effective_type(conn, inner[0]) if len(inner) == 1 else statement.type


def _columns(conn: duckdb.DuckDBPyConnection) -> list[str]:
    return [column[0] for column in conn.description or []]


def _rows(batches: list[pa.RecordBatch]) -> list[tuple]:
    """Batches as row tuples (by position: a result may repeat a column name)."""
    if not batches:
        return []
    table = pa.Table.from_batches(batches)
    return list(zip(*(column.to_pylist() for column in table.columns), strict=True))
