"""Publish stage: a run directory (manifest, links to the stage outputs it used, word2vec
export) and the run's registration in the DuckDB warehouse: as the current run when it passed
the quality gate (or an operator promotes it), else as a rejected run (kept, and queryable by
id). The directory gets its final name only once the run is registered."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from quijote.params import Params
from storage import warehouse
from storage.files import abandoned, temporary_directory, write_json
from storage.paths import RUN_STAGES, RUN_VECTORS, run_classifier_dir, runs_dir
from storage.pruning import Pruned, prune
from storage.stages import StageOutput, Stages, shards, total
from storage.vectors import read_vectors, write_word2vec
from tasks.gate import Verdict

LIBRARIES = ("torch", "prefect", "duckdb", "pyarrow", "numpy")


@dataclass(frozen=True)
class StageRun:
    """A stage in a run: its key (a list, one per shard, for a per-shard stage), whether the
    run reused it (every shard), and the seconds it took to build (summed over shards)."""

    key: str | list[str]
    reused: bool
    seconds: float


@dataclass(frozen=True)
class Metrics:
    """A run's numbers, as its manifest and the warehouse's `runs` table record them."""

    documents: int
    corpus_words: int
    sentences: int
    vocab_size: int
    pairs: int
    loss_per_epoch: list[float]
    heldout_loss_per_epoch: list[float]
    heldout_loss: float | None
    heldout_set: str
    evaluation: list[dict[str, Any]]  # score rows (tasks.evaluate.score_rows); [] for none
    gate: Verdict
    promoted: bool
    device: str
    train_seconds: float
    classifier: list[dict[str, Any]] | None = None  # rows per mode, when the run trained one

    def to_dict(self) -> dict[str, Any]:
        """As JSON: without a classifier key when the run trained none."""
        metrics = asdict(self)
        if self.classifier is None:
            del metrics["classifier"]
        return metrics


@dataclass(frozen=True)
class ClassifierRun:
    """What the report needs of the classify stage: rows per mode, data, label, model."""

    rows: list[dict[str, Any]]
    data: str
    label_column: str
    model_dir: Path


@dataclass(frozen=True)
class Manifest:
    """A published run, as its manifest.json records it."""

    run_id: str
    status: str  # current or rejected
    started_at: datetime
    finished_at: datetime
    corpus: list[str]
    inputs: list[str]  # the sha256 of each corpus document
    params: dict[str, Any]
    stages: dict[str, StageRun]
    metrics: Metrics
    libraries: dict[str, str]
    python: str
    machine: str

    def to_json(self) -> dict[str, Any]:
        """manifest.json's content."""
        plain = asdict(self)
        manifest = {f.name: plain[f.name] for f in fields(Manifest)}
        return manifest | {"metrics": self.metrics.to_dict()}


@dataclass(frozen=True)
class RunSummary(Manifest):
    """A published run: its manifest, where its files are, its classifier, and once the
    report stage ran, the probe words' neighbours and the report's path."""

    run_dir: Path
    vectors_path: Path
    classifier: ClassifierRun | None
    neighbours: dict[str, list[str]] = field(default_factory=dict)
    report: Path | None = None


