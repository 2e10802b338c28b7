"""Pruning: older runs' vectors go, and on disk what only they used; nothing a kept run or a
run in progress uses."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from quijote.params import Params
from storage import warehouse
from storage.paths import RUN_STAGES, stages_dir
from storage.pruning import prune
from storage.stages import StageOutput, Stages, run_stage, shards, stages_lock
from tasks.gate import Verdict
from tasks.publish import _link_stages, publish_task
from tests.data import VECTORS, WORDS, make_run


def stage(name: str, variant: str) -> StageOutput:
    """A finished stage output keyed by `variant`: a file of 64 KiB, and for vocab and train
    the vocab and vectors files that publish reads."""

    def build(out: Path) -> dict:
        (out / "data.bin").write_bytes(b"\0" * 65536)
        if name in ("vocab", "train"):
            make_run(out.parent, out.name, WORDS, VECTORS)  # out/vocab.parquet, vectors.parquet
        return {"documents": 1, "inputs": ["0" * 64], "tokens": 9, "sentences": 1, "words": 6,
                "pairs": 40, "loss_per_epoch": [1.0], "heldout_loss_per_epoch": [],
                "heldout_set": "", "device": "cpu", "train_seconds": 0.1}  # fmt: skip

    return run_stage(name, 1, {"variant": variant}, [], build)


def stages(epochs: str) -> Stages:
    """A run's stages: download, tokenize, vocab and negatives shared by every run, the rest
    keyed by `epochs` (as a change of epochs reruns subsample, pairs and train)."""
    return Stages(
        download=stage("download", "all"),
        tokenize=[stage("tokenize", "all")],
        vocab=stage("vocab", "all"),
        subsample=[stage("subsample", epochs)],
        pairs=[stage("pairs", epochs)],
        negatives=stage("negatives", "all"),
        train=stage("train", epochs),
    )


def publish(run_id: str, built: Stages) -> None:
    params = Params.from_mapping({"dim": 3})
    verdict = Verdict(True, ["better"])
    publish_task.fn(run_id, datetime.now(UTC), ["quijote"], params, built, verdict)


def outputs() -> set[str]:
    """stage/key of every finished stage output on disk."""
    return {f"{p.parent.name}/{p.name}" for p in stages_dir().glob("*/[!.]*")}


def keys(built: Stages) -> set[str]:
    return {f"{o.stage}/{o.key}" for _, output in built.items() for o in shards(output)}


@pytest.fixture
def two_runs(home: Path) -> Stages:
    """run-1 (5 epochs), then run-2 (10 epochs, current), and a `quijote train` of 20 epochs;
    run-2's stages."""
    publish("run-1", stages("5"))
    second = stages("10")
    publish("run-2", second)
    stages("20")
    return second


def test_prune_removes_what_only_pruned_runs_used(home: Path, two_runs: Stages) -> None:
    assert len(outputs()) == 4 + 3 * 3  # 4 shared, 3 of each epochs
    pruned = prune(0)
    assert pruned.runs == ["run-1"] and pruned.disk is not None
    assert outputs() == keys(two_runs)  # run-1's and the train command's epochs are gone
    assert pruned.disk.outputs == 6 and pruned.disk.freed > 6 * 65536
    assert "pruned the vectors of 1 run(s): run-1; removed 6 stage output(s)" in pruned.describe()
    old, kept = home / "runs" / "run-1", home / "runs" / "run-2"
    assert [p.name for p in old.iterdir()] == ["manifest.json"]  # no vectors.txt, no links
    assert (kept / "vectors.txt").is_file()
    assert (kept / "stages" / "train" / "vectors.parquet").is_file()
    assert (kept / "stages" / "pairs" / "00000" / "data.bin").is_file()
    again = prune(0)
    assert again.runs == [] and again.disk is not None and again.disk.outputs == 0
    assert warehouse.current_run().run_id == "run-2"


def test_a_run_in_progress_keeps_every_stage_output(home: Path, two_runs: Stages) -> None:
    before = outputs()
    with stages_lock():  # what a run or `quijote train` holds while it uses stage outputs
        pruned = prune(0)
    assert pruned.runs == ["run-1"] and pruned.disk is None
    assert "no files removed: a run is using the stage outputs" in pruned.describe()
    assert outputs() == before and (home / "runs" / "run-1" / "vectors.txt").is_file()
    assert prune(0).disk.outputs == 6  # once the run is over, the next prune removes them


def test_what_a_killed_prune_set_aside_goes_with_the_next(home: Path, two_runs: Stages) -> None:
    aside = stages_dir() / "pairs" / ".pruned-0123-abcd"
    aside.mkdir()
    (aside / "epoch-001.parquet").write_bytes(b"\0" * 65536)
    checkpoint = stages_dir() / "train" / ".checkpoint-0123"
    checkpoint.mkdir()
    prune(3)
    assert not aside.exists() and checkpoint.is_dir()  # a killed training run resumes from it


def test_a_temporary_run_directory_keeps_the_stage_outputs_it_links_to(
    home: Path, two_runs: Stages
) -> None:
    """A publish killed mid-way leaves its run directory under its temporary (dot) name,
    linked to its stages: renamed into place later, so they must stay."""
    unfinished = stages("20")  # the stages only the killed publish uses
    work = home / "runs" / ".tmp-run-3-0123abcd"
    work.mkdir()
    _link_stages(work / RUN_STAGES, unfinished)
    pruned = prune(0)
    assert pruned.runs == ["run-1"] and pruned.disk is not None
    assert pruned.disk.outputs == 3  # run-1's own epochs only
    assert outputs() == keys(two_runs) | keys(unfinished)
