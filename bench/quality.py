"""Vector quality on the eval/ benchmarks beside the corpus mirror: `quijote train` against
gensim 4.4 at the same settings (those of bench/speed.py: the word2vec defaults, 2 threads),
several seeds each, on the Quijote and on the Quijote + 32 novels; mean ± std of every score,
the time the evaluation takes, and what the quality gate says of each seed against every other.

    .venv/bin/python bench/quality.py                 # both corpora, seeds 1-6
    .venv/bin/python bench/quality.py --corpus quijote --seeds 3

Both sides are scored by the same code (tasks/evaluate.py, checked against gensim's own
evaluate_word_pairs / evaluate_word_analogies in tests/test_evaluate.py); each `quijote train`
gets a fresh QUIJOTE_HOME.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from speed import LARGE, QUIJOTE, SETTINGS, alternating, commit, machine, result_path, save

from storage.benchmarks import find_benchmarks
from storage.vectors import read_vectors_file, unit_rows
from tasks.evaluate import evaluate
from tasks.gate import SPREAD_WORDS, RunVectors, judge, mean_pair_cosine, probe_scores


def score(path: Path, benchmarks: list) -> dict:
    """Every benchmark's overall scores, the gate's sanity measures, and the seconds taken."""
    words, vectors = read_vectors_file(path)
    started = time.perf_counter()
    rows = evaluate(words, vectors, benchmarks)
    seconds = time.perf_counter() - started
    units = unit_rows(vectors)
    return {
        "scores": {
            f"{s.benchmark} {s.metric}": {"value": s.value, "found": s.found, "total": s.total}
            for s in rows
            if "/" not in s.benchmark
        },
        "evaluate_seconds": round(seconds, 3),
        "vocab": len(words),
        "mean_pair_cosine_top": round(mean_pair_cosine(units[:SPREAD_WORDS]), 4),
        "probe_score": round(float(probe_scores(words, units).mean()), 4),
    }


def summarise(runs: list[dict]) -> dict:
    """Mean ± sample std over seeds of every score."""
    names = runs[0]["scores"]
    summary = {}
    for name in names:
        values = [r["scores"][name]["value"] for r in runs]
        values = [v for v in values if v is not None]
        summary[name] = {
            "mean": round(statistics.mean(values), 4) if values else None,
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else None,
            "found": runs[0]["scores"][name]["found"],
            "total": runs[0]["scores"][name]["total"],
        }
    return summary


Heldout = dict[Path, tuple[float | None, str | None]]  # a vectors file's held-out loss and set


def heldout_of(run: dict) -> tuple[float | None, str | None]:
    """The held-out loss and set of a `quijote train` process's summary."""
    return run["summary"]["heldout_loss"], run["summary"]["heldout_set"]


def verdicts(
    pairs: list[tuple[Path, Path]], benchmarks: list, heldout: Heldout | None = None
) -> list[dict]:
    """The gate's verdict on each (candidate, current) pair of vectors files, with their
    held-out loss where `heldout` has it: passed, every reason, and the measures that failed."""

    def run(path: Path) -> RunVectors:
        return RunVectors(*read_vectors_file(path), *(heldout or {}).get(path, (None, None)))

    found = []
    for candidate, current in pairs:
        verdict = judge(run(candidate), run(current), benchmarks, current.stem)
        failed = [check.measure for check in verdict.checks if check.passed is False]
        found.append({"candidate": candidate.stem, "current": current.stem,
                      "passed": verdict.passed, "reasons": verdict.reasons,
                      "failed": failed})  # fmt: skip
    return found


def gate_between_seeds(outs: list[Path], benchmarks: list, heldout: Heldout) -> list[dict]:
    """The gate's verdict on each seed's vectors against every other seed's (a rerun of equal
    quality: each should pass)."""
    return verdicts(list(itertools.permutations(outs, 2)), benchmarks, heldout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=6, help="seeds 1..N each side")
    parser.add_argument("--corpus", choices=["quijote", "large", "both"], default="both")
    parser.add_argument("--out", type=Path, help="results JSON (default bench/results/…)")
    args = parser.parse_args()
    out = args.out or result_path("quality")
    benchmarks = find_benchmarks(None)
    if not benchmarks:
        raise SystemExit("no eval/ folder beside the corpus mirror")
    results: dict = {
        "machine": machine(), "commit": commit(), "settings": SETTINGS,
        "benchmarks": {b.name: b.sha256 for b in benchmarks}, "load_start": os.getloadavg(),
    }  # fmt: skip
    chosen = {"quijote": QUIJOTE, "large": LARGE}
    with tempfile.TemporaryDirectory(prefix="quijote-quality-") as tmp:
        work = Path(tmp)
        for corpus, paths in chosen.items():
            if args.corpus not in (corpus, "both"):
                continue
            report: dict = {}
            outs: dict[str, list[Path]] = {"quijote": [], "gensim": []}
            heldout: Heldout = {}
            (work / corpus).mkdir()
            for rep, side, path, run in alternating(paths, args.seeds, work / corpus):
                outs[side].append(path)
                entry = {"seed": rep + 1, "train_seconds": round(run["seconds"], 2),
                         "load": round(run["load"], 2), **score(path, benchmarks)}  # fmt: skip
                if side == "quijote":
                    heldout[path] = heldout_of(run)
                    entry["heldout_loss"] = heldout[path][0]
                report.setdefault(side, {"runs": []})["runs"].append(entry)
                print(f"{corpus} seed {rep + 1} {side}: {json.dumps(entry['scores'])}", flush=True)
            for side, outcome in report.items():
                outcome["summary"] = summarise(outcome["runs"])
                outcome["gate_between_seeds"] = gate_between_seeds(outs[side], benchmarks, heldout)
            results[corpus] = report
            print(json.dumps({s: r["summary"] for s, r in report.items()}, indent=1), flush=True)
    save(results, out)


if __name__ == "__main__":
    main()
