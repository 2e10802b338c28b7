from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from storage.schemas import PAIRS
from tasks.negatives import NegativeSampler
from tasks.train import from_row, pair_batches, pair_blocks, to_vectors_table


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Pairs (r, r+1 mod 1000) for rows r of an epoch, in three files; blocks of 128 rows."""
    monkeypatch.setattr("tasks.train.BLOCK_ROWS", 128)
    center = np.arange(1000, dtype=np.int32)
    context = (center + 1) % 1000
    paths = []
    for s, e in ((0, 300), (300, 310), (310, 1000)):
        paths.append(tmp_path / f"{s}.parquet")
        table = pa.table([pa.array(center[s:e]), pa.array(context[s:e])], schema=PAIRS)
        pq.write_table(table, paths[-1])
    return paths


def test_batches_cover_every_pair_once_with_row_aligned_negatives(files: list[Path]) -> None:
    sampler = NegativeSampler(np.full(1000, 1 / 1000), k=4, seed=5)
    batches = list(pair_batches(pair_blocks(files), sampler, 0, batch_size=32, seed=5))
    center = np.concatenate([b[0] for b in batches])
    context = np.concatenate([b[1] for b in batches])
    negatives = np.concatenate([b[2] for b in batches])
    assert max(len(b[0]) for b in batches) == 32
    assert np.array_equal(np.sort(center), np.arange(1000))  # every pair once, shuffled
    assert not np.array_equal(center, np.arange(1000))
    assert np.array_equal(context, (center + 1) % 1000)
    # the negatives of file row r are the sampler's draws for row r of the epoch: reproducible
    assert np.array_equal(negatives, sampler.draw(0, 0, 1000)[center])
    again = list(pair_batches(pair_blocks(files), sampler, 0, batch_size=32, seed=5))
    assert all(np.array_equal(a[2], b[2]) for a, b in zip(batches, again, strict=True))


def test_an_epoch_goes_on_from_any_batch_as_it_would_have(files: list[Path]) -> None:
    sampler = NegativeSampler(np.full(1000, 1 / 1000), k=4, seed=5)
    batches = list(pair_batches(pair_blocks(files), sampler, 0, batch_size=32, seed=5))
    starts = np.cumsum([0] + [len(b[0]) for b in batches])
    for i in (1, 4, 9, 13, len(batches) - 1):
        tail = list(pair_batches(pair_blocks(files, starts[i]), sampler, 0, 32, 5, starts[i]))
        assert len(tail) == len(batches) - i
        assert all(np.array_equal(a[2], b[2]) for a, b in zip(tail, batches[i:], strict=True))
    for start in (0, 5, 300, 305, 310, 999, 1000):
        center = np.concatenate([[], *(c for c, _ in from_row(pair_blocks(files, start), start))])
        assert np.array_equal(center, np.arange(start, 1000))


def test_vectors_table_round_trip() -> None:
    vectors = np.arange(6, dtype=np.float32).reshape(3, 2)
    table = to_vectors_table(pa.array(["a", "b", "c"]), vectors)
    assert table.schema.field("vector").type == pa.list_(pa.float32(), 2)
    assert table["vector"].to_pylist() == vectors.tolist()
