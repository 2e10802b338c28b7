"""The publish stage: a run directory under its final name is always a registered run."""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

import storage.files
import tasks.publish
from quijote.errors import QuijoteError
from quijote.params import Params
from storage import warehouse
from storage.files import ABANDONED_AFTER_S
from storage.paths import runs_dir, warehouse_path
from storage.stages import StageOutput, Stages
from tasks.gate import Verdict
from tasks.publish import RunSummary, publish_task, stage_summary
from tests.data import OTHER_VECTORS, OTHER_WORDS, VECTORS, WORDS, make_run, warehouse_held

# What `quijote sql` holds while its query runs: a read-only connection, which keeps a writer out.
RUN_ID = "20261202T073837-9bdbca"


@pytest.fixture
def stages(home: Path) -> Stages:
    """A current run in the warehouse, and the stages of a new run (one shard, no evaluate or
    classify) whose vocab and vectors are real files."""
    warehouse.register_run(make_run(home / "stages", "run-1", OTHER_WORDS, OTHER_VECTORS))
    make_run(home / "stages", "train", WORDS, VECTORS)

    def output(stage: str, **meta) -> StageOutput:
        return StageOutput(stage, stage, home / "stages" / "train", meta)

    trained = {"loss_per_epoch": [2.0, 1.5], "heldout_loss_per_epoch": [], "heldout_set": ""}
    return Stages(
        download=output("download", documents=1, inputs=["0" * 64]),
        tokenize=[output("tokenize", tokens=100, sentences=10)],
        vocab=output("vocab", words=len(WORDS)),
        subsample=[output("subsample")],
        pairs=[output("pairs", pairs=400)],
        negatives=output("negatives"),
        train=output("train", **trained, device="cpu", train_seconds=1.0),
    )


def publish(stages: Stages, run_id: str = RUN_ID) -> RunSummary:
    params = Params.from_mapping({"dim": VECTORS.shape[1]})
    verdict = Verdict(True, ["nothing comparable"])
    return publish_task.fn(run_id, datetime.now(UTC), ["quijote"], params, stages, verdict)


def runs() -> list[str]:
    return sorted(p.name for p in runs_dir().iterdir())


def current() -> str | None:
    run = warehouse.current_run()
    return run and run.run_id


def test_publish_writes_the_run_directory_and_registers_the_run(stages: Stages):
    summary = publish(stages)
    assert summary.run_dir == runs_dir() / RUN_ID and runs() == [RUN_ID]
    manifest = json.loads((summary.run_dir / "manifest.json").read_text())
    assert manifest["status"] == "current" and manifest["run_id"] == RUN_ID
    assert (summary.run_dir / "vectors.txt").read_text().startswith(f"{len(WORDS)} 3\n")
    assert (summary.run_dir / "stages" / "pairs" / "00000" / "vectors.parquet").is_file()
    assert current() == RUN_ID


def test_the_directory_gets_its_final_name_only_once_the_run_is_registered(
    stages: Stages, monkeypatch: pytest.MonkeyPatch
):
    register, seen = warehouse.register_run, []

    def registering(record: warehouse.RunRecord, status: str) -> None:
        (building,) = runs()  # a kill -9 now leaves only this, removed by a later run
        seen.append(building)
        manifest = json.loads((runs_dir() / building / "manifest.json").read_text())
        assert manifest["status"] == "current"
        register(record, status)
        assert runs() == [building]  # registered, not yet renamed

    monkeypatch.setattr(tasks.publish.warehouse, "register_run", registering)
    publish(stages)
    assert seen[0].startswith(f".tmp-{RUN_ID}-") and runs() == [RUN_ID]


def test_a_failed_registration_leaves_no_run_directory(
    stages: Stages, monkeypatch: pytest.MonkeyPatch
):
    def failing(record: warehouse.RunRecord, status: str) -> None:
        raise QuijoteError("cannot register run: something went wrong")

    monkeypatch.setattr(tasks.publish.warehouse, "register_run", failing)
    with pytest.raises(QuijoteError, match="something went wrong"):
        publish(stages)
    assert runs() == [] and current() == "run-1"


