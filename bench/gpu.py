"""The GPU training path (models/skipgram_torch.py): its speed on CUDA, the host's share of it,
and its quality against the CPU kernel on CPU runs of the same code.

    .venv/bin/python bench/gpu.py                    # on CUDA: 50M+ words, --device cuda
    .venv/bin/python bench/gpu.py --device torch --words 2000000   # on the CPU: a smoke test
    .venv/bin/python bench/gpu.py --host-cost        # the host's work per pair, no device work
    .venv/bin/python bench/gpu.py --compare --seeds 3    # --device torch against cpu, Quijote

`--corpora DIR` names the corpus mirror (the eval/ folder beside it) where ../shared is not.

The speed run writes copies of the Quijote + 32 novels, each ending in a line `copia N`, until
they hold `--words` words, and trains them with `quijote train` in a fresh QUIJOTE_HOME (the
word2vec defaults, seed 1). It prints and records the train stage's own numbers (its meta:
pairs/s, seconds waiting for the host's blocks, queueing and in device work, peak GPU memory)
apart from the data prep stages and the whole process, then the benchmark scores of the vectors
(the eval/ folder beside the corpus mirror, scored as bench/quality.py does).

`--host-cost` times, on the Quijote + 32 novels' pairs, what the host does for the GPU path:
decoding the pairs files' row groups (Arrow's threads), regrouping them into the blocks the
device copies, the whole reading path as training runs it (its threads), and the trainer's own
work per block and per batch, measured on blocks whose tensors are so small that the device's
arithmetic is negligible (what is left is Python and PyTorch's dispatch). The ceilings are the
slower of the reading path and the trainer, which run in parallel; CUDA's kernel launches come
on top of the eager one and are not measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from speed import CORPORA, SETTINGS, commit, cpu_name, quijote, result_path, save

from quijote.params import Params
from storage.benchmarks import find_benchmarks
from storage.vectors import read_vectors_file
from tasks.evaluate import evaluate

WORD = re.compile(r"[^\W\d_]+")  # about the tokenizer's words, to size the corpus
WORDS = 50_000_000
LARGE = ["quijote_pg2000.txt", "eltec_spa", "gutenberg_es"]  # the Quijote + 32 novels


def large(corpora: Path) -> list[Path]:
    return [corpora / name for name in LARGE]


def corpus_files(paths: list[Path]) -> list[Path]:
    return [f for p in paths for f in (sorted(p.glob("*.txt")) if p.is_dir() else [p])]


def build_corpus(directory: Path, corpora: Path, words: int) -> int:
    """Copies of the Quijote + 32 novels, file after file, each ending in `copia N`, until
    they hold at least `words` words; returns the words written (counted roughly)."""
    directory.mkdir(parents=True)
    texts = [(f.name, f.read_text(encoding="utf-8-sig")) for f in corpus_files(large(corpora))]
    counts = [len(WORD.findall(text)) for _, text in texts]
    written, copy = 0, 0
    while written < words:
        for (name, text), count in zip(texts, counts, strict=True):
            path = directory / f"{copy:03d}-{name}"
            path.write_text(f"{text}\n\ncopia {copy}\n", encoding="utf-8")
            written += count + 2
            if written >= words:
                break
        copy += 1
    return written


def quijote_train(
    corpus: list[Path], out: Path, home: Path, device: str, seed: int, threads: int, **more: int
) -> tuple[dict, dict[str, list[dict]]]:
    """`quijote train` as a user runs it (speed.quijote: SETTINGS and `more` settings), in the
    fresh data directory `home`: the process (seconds, peak RSS, its JSON summary) and its
    stages' stage.json."""
    result = quijote(corpus, out, seed, home, device=device, threads=threads, **more)
    stages: dict[str, list[dict]] = {}
    for path in sorted(home.glob("stages/*/*/stage.json")):
        stage = json.loads(path.read_text())
        stages.setdefault(stage["stage"], []).append(stage)
    return result, stages


