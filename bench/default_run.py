"""The default `quijote run` as a new user meets it: whole-process wall time with an empty data
directory (so Prefect creates its database and nothing is reused) and each stage's seconds as
its report.md gives them, for one or more commits side by side.

    .venv/bin/python bench/default_run.py                       # the working tree, 3 runs
    .venv/bin/python bench/default_run.py --commit e3bb59a --commit HEAD --reps 3

Each commit other than the working tree is checked out in a temporary git worktree and run
with this venv, after one unrecorded run that fills its numba cache (a checkout's first run
compiles the kernels); runs alternate between commits; the corpus mirror is ../shared/corpora.
Writes bench/results/default-run-<date>.json and prints medians.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from speed import ROOT, commit, machine, result_path, save

MIRROR = ROOT.parent / "shared" / "corpora"
CLI = "import sys; from cli.main import main; sys.argv[0] = 'quijote'; main()"
STAGE_ROW = re.compile(r"^\| (\w+) \| no \| ([\d.]+) \|$", re.MULTILINE)


def cli_env(home: Path) -> dict[str, str]:
    """The environment of a `quijote` process on the data directory `home` (its Prefect state
    in there too) and the corpus mirror."""
    env = {
        **os.environ, "QUIJOTE_HOME": str(home), "QUIJOTE_MIRROR": str(MIRROR),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }  # fmt: skip
    env.pop("PREFECT_HOME", None)
    return env


def one_run(source: Path, home: Path) -> dict:
    """`quijote run` from `source` (a checkout) on an empty data directory `home`."""
    env = cli_env(home)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CLI, "run"], cwd=source, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"quijote run failed in {source}:\n{done.stderr[-2000:]}")
    (report,) = home.glob("runs/*/report.md")
    stages = {name: float(s) for name, s in STAGE_ROW.findall(report.read_text(encoding="utf-8"))}
    return {"seconds": round(seconds, 2), "load": load, "stages": stages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commit", action="append", help="a commit (default: the working tree)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    out = args.out or result_path("default-run")
    results: dict = {"machine": machine(), "commit": commit(), "load_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="quijote-default-run-") as tmp:
        work = Path(tmp)
        sources = {}
        for ref in args.commit or []:
            name = subprocess.run(
                ["git", "-C", str(ROOT), "rev-parse", "--short", ref],
                capture_output=True, text=True, check=True,
            ).stdout.strip()  # fmt: skip
            sources[name] = work / f"tree-{name}"
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(sources[name]), ref],
                check=True, capture_output=True,
            )  # fmt: skip
        sources = sources or {results["commit"]: ROOT}
        runs: dict[str, list[dict]] = {name: [] for name in sources}
        try:
            for name, source in sources.items():
                one_run(source, work / f"home-{name}-warmup")
            for rep in range(args.reps):
                order = list(sources) if rep % 2 == 0 else list(reversed(sources))
                for name in order:
                    run = one_run(sources[name], work / f"home-{name}-{rep}")
                    runs[name].append(run)
                    print(f"{name} run {rep + 1}: {run['seconds']:.1f} s, stages {run['stages']}")
        finally:
            for source in sources.values():
                if source != ROOT:
                    subprocess.run(
                        ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(source)],
                        check=False,
                    )  # fmt: skip
    results["runs"] = runs
    results["medians"] = {
        name: {
            "seconds": statistics.median(r["seconds"] for r in rs),
            **{
                stage: statistics.median(r["stages"].get(stage, 0.0) for r in rs)
                for stage in rs[0]["stages"]
            },
        }
        for name, rs in runs.items()
    }
    for name, median in results["medians"].items():
        share = median.get("classify", 0.0) / median["seconds"]
        print(
            f"{name}: run {median['seconds']:.1f} s, classify {median.get('classify', 0.0):.1f} s"
            f" ({share:.0%})"
        )
    save(results, out)


if __name__ == "__main__":
    main()
