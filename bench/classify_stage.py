"""Wall time of the default run's classify stage: the classify stage (tasks.classify.classify_task,
called without Prefect) on the default labelled table with the default ClassifyParams and the
vectors of the default corpus and parameters, each run in a fresh data directory (no reuse);
median and every run, and the per-mode accuracy and macro-F1 (mean ± std over seeds).

    .venv/bin/python bench/classify_stage.py [--home /tmp/quijote-bench-classify] [--runs 3]

The vectors are trained once by the pipeline's own stages without Prefect and cached under
--home; writes bench/results/classify-stage-<date>-<commit>.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import torch
from speed import commit, machine, result_path, save

from flows.train_stages import DEFAULT_CORPUS, train_stages
from quijote.params import Params
from storage.tables import DEFAULT_LABELLED, find_labelled
from tasks.classify import VERSION, ClassifyParams, classify_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, default=Path("/tmp/quijote-bench-classify"))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    os.environ["QUIJOTE_HOME"] = str(args.home)
    trained = train_stages(list(DEFAULT_CORPUS), Params(), orchestrated=False).train
    table = find_labelled(DEFAULT_LABELLED, "Text", "Topic")
    assert table is not None, "no labelled table in the corpus mirror"
    params = ClassifyParams()
    seconds, meta, load_start = [], {}, os.getloadavg()
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as home:
            os.environ["QUIJOTE_HOME"] = home
            started = time.perf_counter()
            output = classify_task(trained, table, params)
            seconds.append(round(time.perf_counter() - started, 2))
            meta = output.meta
        print(f"classify stage: {seconds[-1]} s", flush=True)
    report = {
        "date": date.today().isoformat(),
        "commit": commit(),
        "classify_version": VERSION,
        "machine": {**machine(), "torch_threads": torch.get_num_threads()},
        "load_start": load_start,
        "data": str(table.path),
        "vectors": str(trained.path),
        "params": params.to_dict(),
        "seconds": seconds,
        "median_seconds": statistics.median(seconds),
        "rows": meta["rows"],
    }
    save(report, result_path("classify-stage"))
    print(f"median {report['median_seconds']} s over {args.runs} runs")
    for row in meta["rows"]:
        print(
            f"{row['mode']:9} accuracy {row['accuracy']:.3f}±{row['accuracy_std']:.3f}"
            f"  macro-F1 {row['macro_f1']:.3f}±{row['macro_f1_std']:.3f}"
        )


if __name__ == "__main__":
    main()
