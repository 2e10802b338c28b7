"""Pruning: the vectors of all runs but the current one and the most recent others, and on
disk what only the pruned runs used: their run directories' copies of the vectors and links,
and the stage outputs that no run directory links to any more."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from storage import warehouse
from storage.files import disk_bytes, remove_tree
from storage.paths import RUN_STAGES, RUN_VECTORS, runs_dir
from storage.stages import Swept, prune_stages, stages_lock


@dataclass(frozen=True)
class Pruned:
    """What a prune removed: the runs whose vectors it dropped, and on disk the stage outputs
    and bytes freed (None: a run was using the stage cache, so nothing was removed there)."""

    runs: list[str]
    disk: Swept | None

    def describe(self) -> str:
        """One line for the command line and the flow's log."""
        runs = f"pruned the vectors of {len(self.runs)} run(s)"
        runs += f": {', '.join(self.runs)}" if self.runs else ""
        if self.disk is None:
            return f"{runs}; no files removed: a run is using the stage outputs (prune again later)"
        freed = f"{self.disk.freed / 2**20:,.1f} MiB"
        return (
            f"{runs}; removed {self.disk.outputs} stage output(s) no kept run uses ({freed} freed)"
        )


def prune(keep: int) -> Pruned:
    """Drop the vectors of all runs but the current one and the `keep` most recent others
    (storage.warehouse.prune). Then, unless a run holds the stage cache, remove the vectors
    copy and the stage links of every run without vectors, and every stage output that no
    run directory links to (those of `quijote train` included)."""
    pruned = warehouse.prune(keep)
    with stages_lock(exclusive=True) as held:
        if not held:
            return Pruned(pruned, None)
        freed = sum(_strip(runs_dir() / run_id) for run_id in warehouse.runs_without_vectors())
        swept = prune_stages(_linked())
    return Pruned(pruned, Swept(swept.outputs, swept.freed + freed))


def _strip(run_dir: Path) -> int:
    """Remove a pruned run's vectors copy and stage links (its manifest and report stay);
    returns the bytes freed."""
    vectors = run_dir / RUN_VECTORS
    freed = disk_bytes(vectors)
    vectors.unlink(missing_ok=True)
    remove_tree(run_dir / RUN_STAGES)
    return freed


def _linked() -> set[Path]:
    """The stage outputs (resolved) that run directories link to: `stages/<stage>`, and
    `stages/<stage>/<shard>` for a per-shard stage; temporary run directories included (a
    publish killed after registering its run leaves one, renamed into place later)."""
    root = runs_dir()
    runs = [run / RUN_STAGES for run in root.iterdir()] if root.is_dir() else []
    links = [link for stages in runs if stages.is_dir() for link in _links(stages)]
    return {link.resolve() for link in links}


def _links(stages: Path) -> list[Path]:
    entries = sorted(stages.iterdir())
    shards = [s for e in entries if e.is_dir() and not e.is_symlink() for s in e.iterdir()]
    return [e for e in [*entries, *shards] if e.is_symlink()]
