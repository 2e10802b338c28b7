"""Publish stage: a run directory (manifest, links to the stage outputs it used, word2vec
export) and the run's registration in the DuckDB warehouse."""

from __future__ import annotations

import importlib.metadata
import platform
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NONE

from quijote.params import Params
from storage import warehouse
from storage.files import atomic_path, write_json
from storage.paths import runs_dir
from storage.stages import StageOutput

LIBRARIES = ("torch", "prefect", "duckdb", "pyarrow", "numpy")


def word2vec_lines(words: list[str], vectors: np.ndarray) -> Iterator[str]:
    """The word2vec text format: a 'count dim' header, then 'word v1 v2 …' per line."""
    yield f"{len(words)} {vectors.shape[1]}\n"
    for word, vector in zip(words, vectors, strict=True):
        yield word + " " + " ".join(f"{x:.6g}" for x in vector) + "\n"


def read_vectors(path: Path) -> tuple[list[str], np.ndarray]:
    table = pq.read_table(path)
    column = table["vector"].combine_chunks()
    dim = column.type.list_size
    return table["word"].to_pylist(), column.flatten().to_numpy().reshape(-1, dim)


def write_word2vec(vectors_parquet: Path, out: Path) -> int:
    """Export a vectors Parquet file as word2vec text (gensim's `load_word2vec_format`)."""
    words, vectors = read_vectors(vectors_parquet)
    with atomic_path(out) as tmp, tmp.open("w", encoding="utf-8") as f:
        f.writelines(word2vec_lines(words, vectors))
    return len(words)


def new_run_id() -> str:
    """Sortable by time, unique by a random suffix."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def stage_summary(stages: Mapping[str, StageOutput]) -> dict[str, dict[str, Any]]:
    """Per stage: its key, whether this run reused it, and the seconds it took to build."""
    return {
        name: {"key": s.key, "reused": s.reused, "seconds": s.meta.get("seconds")}
        for name, s in stages.items()
    }


@task(name="publish", cache_policy=NONE)
def publish_task(
    run_id: str,
    started_at: datetime,
    corpus: list[str],
    params: Params,
    stages: dict[str, StageOutput],
) -> dict[str, Any]:
    """Write the run directory and make the run the warehouse's current one."""
    run_dir = runs_dir() / run_id
    links = run_dir / "stages"
    links.mkdir(parents=True)
    for name, output in stages.items():
        (links / name).symlink_to(output.path, target_is_directory=True)
    vectors_path = stages["train"].file("vectors.parquet")
    write_word2vec(vectors_path, run_dir / "vectors.txt")
    trained = stages["train"].meta
    metrics = {
        "corpus_words": stages["tokenize"].meta["tokens"],
        "sentences": stages["tokenize"].meta["sentences"],
        "vocab_size": stages["vocab"].meta["words"],
        "pairs": stages["pairs"].meta["pairs"],
        "loss_per_epoch": trained["loss_per_epoch"],
        "device": trained["device"],
        "train_seconds": trained["train_seconds"],
    }
    finished_at = datetime.now(UTC)
    manifest = {
        "run_id": run_id,
        "started_at": started_at,
        "finished_at": finished_at,
        "corpus": corpus,
        "inputs": stages["download"].meta["inputs"],
        "params": params.to_dict(),
        "stages": stage_summary(stages),
        "metrics": metrics,
        "libraries": {name: importlib.metadata.version(name) for name in LIBRARIES},
        "python": platform.python_version(),
        "machine": platform.platform(),
    }
    write_json(run_dir / "manifest.json", manifest)
    warehouse.register_run(
        warehouse.RunRecord(
            run_id=run_id,
            started_at=started_at,
            finished_at=finished_at,
            corpus=corpus,
            params=params.to_dict(),
            metrics=metrics,
            vocab_path=stages["vocab"].file("vocab.parquet"),
            vectors_path=vectors_path,
            dim=params.dim,
        )
    )
    return {**manifest, "run_dir": str(run_dir)}


def write_projector(vectors_parquet: Path, directory: Path) -> int:
    """TensorBoard projector files: `vectors.tsv` (one vector per line) and `metadata.tsv`."""
    words, vectors = read_vectors(vectors_parquet)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / "vectors.tsv") as tmp, tmp.open("w", encoding="utf-8") as f:
        f.writelines("\t".join(f"{x:.6g}" for x in vector) + "\n" for vector in vectors)
    with atomic_path(directory / "metadata.tsv") as tmp:
        tmp.write_text("".join(word + "\n" for word in words), encoding="utf-8")
    return len(words)
