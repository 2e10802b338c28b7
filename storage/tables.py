"""Labelled tables: where they are (a path, or a path inside the corpus mirror) and the named
columns of a CSV or Parquet file, with one clear error for a file that is missing, unreadable,
not UTF-8, without the column or with a quote left open; and what the Arrow readers (here and
the corpus's) share: the quote tracking of CSV, and Python files lent to Arrow."""

from __future__ import annotations

import atexit
import codecs
import csv
import re
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from quijote.errors import QuijoteError, first_line
from storage.paths import mirror_dir

DEFAULT_LABELLED = "labelled/spanish_fake_news_v1_train.csv"  # inside the corpus mirror
_CSV_READ = pacsv.ReadOptions(block_size=1 << 24)  # a header row may be up to 16 MiB long
_CSV_PARSE = pacsv.ParseOptions(newlines_in_values=True)


@dataclass(frozen=True)
class Labelled:
    """A labelled table: its file and the names of its text and label columns."""

    path: Path
    text_column: str = "Text"
    label_column: str = "Topic"


def find_labelled(name: str, text_column: str, label_column: str) -> Labelled | None:
    """The labelled table `name`: a file, else a file of that relative path inside the corpus
    mirror (`../` cannot leave it); None when `name` is the default and the mirror does not
    have it (no classifier then), an error for any other name that is not a file, and for a
    table without either column (only its header is read: this fails before any work)."""
    path = Path(name).expanduser()
    mirror = mirror_dir()
    inside = (mirror / name).resolve() if mirror and not path.is_absolute() else None
    if not path.is_file() and inside and inside.is_relative_to(mirror.resolve()):
        path = inside
    if path.is_file():
        check_columns(path.resolve(), [text_column, label_column])
        return Labelled(path.resolve(), text_column, label_column)
    if name == DEFAULT_LABELLED:
        return None
    raise QuijoteError(f"no labelled file {name!r} (a path, or a path inside {mirror})")


def read_columns(path: Path, columns: Sequence[str]) -> dict[str, list[Any]]:
    """The named columns of a Parquet file (suffix .parquet) or a CSV file (anything else:
    UTF-8, header row, quoted fields may hold line breaks) as Python lists. Only those columns
    are parsed: a table of a million columns costs no more than one of two."""
    if not path.is_file():
        raise QuijoteError(f"no such file: {path}")
    check_columns(path, columns)
    try:
        if _is_parquet(path):
            table = pq.read_table(path, columns=list(columns))
        else:
            table = _read_csv(path, columns)
    except (pa.ArrowException, OSError) as error:
        raise QuijoteError(f"cannot read {path}: {first_line(error)}") from None
    for column in columns:
        kind = table[column].type
        if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
            raise QuijoteError(f"cannot read {path}: column {column!r} is not UTF-8 text")
    return {column: table[column].to_pylist() for column in columns}


def check_columns(path: Path, columns: Sequence[str]) -> None:
    """A one-line error unless the table at `path` has all of `columns`, reading only its
    header: a Parquet file's schema, a CSV file's first row."""
    try:
        names = pq.read_schema(path).names if _is_parquet(path) else _csv_header(path)
    except (pa.ArrowException, OSError, csv.Error) as error:
        raise QuijoteError(f"cannot read {path}: {first_line(error)}") from None
    for column in columns:
        if column not in names:
            shown = ", ".join(map(repr, names[:20])) or "none"
            more = " …" if len(names) > 20 else ""
            raise QuijoteError(f"no column {column!r} in {path}; its columns: {shown}{more}")


def _read_csv(path: Path, columns: Sequence[str]) -> pa.Table:
    """The named columns of a CSV file; a quoted value still open at its end is an error (Arrow
    would take the rest of the file as that value)."""
    only = pacsv.ConvertOptions(include_columns=list(columns))
    with path.open("rb") as raw:
        if raw.read(len(codecs.BOM_UTF8)) != codecs.BOM_UTF8:
            raw.seek(0)
        return pacsv.read_csv(
            for_arrow(QuoteTracker(raw, str(path), ",", line=1)), _CSV_READ, _CSV_PARSE, only
        )


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() == ".parquet"


