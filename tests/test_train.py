from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.train_stages import train_stages
from models.skipgram_torch import host_blocks
from quijote.params import Params
from storage.schemas import PAIRS
from storage.vectors import read_vectors
from tasks.train import from_row, pair_blocks, row_groups
from tests.data import quijote_slice


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Pairs (r, r+1 mod 1000) for rows r of an epoch, in three files of row groups of 100
    rows; blocks of 128 rows."""
    monkeypatch.setattr("tasks.train.BLOCK_ROWS", 128)
    center = np.arange(1000, dtype=np.int32)
    context = (center + 1) % 1000
    paths = []
    for s, e in ((0, 300), (300, 310), (310, 1000)):
        paths.append(tmp_path / f"{s}.parquet")
        table = pa.table([pa.array(center[s:e]), pa.array(context[s:e])], schema=PAIRS)
        pq.write_table(table, paths[-1], row_group_size=100)
    return paths


def test_device_blocks_hold_the_pairs_in_file_order_and_resume_at_a_block(
    files: list[Path],
) -> None:
    """The GPU path reads the files' row groups in threads and regroups them into (rows, 2)
    tensors of 300 pairs; from a block's first row on, the same blocks follow."""

    def device_blocks(start: int) -> list[np.ndarray]:
        blocks = host_blocks(from_row(row_groups(files, start, 2), start), 300, pin=False)
        return [rows.numpy() for (rows,) in blocks]

    blocks = device_blocks(0)
    assert [len(b) for b in blocks] == [300, 300, 300, 100]
    rows = np.concatenate(blocks)
    assert np.array_equal(rows[:, 0], np.arange(1000))
    assert np.array_equal(rows[:, 1], (rows[:, 0] + 1) % 1000)
    for i in (1, 2, 3):
        tail = device_blocks(300 * i)
        assert all(np.array_equal(a, b) for a, b in zip(tail, blocks[i:], strict=True))


def test_the_cpu_path_goes_on_from_any_row(files: list[Path]) -> None:
    for start in (0, 5, 300, 305, 310, 999, 1000):
        center = np.concatenate([[], *(c for c, _ in from_row(pair_blocks(files, start), start))])
        assert np.array_equal(center, np.arange(start, 1000))


def test_torch_device_trains_the_gpu_code_on_the_cpu(home: Path, tmp_path: Path) -> None:
    """`device=torch`: the train stage runs TorchTrainer on the CPU, keyed apart from the CPU
    kernel's vectors, and records where its time went."""
    corpus = tmp_path / "slice.txt"
    corpus.write_text(quijote_slice(20_000), encoding="utf-8")
    params = {"dim": 16, "epochs": 2, "min_count": 3, "threads": 1}
    trained = train_stages([str(corpus)], Params(**params, device="torch"), False).train
    kernel = train_stages([str(corpus)], Params(**params, device="cpu"), False).train
    assert trained.meta["device"] == "torch" and kernel.meta["device"] == "cpu"
    assert trained.key != kernel.key
    assert trained.meta["device_seconds"] > 0 and trained.meta["waiting_seconds"] >= 0
    assert trained.meta["loss_per_epoch"][1] < trained.meta["loss_per_epoch"][0]
    _, vectors = read_vectors(trained.file("vectors.parquet"))
    assert np.isfinite(vectors).all()
