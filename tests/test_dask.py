"""The Dask path: data-prep stages mapped over corpus shards on a local cluster of 2 workers
give the same vocabulary, pairs and vectors as the single-process path."""

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from flows.quijote_embeddings import on_dask, quijote_embeddings
from storage.vectors import read_vectors
from tasks.publish import RunSummary
from tests.data import CORPORA, first_words

pytestmark = pytest.mark.slow

NOVELS = ("eltec_spa/marianela.txt", "eltec_spa/trafalgar.txt", "gutenberg_es/niebla.txt")
PARAMS = {"epochs": 2, "dim": 12, "min_count": 3, "threads": 1}  # one thread: reproducible


@pytest.fixture
def corpus(tmp_path: Path) -> str:
    books = tmp_path / "books"
    books.mkdir()
    for name in NOVELS:
        text = (CORPORA / name).read_text(encoding="utf-8-sig")
        (books / Path(name).name).write_text(first_words(text, 8_000), encoding="utf-8")
    return str(books)


def stage_file(home: Path, summary: RunSummary, stage: str, name: str, shard: int = 0) -> Path:
    key = summary.stages[stage].key
    return home / "stages" / stage / (key[shard] if isinstance(key, list) else key) / name


def test_dask_gives_the_same_results_as_one_process(
    prefect_api, corpus: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = {}
    for mode, run in (("single", quijote_embeddings), ("dask", on_dask(workers=2))):
        home = tmp_path / mode
        monkeypatch.setenv("QUIJOTE_HOME", str(home))
        results[mode] = (home, run((corpus,), PARAMS, labelled=None))
    (single_home, single), (dask_home, dask) = results["single"], results["dask"]
    assert single.metrics.documents == 3
    keys = [{name: s.key for name, s in r.stages.items()} for r in (single, dask)]
    assert keys[0] == keys[1]  # the same cache key for every stage and shard
    vocab = [pq.read_table(stage_file(h, s, "vocab", "vocab.parquet")) for h, s in results.values()]
    assert vocab[0].equals(vocab[1])
    for shard in range(3):
        for name in ("epoch-000.parquet", "epoch-001.parquet", "heldout.parquet"):
            ours = pq.read_table(stage_file(single_home, single, "pairs", name, shard))
            theirs = pq.read_table(stage_file(dask_home, dask, "pairs", name, shard))
            assert ours.num_rows > 0 and ours.equals(theirs), (shard, name)
    words, vectors = read_vectors(stage_file(single_home, single, "train", "vectors.parquet"))
    dask_words, dask_vectors = read_vectors(stage_file(dask_home, dask, "train", "vectors.parquet"))
    assert words == dask_words and np.allclose(vectors, dask_vectors, atol=1e-5)
