"""`quijote train`'s wiring: the per-shard stages run in forked workers and give exactly what
one process gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import flows.train_stages
from flows.train_stages import train_stages
from quijote.params import Params
from storage.vectors import read_vectors
from tests.data import quijote_slice

PARAMS = Params.from_mapping({"dim": 8, "epochs": 2, "min_count": 2, "threads": 1, "device": "cpu"})


def three_documents(directory: Path) -> Path:
    words = quijote_slice(9_000).split()
    directory.mkdir()
    for i in range(3):
        part = " ".join(words[i * 3_000 : (i + 1) * 3_000])
        (directory / f"parte-{i}.txt").write_text(part + "\n", encoding="utf-8")
    return directory


def test_shards_in_workers_give_the_vectors_of_one_process(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = [str(three_documents(tmp_path / "corpus"))]
    pooled = train_stages(corpus, PARAMS, orchestrated=False)
    assert len(pooled["tokenize"]) == len(pooled["pairs"]) == 3

    monkeypatch.setenv("QUIJOTE_HOME", str(tmp_path / "serial"))
    monkeypatch.setattr(flows.train_stages.os, "cpu_count", lambda: 1)  # no workers
    serial = train_stages(corpus, PARAMS, orchestrated=False)

    assert [s.meta["pairs"] for s in pooled["pairs"]] == [s.meta["pairs"] for s in serial["pairs"]]
    words, vectors = read_vectors(pooled["train"].file("vectors.parquet"))
    serial_words, serial_vectors = read_vectors(serial["train"].file("vectors.parquet"))
    assert words == serial_words and np.array_equal(vectors, serial_vectors)
