"""Disk use on a retraining schedule: `quijote run` again and again in one data directory, each
run with a new seed (a new draw of subsampling, pairs, negatives and training, as new data
would bring), without pruning and with `--keep-runs K`; then `quijote prune --keep K` on the
unpruned directory. Records the data directory's disk use (stages, runs, warehouse) after
every run.

    .venv/bin/python bench/retraining.py [--runs 4] [--keep 1] [--corpus quijote]

Writes bench/results/retraining-<date>.json and prints a table.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from default_run import CLI, cli_env
from scale import mb
from speed import ROOT, commit, machine, result_path, save

from storage.files import disk_bytes

PARTS = ("stages", "runs", "warehouse.duckdb")


def quijote(home: Path, *args: str) -> float:
    """One `quijote` command in the data directory `home`; its seconds."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CLI, *args], cwd=ROOT, env=cli_env(home),
                          text=True, capture_output=True)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"quijote {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return round(time.perf_counter() - started, 2)


def disk(home: Path) -> dict[str, float]:
    """MB on disk of the data directory's parts, and of all of it."""
    parts = {part: mb(disk_bytes(home / part)) for part in PARTS}
    return {**parts, "total": mb(disk_bytes(home))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--keep", type=int, default=1)
    parser.add_argument("--corpus", default="quijote")
    args = parser.parse_args()
    out = result_path("retraining")
    results: dict = {"machine": machine(), "commit": commit(), "load_start": os.getloadavg(),
                     "runs": args.runs, "keep": args.keep, "corpus": args.corpus}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="quijote-retraining-") as tmp:
        for mode, extra in (("unpruned", []), ("keep-runs", ["--keep-runs", str(args.keep)])):
            home, series = Path(tmp) / mode, []
            for seed in range(1, args.runs + 1):
                run = ["run", "-c", args.corpus, "--set", f"seed={seed}", *extra]
                series.append({"seed": seed, "seconds": quijote(home, *run), **disk(home)})
                print(mode, series[-1], flush=True)
            results[mode] = series
            if mode == "unpruned":
                seconds = quijote(home, "prune", "--keep", str(args.keep))
                results["pruned_after"] = {"seconds": seconds, **disk(home)}
                print("prune", results["pruned_after"], flush=True)
    save(results, out)
    print(f"{'run':>4} {'unpruned MB':>12} {'--keep-runs MB':>15}")
    for plain, kept in zip(results["unpruned"], results["keep-runs"], strict=True):
        print(f"{plain['seed']:>4} {plain['total']:>12} {kept['total']:>15}")
    print(f"quijote prune --keep {args.keep} afterwards: {results['pruned_after']['total']} MB")


if __name__ == "__main__":
    main()