def test_a_busy_warehouse_is_one_clear_line_and_leaves_no_run_directory(
    stages: Stages, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(warehouse, "WRITE_WAIT_S", 0.5)
    with (
        warehouse_held(warehouse_path(), "read", 30) as reader,
        pytest.raises(QuijoteError) as raised,
    ):
        publish(stages)
    assert str(raised.value) == (
        f"the warehouse is busy: another process (pid {reader.pid}) has it open (a query or a "
        "run); try again when it ends"
    )
    assert runs() == [] and current() == "run-1"
    publish(stages)  # once the query has ended, the same stages publish
    assert runs() == [RUN_ID] and current() == RUN_ID


def test_a_killed_publishs_temporary_directory_is_removed_by_a_later_one(stages: Stages):
    stale = runs_dir() / ".tmp-20261202T070000-aaaaaa-1234abcd"
    (stale / "stages").mkdir(parents=True)
    (stale / "manifest.json").write_text('{"status": "current"}\n')
    old = time.time() - 2 * ABANDONED_AFTER_S
    os.utime(stale, (old, old))
    publish(stages)
    assert runs() == [RUN_ID]


def test_a_run_registered_by_a_killed_publish_gets_its_directory_from_a_later_one(
    stages: Stages, monkeypatch: pytest.MonkeyPatch
):
    def killed(src: Path, dst: Path) -> None:  # the process dies between register and rename
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(tasks.publish.os, "rename", killed)
        patched.setattr(storage.files, "remove_tree", lambda path: None)  # no cleanup on kill
        with pytest.raises(KeyboardInterrupt):
            publish(stages)
    (left,) = runs()
    assert left.startswith(f".tmp-{RUN_ID}-") and current() == RUN_ID
    old = time.time() - 2 * ABANDONED_AFTER_S
    os.utime(runs_dir() / left, (old, old))
    publish(stages, "20261202T080000-cafe00")
    assert runs() == [RUN_ID, "20261202T080000-cafe00"]
    manifest = json.loads((runs_dir() / RUN_ID / "manifest.json").read_text())
    assert manifest["run_id"] == RUN_ID
    assert (runs_dir() / RUN_ID / "stages" / "pairs" / "00000" / "vectors.parquet").is_file()


def test_the_runs_held_out_loss_is_its_last_epochs(stages: Stages):
    """The gate compares the current run's recorded held-out loss: the last epoch's."""
    meta = stages.train.meta | {"heldout_loss_per_epoch": [3.0, 2.5, 2.25], "heldout_set": "s"}
    summary = publish(replace(stages, train=replace(stages.train, meta=meta)))
    assert summary.metrics.heldout_loss == 2.25
    manifest = json.loads((summary.run_dir / "manifest.json").read_text())
    assert manifest["metrics"]["heldout_loss"] == 2.25
    assert manifest["metrics"]["heldout_loss_per_epoch"] == [3.0, 2.5, 2.25]
    assert warehouse.current_run().metrics["heldout_loss"] == 2.25


def test_a_stage_is_reused_only_when_all_its_shards_were(stages: Stages):
    """A per-shard stage of which one shard was built again counts as built."""

    def shard(stage: str, reused: bool, seconds: float) -> StageOutput:
        return StageOutput(stage, f"{stage}-{reused}", Path(stage), {"seconds": seconds}, reused)

    run = replace(
        stages,
        tokenize=[shard("tokenize", True, 0.5), shard("tokenize", True, 0.25)],
        subsample=[shard("subsample", True, 1.0), shard("subsample", False, 2.0)],
        pairs=[shard("pairs", False, 1.0), shard("pairs", True, 0.5)],
        vocab=replace(stages.vocab, reused=True),
    )
    summary = stage_summary(run)
    assert summary["tokenize"].reused and summary["vocab"].reused
    assert not summary["subsample"].reused and not summary["pairs"].reused
    assert not summary["train"].reused
    assert summary["subsample"].key == ["subsample-True", "subsample-False"]
    assert summary["subsample"].seconds == 3.0
