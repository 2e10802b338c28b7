"""Labelled tables: where they are (a path, or a path inside the corpus mirror) and the named
columns of a CSV or Parquet file, with one clear error for a file that is missing, unreadable,
not UTF-8 or without the column."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
            only = pacsv.ConvertOptions(include_columns=list(columns))
            table = pacsv.read_csv(path, _CSV_READ, _CSV_PARSE, only)
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


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() == ".parquet"


def _csv_header(path: Path) -> list[str]:
    """The names in a CSV file's first row (quoted names may hold line breaks, a byte-order
    mark is dropped), read by Python's csv module: Arrow's reader would infer a type for
    every column first."""
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
        return next(csv.reader(f), [])
