"""storage/stages.py and storage/checkpoints.py: stage keys, the sweep of what killed processes
left, and checkpoints that cannot be read."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from storage.checkpoints import FILE, Checkpoint
from storage.paths import stages_dir
from storage.stages import prune_stages, run_stage, stage_key


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


def test_a_truncated_checkpoint_means_starting_over(home: Path) -> None:
    checkpoint = Checkpoint("train", "0123")
    checkpoint.save({"epoch": 1, "first": 40}, {"vectors": np.ones((4, 3), np.float32)})
    loaded = checkpoint.load()
    assert loaded is not None and loaded[0] == {"epoch": 1, "first": 40}
    path = checkpoint.directory / FILE
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # cut short (a bad copy)
    assert checkpoint.load() is None
