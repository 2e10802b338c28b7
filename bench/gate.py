"""The quality gate's errors on real runs: how often it rejects a rerun that only changed its
seed (a false rejection), and how often it lets through an under-trained run (fewer epochs,
everything else the same). `quijote train` on the Quijote + 32 novels (the eval/ benchmarks
cover too little of the Quijote alone), each run in a fresh QUIJOTE_HOME; every ordered pair
of full runs is judged, and every under-trained run against every full one.

    .venv/bin/python bench/gate.py                  # 6 seeds at 5 epochs, seed 1 at 1 and 2
    .venv/bin/python bench/gate.py --seeds 4 --under 1 2 3 --corpus quijote
    .venv/bin/python bench/gate.py --corpus quijote --words 30000 --under 3 4   # a small corpus
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from quality import heldout_of, verdicts
from speed import LARGE, QUIJOTE, SETTINGS, commit, machine, quijote, result_path, save

from storage.benchmarks import find_benchmarks


def tally(judged: list[dict]) -> dict:
    """How many verdicts rejected, and which measures failed how often."""
    measures: dict[str, int] = {}
    for entry in judged:
        for name in entry["failed"]:
            measures[name] = measures.get(name, 0) + 1
    rejected = sum(not entry["passed"] for entry in judged)
    return {"rejected": rejected, "judged": len(judged), "failed_measures": measures}


def first_lines(path: Path, words: int) -> str:
    """The file's first lines, up to where they hold `words` words (its header included)."""
    kept, count = [], 0
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        if count >= words:
            break
        kept.append(line)
        count += len(line.split())
    return "".join(kept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=6, help="full runs, seeds 1..N")
    parser.add_argument("--under", type=int, nargs="*", default=[1, 2], help="epochs, seed 1")
    parser.add_argument("--corpus", choices=["quijote", "large"], default="large")
    parser.add_argument("--words", type=int, help="the Quijote's first lines, N words")
    parser.add_argument("--out", type=Path, help="results JSON (default bench/results/…)")
    args = parser.parse_args()
    if args.seeds < 2:
        raise SystemExit("--seeds must be at least 2: the gate compares two runs")
    if args.words is not None and (args.corpus != "quijote" or args.words < 1):
        raise SystemExit("--words takes a positive number, with --corpus quijote")
    if any(epochs < 1 or epochs >= SETTINGS["epochs"] for epochs in args.under):
        raise SystemExit(f"--under takes epochs from 1 to {SETTINGS['epochs'] - 1}")
    benchmarks = find_benchmarks(None)
    if not benchmarks:
        raise SystemExit("no eval/ folder beside the corpus mirror")
    out = args.out or result_path("gate")
    paths = {"quijote": QUIJOTE, "large": LARGE}[args.corpus]
    results: dict = {
        "machine": machine(), "commit": commit(), "corpus": args.corpus, "words": args.words,
        "settings": SETTINGS,
        "benchmarks": {b.name: b.sha256 for b in benchmarks}, "load_start": os.getloadavg(),
        "heldout_loss": {},
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="quijote-gate-") as tmp:
        work = Path(tmp)
        if args.words:
            paths = [work / "corpus.txt"]
            paths[0].write_text(first_lines(QUIJOTE[0], args.words), encoding="utf-8")
        runs = [(f"seed{seed}", seed, SETTINGS["epochs"]) for seed in range(1, args.seeds + 1)]
        runs += [(f"epochs{epochs}", 1, epochs) for epochs in args.under]
        files, heldout = {}, {}
        for name, seed, epochs in runs:
            files[name] = work / f"{name}.txt"
            home = Path(tempfile.mkdtemp(prefix="home-", dir=work))
            run = quijote(paths, files[name], seed, home, epochs=epochs)
            heldout[files[name]] = heldout_of(run)
            results["heldout_loss"][name] = loss = heldout[files[name]][0]
            print(f"{name}: {run['seconds']:.1f} s, held-out loss {loss}", flush=True)
        full = [files[name] for name, _, epochs in runs if epochs == SETTINGS["epochs"]]
        under = [files[name] for name, _, epochs in runs if epochs < SETTINGS["epochs"]]
        reseeded = verdicts(list(itertools.permutations(full, 2)), benchmarks, heldout)
        results["reseeded"] = {**tally(reseeded), "verdicts": reseeded}
        for path in under:
            judged = verdicts([(path, current) for current in full], benchmarks, heldout)
            results[path.stem] = {**tally(judged), "verdicts": judged}
    for name in ["reseeded", *(path.stem for path in under)]:
        summary = {k: v for k, v in results[name].items() if k != "verdicts"}
        print(f"{name}: {summary}", flush=True)
    save(results, out)


if __name__ == "__main__":
    main()