def _csv_header(path: Path) -> list[str]:
    """The names in a CSV file's first row (quoted names may hold line breaks, a byte-order
    mark is dropped), read by Python's csv module: Arrow's reader would infer a type for
    every column first."""
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
        return next(csv.reader(f), [])


_QUOTED_TEXT = re.compile(rb'[^"]*+(?:""[^"]*+)*+')  # a quoted value up to its closing quote


class QuoteTracker:
    """A CSV file's bytes from `line` on, handed on to Arrow, its quoted values followed
    as Arrow parses them: a quote opens a value only at a field's start, the next quote not
    doubled closes it (the rest of the field up to a delimiter or line end is unquoted). The
    end of the file inside a quoted value is an error: Arrow would take the rest of the file
    as that value. A block costs a few regular-expression scans, not Python work per field."""

    def __init__(self, stream: BinaryIO, source: str, delimiter: str, line: int) -> None:
        self.stream, self.source = stream, source
        sep = re.escape(delimiter).encode()
        end, rest = b"[%s\r\n]" % sep, b"[^%s\r\n]*+" % sep
        quoted = b'"' + _QUOTED_TEXT.pattern + b'"' + rest
        unquoted = b'[^"%s\r\n]' % sep + rest
        self.fields = re.compile(b"(?:(?:%s|%s)?+%s)*+" % (quoted, unquoted, end))  # each ended
        self.field_end = re.compile(end)
        self.separators = (delimiter.encode(), b"\n", b"\r")
        self.line = line  # the file's line at the start of the next block
        self.inside = False  # in a quoted value
        self.quote_line = 0  # the line where the last quoted value began
        self.field_start = True  # the next byte starts a field
        self.after_quote = False  # the last byte was a closing quote (or half of a `""`)

    @property
    def closed(self) -> bool:  # Arrow reads a Python file while it is open
        return self.stream.closed

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        if not data and size and self.inside:
            raise QuijoteError(
                f"unclosed quote in {self.source} from line {self.quote_line}: end the quoted "
                'field with " (and write a " inside it as "")'
            )
        at, end = 0, len(data)
        if data and self.after_quote:
            self.after_quote = False
            if data[0] == ord('"'):  # `""` across two blocks: the same value goes on
                self.inside, at = True, 1
        while at < end:
            if self.inside:
                close = _QUOTED_TEXT.match(data, at).end()  # at its closing quote, or the end
                if close == end:
                    break
                at = close + 1
                self.inside, self.field_start, self.after_quote = False, False, at == end
            elif data.find(b'"', at) < 0:  # no quote left: only how the block ends matters
                self.field_start = data[-1:] in self.separators
                break
            elif not self.field_start:  # in a field: on from its end
                field_end = self.field_end.search(data, at)
                if field_end is None:
                    break
                at, self.field_start = field_end.end(), True
            else:
                at = self.fields.match(data, at).end()  # past the fields this block ends
                if at < end:  # a field that does not end in this block
                    self.field_start = False
                    if data[at] == ord('"'):
                        self.quote_line = self.line + data.count(b"\n", 0, at)
                        self.inside, at = True, at + 1
        self.line += data.count(b"\n")
        return data


class _Lent:
    """A Python file as Arrow's threads read it (its attributes are the file's)."""

    __slots__ = ("__weakref__", "_file")

    def __init__(self, file: BinaryIO | QuoteTracker) -> None:
        self._file = file

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


_LENT: weakref.WeakSet[_Lent] = weakref.WeakSet()


def for_arrow(file: BinaryIO | QuoteTracker) -> _Lent:
    """`file` to hand to an Arrow reader. Arrow's threads may let go of a Python file after
    the reader is done (a read-ahead in flight); if that happens while the interpreter exits,
    the process aborts ("terminate called without an active exception", apache/arrow#34314),
    so the exit waits for them. What Arrow holds is this wrapper, never referenced by Python
    (an error's traceback holds the file's frames, not it): while it lives, Arrow holds it."""
    lent = _Lent(file)
    _LENT.add(lent)
    return lent


@atexit.register
def _wait_for_arrow(timeout_s: float = 5.0) -> None:
    """Wait (the GIL released) until Arrow's threads have let go of every file lent to them."""
    deadline = time.monotonic() + timeout_s
    while _LENT and time.monotonic() < deadline:
        time.sleep(0.001)
