"""Publish stage: a run directory (manifest, links to the stage outputs it used, word2vec
export) and the run's registration in the DuckDB warehouse: as the current run when it passed
the quality gate (or an operator promotes it), else as a rejected run (kept, and queryable by
id)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NONE

from quijote.params import Params
from storage import warehouse
from storage.files import temporary_directory, write_json
from storage.paths import run_classifier_dir, runs_dir
from storage.stages import StageOutput, shards, total
from storage.vectors import write_word2vec
from tasks.gate import Verdict

LIBRARIES = ("torch", "prefect", "duckdb", "pyarrow", "numpy")


def new_run_id() -> str:
    """Sortable by time, unique by a random suffix."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def stage_summary(stages: Mapping[str, StageOutput | list[StageOutput]]) -> dict[str, Any]:
    """Per stage: its key(s), whether this run reused it (every shard), and the seconds it
    took to build (summed over shards)."""
    summary = {}
    for name, output in stages.items():
        parts = shards(output)
        keys = [p.key for p in parts]
        summary[name] = {
            "key": keys[0] if len(keys) == 1 else keys,
            "reused": all(p.reused for p in parts),
            "seconds": round(sum(p.meta.get("seconds", 0) for p in parts), 3),
        }
    return summary


@task(name="publish", cache_policy=NONE)
def publish_task(
    run_id: str,
    started_at: datetime,
    corpus: list[str],
    params: Params,
    stages: dict[str, StageOutput | list[StageOutput]],
    verdict: Verdict,
    promote: bool = False,
) -> dict[str, Any]:
    """Write the run directory (under a temporary name, renamed when complete) and register
    the run (current if it passed the gate, or with `promote` whatever the gate said)."""
    run_dir = runs_dir() / run_id
    vectors_path = stages["train"].file("vectors.parquet")
    trained = stages["train"].meta
    heldout = trained["heldout_loss_per_epoch"]
    metrics = {
        "documents": stages["download"].meta["documents"],
        "corpus_words": total(stages["tokenize"], "tokens"),
        "sentences": total(stages["tokenize"], "sentences"),
        "vocab_size": stages["vocab"].meta["words"],
        "pairs": total(stages["pairs"], "pairs"),
        "loss_per_epoch": trained["loss_per_epoch"],
        "heldout_loss_per_epoch": heldout,
        "heldout_loss": heldout[-1] if heldout else None,
        "heldout_set": trained["heldout_set"],
        "evaluation": stages["evaluate"].meta["rows"] if "evaluate" in stages else [],
        "gate": verdict.to_dict(),
        "promoted": promote,
        "device": trained["device"],
        "train_seconds": trained["train_seconds"],
    }
    classifier = _classifier(stages.get("classify"), run_id)
    if classifier:
        metrics["classifier"] = classifier["rows"]
    finished_at = datetime.now(UTC)
    status = "current" if verdict.passed or promote else "rejected"
    manifest = {
        "run_id": run_id,
        "status": status,
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
    with temporary_directory(runs_dir(), run_id) as work:
        _link_stages(work / "stages", stages)
        write_word2vec(vectors_path, work / "vectors.txt")
        write_json(work / "manifest.json", manifest)
        os.rename(work, run_dir)
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
            classifier=classifier["rows"] if classifier else [],
            evaluations=metrics["evaluation"],
            promoted=promote,
        ),
        status,
    )
    return {
        **manifest,
        "run_dir": str(run_dir),
        "vectors_path": str(vectors_path),
        "classifier": classifier,
    }


def _link_stages(links: Path, stages: dict[str, StageOutput | list[StageOutput]]) -> None:
    """`links/<stage>` -> the stage's output directory (`links/<stage>/<shard>` per shard).
    The links are relative, so they hold when the data directory moves (and when the run's
    temporary directory is renamed: it is a sibling of the final one)."""
    links.mkdir()
    for name, output in stages.items():
        parts = shards(output)
        if len(parts) == 1 and not isinstance(output, list):
            _link(links / name, output.path)
            continue
        (links / name).mkdir()
        for shard, part in enumerate(parts):
            _link(links / name / f"{shard:05d}", part.path)


def _link(link: Path, target: Path) -> None:
    link.symlink_to(os.path.relpath(target, link.parent), target_is_directory=True)


def _classifier(output: StageOutput | list[StageOutput] | None, run_id: str) -> dict | None:
    """What the report needs of the classify stage: rows per mode, data, label, model."""
    if not isinstance(output, StageOutput):
        return None
    meta = output.meta
    return {
        "rows": meta["rows"],
        "data": meta["data"],
        "label_column": meta["label_column"],
        "model_dir": str(run_classifier_dir(run_id)),
    }
