"""storage/files.py: Parquet as the stages write it, and where an atomic write may go."""

import os
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from quijote.errors import QuijoteError
from storage import schemas
from storage.files import Tally, atomic_path, read_row_groups, write_parquet


def encodings(path: Path) -> dict[str, set[str]]:
    group = pq.ParquetFile(path).metadata.row_group(0)
    columns = (group.column(i) for i in range(group.num_columns))
    return {column.path_in_schema: set(column.encodings) for column in columns}


def test_only_words_are_dictionary_encoded_and_everything_reads_back(tmp_path: Path) -> None:
    sentences = pa.record_batch(
        [pa.array([1, 2], pa.int64()), pa.array([["el", "rey"], ["el"]])], schema=schemas.SENTENCES
    )
    column = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(6, dtype=np.float32)), 3)
    vectors = pa.record_batch([pa.array(["el", "rey"]), column], schema=schemas.vectors(3))
    pairs = pa.record_batch(
        [pa.array([0, 1], pa.int32()), pa.array([1, 0], pa.int32())], schema=schemas.PAIRS
    )
    dictionary = "RLE_DICTIONARY"
    for name, batch, words in (
        ("sentences", sentences, {"tokens.list.element"}),
        ("vectors", vectors, {"word"}),
        ("pairs", pairs, set()),
    ):
        path = tmp_path / f"{name}.parquet"
        assert write_parquet(path, batch.schema, [batch, batch]) == 4
        assert {c for c, found in encodings(path).items() if dictionary in found} == words
        assert pa.Table.from_batches(read_row_groups(path)).equals(
            pa.Table.from_batches([batch, batch])
        )


def test_a_tally_counts_rows_and_list_values_as_the_batches_are_written(tmp_path: Path) -> None:
    lists = pa.list_(pa.string())
    batches = [
        pa.record_batch([pa.array([1, 2], pa.int64()), pa.array([["a", "b"], []], lists)],
                        names=["id", "tokens"]),
        pa.record_batch([pa.array([3], pa.int64()), pa.array([["c", "d", "e"]], lists)],
                        names=["id", "tokens"]),
    ]  # fmt: skip
    tally = Tally(iter(batches), "tokens")
    assert write_parquet(tmp_path / "t.parquet", batches[0].schema, tally) == 3
    assert (tally.rows, tally.values) == (3, 5)
    written = pq.read_table(tmp_path / "t.parquet")["tokens"].to_pylist()
    assert written == [["a", "b"], [], ["c", "d", "e"]]


def test_an_atomic_write_through_a_link_replaces_its_target_and_keeps_the_link(
    tmp_path: Path,
) -> None:
    target, link = tmp_path / "target.txt", tmp_path / "link.txt"
    target.write_text("old")
    link.symlink_to(target.name)
    with atomic_path(link) as tmp:
        tmp.write_text("new")
    assert link.is_symlink() and target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.txt", "target.txt"]


def test_an_atomic_write_to_a_pipe_goes_through_it(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    with atomic_path(fifo) as path:
        path.write_text("rows\n")
    reader.join(10)
    assert received == ["rows\n"] and fifo.is_fifo()
    assert [p.name for p in tmp_path.iterdir()] == ["fifo"]


def test_a_place_that_cannot_hold_the_file_is_one_line_before_writing(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("kept")
    places = [
        (tmp_path, "it is a directory"),
        (tmp_path / "file.txt" / "v.txt", "file.txt is not a directory"),
        (tmp_path / "file.txt" / "a" / "v.txt", "file.txt is not a directory"),
    ]
    if Path("/proc/self").exists():  # a virtual file system takes no new file
        places.append((Path("/proc/v.txt"), "no file can be made in /proc"))
    for final, message in places:
        with pytest.raises(QuijoteError, match=message), atomic_path(final) as tmp:
            tmp.write_text("never")
    assert (tmp_path / "file.txt").read_text() == "kept"
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]  # no probe left behind


def test_an_atomic_write_gets_the_permissions_of_a_new_file(tmp_path: Path) -> None:
    """Not mkstemp's private 0600: what `open` makes under the umask (0666 & ~umask)."""
    plain = tmp_path / "plain.txt"
    plain.write_text("")
    with atomic_path(tmp_path / "atomic.txt") as tmp:
        tmp.write_text("rows\n")
    mode = (tmp_path / "atomic.txt").stat().st_mode & 0o777
    assert mode == plain.stat().st_mode & 0o777 == 0o666 & ~umask()


def umask() -> int:
    """The process's umask (reading it means setting it: set back at once)."""
    current = os.umask(0o022)
    os.umask(current)
    return current
