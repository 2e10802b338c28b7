"""Atomic file output: everything is written under a temporary name, then renamed, so a
reader (or a killed run) never sees a half-written file, and a full disk is one clear error."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from quijote.errors import QuijoteError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
T, R = TypeVar("T"), TypeVar("R")
ABANDONED_AFTER_S = 60.0  # a younger unlocked temporary directory may be about to be locked
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextmanager
def space_for(target: Path) -> Iterator[None]:
    """Turn a full disk (or quota) while writing `target` into a one-line QuijoteError."""
    try:
        yield
    except OSError as error:
        if error.errno not in NO_SPACE:
            raise
        raise QuijoteError(
            f"no space left on the device for {target}: free some space and run again "
            "(finished stages are kept)"
        ) from None


def check_writable(final: Path) -> None:
    """Raise, before any work, the QuijoteError that writing the file `final` would meet: it
    is a directory, a parent is a file, or no file can be made in the nearest existing
    directory (no permission, a read-only or virtual file system: a file is made there and
    removed to know). A pipe or a device is written in place: it needs only to be writable."""
    nearest = _check_place(final)
    if nearest is not None:
        fd, probe = _new_file(final, nearest, ".quijote-probe-")
        os.close(fd)
        os.unlink(probe)


def _check_place(final: Path) -> Path | None:
    """The checks of check_writable that make no file; returns the nearest existing directory,
    None for a pipe or a device."""
    if final.is_dir():
        raise QuijoteError(f"cannot write {final}: it is a directory; name a file")
    if final.exists() and not final.is_file():
        if not os.access(final, os.W_OK):
            raise QuijoteError(f"cannot write {final}: permission denied")
        return None
    nearest = next(p for p in final.absolute().parents if p.exists())
    if not nearest.is_dir():
        raise QuijoteError(f"cannot write {final}: {nearest} is not a directory")
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise QuijoteError(f"cannot write {final}: permission denied in {nearest}")
    return nearest


def _new_file(final: Path, directory: Path, prefix: str, suffix: str = "") -> tuple[int, str]:
    """A new private file in `directory` (mkstemp), to write `final`; one line where none can
    be made."""
    try:
        return tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
    except OSError as error:
        reason = error.strerror or str(error)
        message = f"cannot write {final}: no file can be made in {directory} ({reason})"
        raise QuijoteError(message) from None


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it to `final` only if the block succeeds
    (with the permissions of a new file: mkstemp makes it private); a symbolic link gets its
    target replaced, not itself. A pipe or a device (/dev/stdout) is yielded itself, to be
    written as the output comes. A place that cannot hold the file (a directory, a parent
    that is a file, no permission) is a QuijoteError."""
    if final.exists() and not final.is_file() and not final.is_dir():
        yield final
        return
    _check_place(final)  # its own temporary file is the probe check_writable makes
    if final.is_symlink():
        final = final.resolve()
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise QuijoteError(f"cannot write {final}: {error.strerror or error}") from None
    fd, tmp = _new_file(final, final.parent, f".{final.name}.", ".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with space_for(final):
            yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, final)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def temporary_directory(parent: Path, name: str) -> Iterator[Path]:
    """A new empty directory `parent/.tmp-<name>-<random>` to build something in, then rename
    into place within the block; whatever is left of it afterwards is removed. It is locked
    while the block runs, so that temporary directories left in `parent` by killed processes
    (SIGKILL, a power cut) can be told apart and are removed first."""
    parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(parent)
    directory = parent / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
    directory.mkdir()
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # the system drops it when the process ends, however
        yield directory
    finally:
        os.close(fd)
        remove_tree(directory)


def _remove_abandoned(parent: Path) -> None:
    """Delete the temporary directories in `parent` that no live process holds."""
    for _, tmp in abandoned(parent):
        remove_tree(tmp)


def abandoned(parent: Path) -> Iterator[tuple[str, Path]]:
    """The temporary directories in `parent` that no live process holds, with the name each
    was building, each locked while the caller handles it. One younger than
    ABANDONED_AFTER_S may still be about to be locked by its builder: it is left alone."""
    for tmp in parent.glob(".tmp-*"):
        try:
            if time.time() - tmp.stat().st_mtime < ABANDONED_AFTER_S:
                continue
            fd = os.open(tmp, os.O_RDONLY)
        except OSError:  # gone meanwhile
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # being built
            os.close(fd)
            continue
        try:
            yield tmp.name.removeprefix(".tmp-").rpartition("-")[0], tmp
        finally:
            os.close(fd)


def write_json(path: Path, value: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")


class Tally:
    """Record batches passed through as they stream (to `write_parquet`), counting their rows
    and the values in the lists of one column (a sentence's tokens)."""

    def __init__(self, batches: Iterable[pa.RecordBatch], column: str) -> None:
        self.batches, self.column = batches, column
        self.rows = self.values = 0

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        for batch in self.batches:
            self.rows += batch.num_rows
            self.values += len(batch.column(self.column).flatten())
            yield batch


def write_parquet(
    path: Path,
    schema: pa.Schema,
    batches: Iterable[pa.RecordBatch],
    compression: str = "zstd",
) -> int:
    """Stream record batches into one Parquet file (one row group per batch); return rows.
    Large strings (whole documents) get no min/max statistics: each would copy the value.
    Only words are dictionary-encoded: on ids and floats a dictionary makes the files larger
    and slower to read."""
    rows = 0
    statistics = [f.name for f in schema if not pa.types.is_large_string(f.type)]
    words = [path for f in schema for path in _word_columns(f)]
    with (
        atomic_path(path) as tmp,
        pq.ParquetWriter(
            tmp, schema, compression=compression, use_dictionary=words, write_statistics=statistics
        ) as writer,
    ):
        for batch in batches:
            writer.write_batch(batch.cast(schema) if batch.schema != schema else batch)
            rows += batch.num_rows
    return rows


def _word_columns(field: pa.Field) -> list[str]:
    """The Parquet column path of `field` when it holds words: a string, or a list of strings
    (sentences); none otherwise."""
    if pa.types.is_string(field.type):
        return [field.name]
    if pa.types.is_list(field.type) and pa.types.is_string(field.type.value_type):
        return [f"{field.name}.list.element"]
    return []


def read_row_groups(path: Path) -> Iterator[pa.RecordBatch]:
    """A Parquet file's rows a row group at a time, as `write_parquet` wrote them: memory is
    bounded by the writer's batches (`iter_batches` merges row groups into 65,536 rows)."""
    file = pq.ParquetFile(path)
    for group in range(file.num_row_groups):
        yield from file.read_row_group(group).to_batches()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def disk_bytes(path: Path) -> int:
    """Disk use of the file `path`, or of everything under the directory `path` (allocated
    blocks, as du counts; links not followed); 0 when there is nothing there."""
    if path.is_file():
        return path.lstat().st_blocks * 512
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):  # renamed or removed meanwhile
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


def mapped_ahead(function: Callable[[T], R], items: Iterable[T], threads: int) -> Iterator[R]:
    """`function(item)` for each item, in order, computed by `threads` threads at most
    `threads` items ahead of the caller (memory stays bounded)."""
    pending = iter(items)
    with ThreadPoolExecutor(threads) as pool:
        ahead = deque(pool.submit(function, item) for item in islice(pending, threads))
        while ahead:
            result = ahead.popleft().result()
            ahead.extend(pool.submit(function, item) for item in islice(pending, 1))
            yield result