def machine(device: str, threads: int) -> dict:
    """The CPU, the GPU when `device` is cuda, and the libraries that train."""
    meminfo = Path("/proc/meminfo").read_text().split()
    found = {}
    for lib in ("torch", "numba", "numpy", "pyarrow"):
        try:
            found[lib] = version(lib)
        except PackageNotFoundError:
            found[lib] = None
    described = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "ram_gib": round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 2**20, 1),
        "python": platform.python_version(),
        **found,
        "device": device,
        "threads": threads,
    }
    if device == "cuda":
        import torch

        properties = torch.cuda.get_device_properties(0)
        described |= {
            "gpu": properties.name,
            "gpu_memory_gib": round(properties.total_memory / 2**30, 1),
            "cuda": torch.version.cuda,
        }
    return described


def score(path: Path) -> dict:
    """The vectors' scores on the eval/ folder beside the corpus mirror, as bench/quality.py
    scores them; only the benchmarks where Prefect, which the gate's measures import, is not
    installed (the GPU machine's Python)."""
    benchmarks = find_benchmarks(None)
    try:
        import quality
    except ImportError:
        words, vectors = read_vectors_file(path)
        rows = [s for s in evaluate(words, vectors, benchmarks) if "/" not in s.benchmark]
        return {"scores": {f"{s.benchmark} {s.metric}": {"value": s.value} for s in rows}}
    return quality.score(path, benchmarks)


def speed(
    work: Path, corpora: Path, device: str, words: int, threads: int, batch_size: int
) -> dict:
    """Train a corpus of `words` words on `device`: the train stage's numbers, the data
    prep's, the whole process's, and the vectors' benchmark scores."""
    started = time.perf_counter()
    written = build_corpus(work / "corpus", corpora, words)
    print(f"corpus: {written:,} words in {time.perf_counter() - started:.1f} s", flush=True)
    out = work / "vectors.txt"
    print(f"quijote train --device {device} (data prep, then training)...", flush=True)
    process, stages = quijote_train(
        [work / "corpus"], out, work / "home", device, 1, threads, batch_size=batch_size
    )
    meta, summary = stages["train"][0], process["summary"]
    prep = {name: round(sum(s["seconds"] for s in runs), 2) for name, runs in stages.items()}
    epochs = summary["epochs"]
    result = {
        "words": summary["words"],
        "vocab": summary["vocab"],
        "pairs": meta["pairs"],
        "pairs_per_word": round(meta["pairs"] / (summary["words"] * epochs), 3),
        "train_stage": {
            "device": meta["device"],
            "train_seconds": meta["train_seconds"],
            "pairs_per_second": meta["pairs_per_second"],
            "words_per_second": round(summary["words"] * epochs / meta["train_seconds"]),
            "loading_share": round(meta["waiting_seconds"] / meta["train_seconds"], 3),
            "device_share": round(meta["device_seconds"] / meta["train_seconds"], 3),
            **{k: v for k, v in meta.items() if k.endswith("_seconds") or k == "peak_gpu_mib"},
            "loss_per_epoch": meta["loss_per_epoch"],
            "heldout_loss_per_epoch": meta["heldout_loss_per_epoch"],
        },
        "stage_seconds": prep,
        "process": {
            "seconds": round(process["seconds"], 2),
            "words_per_second": summary["words_per_s"],
            "peak_rss_mb": round(process["rss_mb"]),
        },
    }
    print(json.dumps(result, indent=1), flush=True)
    result["quality"] = score(out)
    print(f"quality: {json.dumps(result['quality'])}", flush=True)
    return result


