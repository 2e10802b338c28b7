"""storage/stages.py and storage/checkpoints.py: stage keys, the sweep of what killed processes
left, and checkpoints that cannot be read."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

import storage.stages
from storage.checkpoints import FILE, Checkpoint
from storage.files import ABANDONED_AFTER_S
from storage.paths import stages_dir
from storage.stages import prune_stages, run_stage, stage_key


def write_done(out: Path) -> dict:
    (out / "data.txt").write_text("done")
    return {}


def test_a_bumped_stage_version_changes_the_key_and_rebuilds(home: Path) -> None:
    params, inputs = {"dim": 3}, ["0" * 64]
    assert stage_key("train", 1, params, inputs) != stage_key("train", 2, params, inputs)
    built: list[int] = []

    def build(version: int):
        def write(out: Path) -> dict:
            (out / "data.txt").write_text(f"version {version}")
            built.append(version)
            return {}

        return write

    old = run_stage("train", 1, params, inputs, build(1))
    new = run_stage("train", 2, params, inputs, build(2))
    assert built == [1, 2] and not new.reused and new.key != old.key  # not the old output
    assert new.file("data.txt").read_text() == "version 2"


def test_the_sweep_removes_damaged_and_pruned_leftovers_only(home: Path) -> None:
    """Directories set aside by processes killed before removing them go, whatever the
    reason they were set aside; directories being built and checkpoints stay."""
    left = {
        name: stages_dir() / "pairs" / name
        for name in (".damaged-0123-abcd", ".pruned-4567-ef01", ".tmp-89ab-2345", ".checkpoint-1")
    }
    for directory in left.values():
        directory.mkdir(parents=True)
        (directory / "epoch-001.parquet").write_bytes(b"\0" * 65536)
    swept = prune_stages(set())
    assert sorted(p.name for p in (stages_dir() / "pairs").iterdir()) == [
        ".checkpoint-1", ".tmp-89ab-2345"
    ]  # fmt: skip
    assert swept.outputs == 0 and swept.freed >= 2 * 65536


def test_an_unlocked_temporary_directory_is_removed_only_once_it_is_old(home: Path) -> None:
    """A builder makes its directory, then locks it: one that is unlocked but younger than
    ABANDONED_AFTER_S may be about to be locked, and stays; an older one was abandoned."""
    young = stages_dir() / "toy" / ".tmp-young-1234"
    young.mkdir(parents=True)
    run_stage("toy", 1, {"n": 1}, [], write_done)
    assert young.is_dir()
    old = time.time() - 2 * ABANDONED_AFTER_S
    os.utime(young, (old, old))
    run_stage("toy", 1, {"n": 2}, [], write_done)
    assert not young.exists()


def test_a_damaged_output_is_set_aside_whole_before_it_is_removed(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run killed while removing a damaged output leaves no half of it under its key: the
    output is renamed out of the way first, and what is left of it the next sweep removes."""
    first = run_stage("toy", 1, {}, [], write_done)
    first.file("data.txt").write_text("changed")  # damaged: another size than recorded

    def killed(path: Path) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(storage.stages, "remove_tree", killed)
        with pytest.raises(KeyboardInterrupt):
            run_stage("toy", 1, {}, [], write_done)
    assert not first.path.exists()
    (aside,) = first.path.parent.glob(f".damaged-{first.key}-*")
    assert (aside / "data.txt").read_text() == "changed"
    again = run_stage("toy", 1, {}, [], write_done)
    assert not again.reused and again.file("data.txt").read_text() == "done"
    prune_stages({again.path.resolve()})
    assert [p.name for p in first.path.parent.iterdir()] == [first.key]


def test_a_truncated_checkpoint_means_starting_over(home: Path) -> None:
    checkpoint = Checkpoint("train", "0123")
    checkpoint.save({"epoch": 1, "first": 40}, {"vectors": np.ones((4, 3), np.float32)})
    loaded = checkpoint.load()
    assert loaded is not None and loaded[0] == {"epoch": 1, "first": 40}
    path = checkpoint.directory / FILE
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # cut short (a bad copy)
    assert checkpoint.load() is None
