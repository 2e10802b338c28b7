"""Two commits' `quijote train` side by side: whole processes, alternating, each in a fresh
data directory, medians of the process's seconds and of every stage's, and each stage's disk.

    .venv/bin/python bench/commits.py d2ae217 HEAD             # Quijote + 32 novels, 3 reps
    .venv/bin/python bench/commits.py HEAD~1 HEAD --corpus quijote --reps 5

Each commit is checked out in a temporary git worktree and run by this checkout's Python (its
installed packages) with the worktree first on the path; a warm-up run of each fills its own
numba cache. The settings are bench/speed.py's; a stage's seconds are summed over its shards
(CPU time of the per-document stages, which run two at a time).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale import mb
from speed import (
    LARGE,
    QUIJOTE,
    ROOT,
    SETTINGS,
    commit,
    machine,
    quijote,
    result_path,
    save,
    stage_seconds,
)

from storage.files import disk_bytes


def worktree(revision: str, directory: Path) -> str:
    """Check `revision` out in `directory`; return its short hash."""
    git = ["git", "-C", str(ROOT)]
    added = subprocess.run([*git, "worktree", "add", "--detach", "-q", str(directory), revision])
    if added.returncode:
        raise SystemExit(f"commits.py: cannot check out {revision!r}")
    return subprocess.run(
        [*git, "rev-parse", "--short", revision], capture_output=True, text=True, check=True
    ).stdout.strip()


def stage_disk(home: Path) -> dict[str, float]:
    """MB (2^20 bytes) each stage's outputs take in the data directory `home` (as du counts)."""
    stages = sorted(p for p in (home / "stages").iterdir() if p.is_dir())  # not the lock file
    return {stage.name: mb(disk_bytes(stage)) for stage in stages}


def side_by_side(trees: dict[str, Path], paths: list[Path], reps: int, work: Path) -> dict:
    """Repetition r of each tree's `quijote train` (seed r + 1), the order alternating."""
    for name, tree in trees.items():
        quijote(QUIJOTE, work / "warm-up.txt", 1, work / f"warm-up-{name}", tree)
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    for rep in range(reps):
        for name in list(trees) if rep % 2 == 0 else list(trees)[::-1]:
            home = work / f"home-{name}-{rep}"
            result = quijote(paths, work / f"{name}-{rep}.txt", rep + 1, home, trees[name])
            entry = {
                "seconds": round(result["seconds"], 2),
                "load": round(result["load"], 2),
                "stages": stage_seconds(home),
                "disk_mb": stage_disk(home),
            }
            runs[name].append(entry)
            print(f"  rep {rep} {name}: {entry}", flush=True)
    report: dict = {}
    for name, entries in runs.items():
        report[name] = {
            "median_seconds": statistics.median(e["seconds"] for e in entries),
            "median_stage_seconds": {
                stage: round(statistics.median(e["stages"][stage] for e in entries), 2)
                for stage in entries[0]["stages"]
            },
            "disk_mb": entries[0]["disk_mb"],
            "runs": entries,
        }
    first, second = (report[name]["median_seconds"] for name in trees)
    report["ratio"] = round(first / second, 3)  # > 1: the second commit is faster
    return report


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the worktrees removed on a kill
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", help="a commit (the baseline)")
    parser.add_argument("second", help="another commit")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--corpus", choices=["quijote", "large"], default="large")
    parser.add_argument("--out", type=Path, help="results JSON (default bench/results/…)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="quijote-commits-") as tmp:
        work = Path(tmp)
        trees = {}
        try:
            for revision, label in ((args.first, "first"), (args.second, "second")):
                trees[worktree(revision, work / label)] = work / label
            if len(trees) < 2:
                raise SystemExit("commits.py: the two revisions are the same commit")
            results: dict = {
                "machine": machine(), "commit": commit(), "commits": list(trees),
                "corpus": args.corpus, "settings": SETTINGS, "load_start": os.getloadavg(),
            }  # fmt: skip
            paths = LARGE if args.corpus == "large" else QUIJOTE
            results["side_by_side"] = side_by_side(trees, paths, args.reps, work / "runs")
        finally:
            for tree in (work / "first", work / "second"):
                if tree.exists():
                    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                    str(tree)], check=False)  # fmt: skip
    out = args.out or result_path(f"commits-{'-'.join(trees)}")
    save(results, out)


if __name__ == "__main__":
    main()