def new_run_id() -> str:
    """Sortable by time, unique by a random suffix."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def stage_summary(stages: Stages) -> dict[str, StageRun]:
    """Per stage that ran: its key(s), whether this run reused it, its seconds."""
    summary = {}
    for name, output in stages.items():
        parts = shards(output)
        keys = [p.key for p in parts]
        summary[name] = StageRun(
            key=keys[0] if len(keys) == 1 else keys,
            reused=all(p.reused for p in parts),
            seconds=round(sum(p.meta.get("seconds", 0) for p in parts), 3),
        )
    return summary


@task(name="publish", cache_policy=NONE)
def publish_task(
    run_id: str,
    started_at: datetime,
    corpus: list[str],
    params: Params,
    stages: Stages,
    verdict: Verdict,
    promote: bool = False,
) -> RunSummary:
    """Write the run directory under a temporary name, register the run (current if it passed
    the gate, or with `promote` whatever the gate said), then rename the directory into place:
    if the registration fails, no run directory is left."""
    run_dir = runs_dir() / run_id
    vectors_path = stages.train.file("vectors.parquet")
    trained = stages.train.meta
    heldout = trained["heldout_loss_per_epoch"]
    classifier = _classifier(stages.classify, run_id)
    metrics = Metrics(
        documents=stages.download.meta["documents"],
        corpus_words=total(stages.tokenize, "tokens"),
        sentences=total(stages.tokenize, "sentences"),
        vocab_size=stages.vocab.meta["words"],
        pairs=total(stages.pairs, "pairs"),
        loss_per_epoch=trained["loss_per_epoch"],
        heldout_loss_per_epoch=heldout,
        heldout_loss=heldout[-1] if heldout else None,
        heldout_set=trained["heldout_set"],
        evaluation=stages.evaluate.meta["rows"] if stages.evaluate else [],
        gate=verdict,
        promoted=promote,
        device=trained["device"],
        train_seconds=trained["train_seconds"],
        classifier=classifier.rows if classifier else None,
    )
    summary = RunSummary(
        run_id=run_id,
        status="current" if verdict.passed or promote else "rejected",
        started_at=started_at,
        finished_at=datetime.now(UTC),
        corpus=corpus,
        inputs=stages.download.meta["inputs"],
        params=params.to_dict(),
        stages=stage_summary(stages),
        metrics=metrics,
        libraries={name: importlib.metadata.version(name) for name in LIBRARIES},
        python=platform.python_version(),
        machine=platform.platform(),
        run_dir=run_dir,
        vectors_path=vectors_path,
        classifier=classifier,
    )
    record = warehouse.RunRecord(
        run_id=run_id,
        started_at=started_at,
        finished_at=summary.finished_at,
        corpus=corpus,
        params=params.to_dict(),
        metrics=metrics.to_dict(),
        vocab_path=stages.vocab.file("vocab.parquet"),
        vectors_path=vectors_path,
        dim=params.dim,
        classifier=classifier.rows if classifier else [],
        evaluations=metrics.evaluation,
        promoted=promote,
    )
    _finish_killed_publishes()
    with temporary_directory(runs_dir(), run_id) as work:
        _link_stages(work / RUN_STAGES, stages)
        write_word2vec(*read_vectors(vectors_path), work / RUN_VECTORS)
        write_json(work / "manifest.json", summary.to_json())
        # Registered before the rename: a run directory under its final name is always a
        # registered run. A failed registration (the warehouse busy past its wait) leaves no
        # run directory (the temporary one is removed; the stages are kept for the next run);
        # a process killed before it leaves only its temporary one, swept by a later run,
        # and one killed after it a complete one that a later run renames into place.
        warehouse.register_run(record, summary.status)
        os.rename(work, run_dir)
    return summary


def _finish_killed_publishes() -> None:
    """Rename into place the run directories of runs registered by a process killed before it
    renamed them (complete, under their temporary names). Before the sweep of abandoned
    temporary directories, which would remove them; a warehouse too busy to tell fails the
    publish, as its registration would."""
    runs = runs_dir()
    if not runs.is_dir():
        return
    for run_id, tmp in abandoned(runs):
        if not (runs / run_id).exists() and warehouse.find_run(run_id) is not None:
            os.rename(tmp, runs / run_id)


@task(name="prune", cache_policy=NONE)
def prune_task(keep: int) -> Pruned:
    """Drop the vectors of all runs but the current one and the `keep` most recent others, and
    the files only they used (storage.pruning.prune); logged in one line."""
    pruned = prune(keep)
    get_run_logger().info(pruned.describe())
    return pruned


def _link_stages(links: Path, stages: Stages) -> None:
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


def _classifier(output: StageOutput | None, run_id: str) -> ClassifierRun | None:
    if output is None:
        return None
    meta = output.meta
    return ClassifierRun(
        meta["rows"], meta["data"], meta["label_column"], run_classifier_dir(run_id)
    )