def compare(work: Path, seeds: int, corpus: list[Path], threads: int, batch_size: int) -> dict:
    """`--device torch` (batches of `batch_size` pairs) and `--device cpu` on `corpus`, seeds
    1..`seeds` (the order alternating, a fresh QUIJOTE_HOME each): benchmark scores, held-out
    loss, seconds."""
    runs: dict[str, list[dict]] = {"torch": [], "cpu": []}
    for seed in range(1, seeds + 1):
        for device in ("torch", "cpu") if seed % 2 else ("cpu", "torch"):
            name = f"{device}-{seed}"
            out = work / f"{name}.txt"
            more = {"batch_size": batch_size} if device == "torch" else {}
            process, stages = quijote_train(corpus, out, work / name, device, seed, threads, **more)
            meta = stages["train"][0]
            entry = {
                "seed": seed,
                "seconds": round(process["seconds"], 2),
                "train_seconds": meta["train_seconds"],
                "heldout_loss": meta["heldout_loss_per_epoch"][-1],
                **score(out),
            }
            runs[device].append(entry)
            print(f"{name}: {json.dumps(entry)}", flush=True)
    summary = {}
    for device, entries in runs.items():
        names = [*entries[0]["scores"], "heldout_loss", "probe_score", "mean_pair_cosine_top"]
        values = {
            n: [e["scores"][n]["value"] if n in e["scores"] else e[n] for e in entries]
            for n in names
        }
        summary[device] = {
            n: {"mean": round(statistics.mean(v), 4), "std": round(statistics.stdev(v), 4)}
            if len(v) > 1
            else {"mean": round(v[0], 4)}
            for n, v in values.items()
        }
    print(json.dumps(summary, indent=1), flush=True)
    return {"runs": runs, "summary": summary}


def host_cost(work: Path, corpora: Path, batch: int) -> dict:
    """ns per pair the host spends on the GPU path, on the Quijote + 32 novels' pairs."""
    os.environ["QUIJOTE_HOME"] = str(work / "home")
    import numpy as np
    import torch

    import models.skipgram_torch as gpu
    from flows.train_stages import train_stages
    from models.skipgram import read_ahead
    from tasks.negatives import NegativeSampler
    from tasks.subsample import epoch_file
    from tasks.train import READERS, from_row, row_groups

    torch.set_num_threads(1)
    print("data prep of the Quijote + 32 novels (one epoch)...", flush=True)
    stages = train_stages([str(p) for p in large(corpora)], Params(device="cpu", epochs=1), False)
    tokens = sum(s.meta["tokens"] for s in stages.tokenize)
    files = [shard.file(epoch_file(0)) for shard in stages.pairs]
    pairs = sum(shard.meta["pairs"] for shard in stages.pairs)
    decoded = [block for _, block in row_groups(files)]

    def best(measure, repeats: int) -> float:
        """ns per pair of the fastest of `repeats` runs of `measure()` (the least disturbed)."""
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            measure()
            times.append(time.perf_counter() - started)
        return min(times) / pairs * 1e9

    def consume(blocks: Iterator) -> None:
        """Go through `blocks`, each one dropped before the next, as the trainer does."""
        for _ in blocks:
            pass

    blocks = partial(gpu.host_blocks, rows=gpu.BLOCK_ROWS, pin=False)
    per_pair = {
        "decode": best(lambda: consume(row_groups(files, 0, 1)), 5),
        "stage": best(lambda: consume(blocks(decoded)), 5),
        # as train_task reads an epoch for the GPU path:
        "reading_pipeline": best(
            lambda: consume(read_ahead(blocks(from_row(row_groups(files), 0)))), 5
        ),
    }
    # The trainer's host work on one block of BLOCK_ROWS pairs, measured on a block of as
    # many pairs as that block has SGD steps, each step one pair of one dimension.
    n_steps = len(gpu.steps(gpu.BLOCK_ROWS, gpu.TILE, batch))
    vocab = stages.vocab.meta["words"]
    sampler = NegativeSampler(np.full(vocab, 1 / vocab), k=Params().negative, seed=1)
    trainer = gpu.TorchTrainer(vocab, 1, 0.025, 10**9, sampler, 1, "cpu", 1, batch_size=1)
    tiny = (torch.zeros((n_steps, 2), dtype=torch.int32),)
    scale = pairs / gpu.BLOCK_ROWS  # best() divides by the corpus's pairs
    eager = best(lambda: trainer.train(tiny, 0, 0, 0), 20) * scale
    train_rows = gpu.train_rows
    gpu.train_rows = lambda w_in, *args: torch.zeros((), device=w_in.device)
    block = best(lambda: trainer.train(tiny, 0, 0, 0), 20) * scale
    gpu.train_rows = train_rows
    per_pair |= {"trainer_per_block": block, "trainer_batches_eager": eager - block}
    ratio = pairs / tokens

    def ceiling(*ns: float) -> dict:
        critical = max(ns)
        pairs_per_s = 1e9 / critical
        return {
            "ns_per_pair": round(critical, 2),
            "pairs_per_s": round(pairs_per_s),
            "words_per_s": round(pairs_per_s / ratio),
        }

    result = {
        "pairs": pairs,
        "words": tokens,
        "pairs_per_word": round(ratio, 3),
        "block_rows": gpu.BLOCK_ROWS,
        "batch_size": batch,
        "steps_per_block": n_steps,
        "readers": READERS,
        "ns_per_pair": {name: round(ns, 3) for name, ns in per_pair.items()},
        "dispatch_us_per_step": round((eager - block) * gpu.BLOCK_ROWS / n_steps / 1e3, 1),
        "ceiling": {  # the slower of the reading path and the trainer, which run in parallel
            "cuda_graph": ceiling(per_pair["reading_pipeline"], block),
            "eager": ceiling(per_pair["reading_pipeline"], eager),
        },
    }
    print(json.dumps(result, indent=1), flush=True)
    return result


def revision() -> str:
    """The measured commit (speed.commit), or why there is none."""
    try:
        return commit()
    except OSError as error:
        return f"unknown: {error}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--device", default="cuda", help="cuda, or torch (the same code on the CPU)"
    )
    parser.add_argument("--words", type=int, default=WORDS, help="corpus size of the speed run")
    parser.add_argument("--threads", type=int, default=0, help="quijote train --threads")
    parser.add_argument("--batch-size", type=int, default=Params().batch_size, help="pairs a step")
    parser.add_argument("--host-cost", action="store_true", help="the host's ns per pair")
    parser.add_argument("--compare", action="store_true", help="--device torch against cpu")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--corpus", choices=["quijote", "large"], default="quijote")
    parser.add_argument("--corpora", type=Path, default=CORPORA, help="the mirror, eval/ beside")
    parser.add_argument("--out", type=Path, help="results JSON (default bench/results/…)")
    args = parser.parse_args()
    corpora = args.corpora.resolve()
    os.environ["QUIJOTE_MIRROR"] = str(corpora)  # for the benchmarks, here and in quijote train
    kind = "gpu-host" if args.host_cost else f"gpu-quality-{args.corpus}" if args.compare else "gpu"
    out = args.out or result_path(kind)
    device = "cpu" if args.host_cost or args.compare else args.device
    results: dict = {
        "machine": machine(device, args.threads),
        "commit": revision(),
        "settings": SETTINGS,
        "load_start": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory(prefix="quijote-gpu-") as tmp:
        work = Path(tmp)
        if args.host_cost:
            results["host_cost"] = host_cost(work, corpora, args.batch_size)
        elif args.compare:
            corpus = large(corpora)[: 1 if args.corpus == "quijote" else 3]
            results["corpus"] = args.corpus
            results["batch_size"] = args.batch_size
            results["compare"] = compare(
                work, args.seeds, corpus, args.threads or 2, args.batch_size
            )
        else:
            results["speed"] = speed(
                work, corpora, args.device, args.words, args.threads, args.batch_size
            )
    save(results, out)


if __name__ == "__main__":
    main()
