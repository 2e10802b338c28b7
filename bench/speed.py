"""Skip-gram speed and quality: `quijote train` against gensim 4.4, whole process against whole
process, on the same files with the same settings (sg=1, dim 100, window 5, negative 5,
min_count 5, sample 1e-3, 5 epochs, 2 threads/workers).

    .venv/bin/python bench/speed.py                 # both corpora, 3 alternating repetitions
    .venv/bin/python bench/speed.py --reps 5 --corpus quijote
    .venv/bin/python bench/speed.py --memory        # peak RSS on the large corpus and on it 4x

A warm-up `quijote train` on the Quijote first fills numba's cache. Each repetition runs gensim
and `quijote train` one after the other (the order alternates), each in a fresh process;
`quijote train` gets an empty QUIJOTE_HOME (nothing cached). words/s is the corpus's words
(quijote's tokenizer) x epochs / the whole process's wall seconds. Repetition r
uses seed r+1 for both, so gensim against gensim with another seed is the noise floor of the
quality comparison. Then, once: `quijote train` again on a filled QUIJOTE_HOME (every stage
reused) and with an empty numba cache (the kernel's first-run compile).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date
from importlib.metadata import version
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CORPORA = ROOT.parent / "shared" / "corpora"
QUIJOTE = [CORPORA / "quijote_pg2000.txt"]
LARGE = [*QUIJOTE, CORPORA / "eltec_spa", CORPORA / "gutenberg_es"]
SETTINGS = {"dim": 100, "window": 5, "negative": 5, "min_count": 5, "sample": 1e-3, "epochs": 5}
THREADS = 2
TOP_WORDS = 1000
K = 10
PROBES = [
    ("rey", "reina"), ("caballero", "escudero"), ("dulcinea", "toboso"), ("sancho", "panza"),
    ("rocinante", "caballo"), ("rocinante", "rucio"), ("padre", "madre"), ("hijo", "hija"),
    ("hombre", "mujer"), ("señor", "señora"), ("don", "doña"), ("día", "noche"),
    ("cura", "barbero"), ("duque", "duquesa"), ("bachiller", "sansón"), ("hermano", "hermana"),
    ("mano", "brazo"), ("oro", "plata"), ("pan", "vino"), ("cielo", "tierra"),
]  # fmt: skip


def gensim_worker(out: str, seed: int, paths: list[str]) -> None:
    """The gensim side, run as its own process: read, tokenize (lowercase runs of letters,
    sentences at . ! ? … and blank lines), train, save word2vec text."""
    import regex
    from gensim.models import Word2Vec

    word = regex.compile(r"\p{L}[\p{L}\p{M}]*")
    sentence_break = regex.compile(r"[.!?…]+|\n[ \t]*\n")
    sentences = []
    for path in map(Path, paths):
        for file in sorted(path.glob("*.txt")) if path.is_dir() else [path]:
            for chunk in sentence_break.split(file.read_text(encoding="utf-8-sig")):
                words = word.findall(chunk.lower())
                if words:
                    sentences.append(words)
    model = Word2Vec(
        sentences, sg=1, vector_size=SETTINGS["dim"], window=SETTINGS["window"],
        negative=SETTINGS["negative"], min_count=SETTINGS["min_count"],
        sample=SETTINGS["sample"], epochs=SETTINGS["epochs"], workers=THREADS, seed=seed,
    )  # fmt: skip
    model.wv.save_word2vec_format(out)


def run(command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> dict:
    """Run a whole process: wall seconds, peak RSS (MB), its stdout, the load before it."""
    load = os.getloadavg()[0]
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, text=True)
    try:
        stdout = process.stdout.read() if process.stdout else ""
        _, status, usage = os.wait4(process.pid, 0)
    except BaseException:  # the benchmark stopped: no process left running on its own
        process.kill()
        raise
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"failed ({status}): {' '.join(command)}")
    return {"seconds": seconds, "rss_mb": usage.ru_maxrss / 1024, "load": load, "stdout": stdout}


def quijote(
    paths: list[Path],
    out: Path,
    seed: int,
    home: Path,
    tree: Path = ROOT,
    device: str = "cpu",
    threads: int = THREADS,
    env: dict[str, str] | None = None,
    **settings: int,
) -> dict:
    """`quijote train` (SETTINGS, and `settings` over them) in the data directory `home`, with
    the code of `tree` (this checkout, or another commit's worktree) first on Python's path:
    the process runs in `tree`, since `python -c` puts its working directory before
    PYTHONPATH. The process's seconds, peak RSS and JSON summary."""
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in (SETTINGS | settings).items()]
    command = [sys.executable, "-c", "from cli.main import main; main()", "train"]
    command += [*(f"-c{p}" for p in paths), *flags, f"--seed={seed}", f"--threads={threads}"]
    command += [f"--device={device}", f"--out={out}"]
    path = os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")]))
    variables = {"QUIJOTE_HOME": str(home), "PYTHONPATH": path}
    variables["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    result = run(command, {**os.environ, **variables, **(env or {})}, tree)
    result["summary"] = json.loads(result.pop("stdout").strip().splitlines()[-1])
    return result


def gensim(paths: list[Path], out: Path, seed: int) -> dict:
    command = [sys.executable, __file__, "--gensim-worker", str(out), str(seed)]
    result = run(command + [str(p) for p in paths])
    result.pop("stdout")
    return result


def read_word2vec(path: Path) -> tuple[list[str], np.ndarray]:
    with path.open(encoding="utf-8") as f:
        f.readline()
        rows = [line.rstrip().split(" ") for line in f]
    vectors = np.array([r[1:] for r in rows], dtype=np.float32)
    return [r[0] for r in rows], vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def neighbours(words: list[str], unit: np.ndarray, queries: list[str]) -> list[set[str]]:
    index = {w: i for i, w in enumerate(words)}
    rows = unit[[index[q] for q in queries]]
    similarity = rows @ unit.T
    similarity[np.arange(len(queries)), [index[q] for q in queries]] = -np.inf
    top = np.argpartition(-similarity, K, axis=1)[:, :K]
    return [{words[i] for i in row} for row in top]


def overlap(a: Path, b: Path) -> float:
    """Mean share of common top-10 neighbours over the most frequent words of both files."""
    (wa, ua), (wb, ub) = read_word2vec(a), read_word2vec(b)
    common = set(wb)
    queries = [w for w in wa if w in common][:TOP_WORDS]  # wa is ordered by count
    na, nb = neighbours(wa, ua, queries), neighbours(wb, ub, queries)
    return float(np.mean([len(x & y) / K for x, y in zip(na, nb, strict=True)]))


def probes(path: Path) -> dict:
    """Mean cosine of the related probe pairs, of random frequent pairs, and the mean rank of
    the second word among the first's neighbours."""
    words, unit = read_word2vec(path)
    index = {w: i for i, w in enumerate(words)}
    pairs = [(index[a], index[b]) for a, b in PROBES if a in index and b in index]
    cosines = [float(unit[a] @ unit[b]) for a, b in pairs]
    ranks = [int((unit @ unit[a] > unit[a] @ unit[b]).sum()) for a, b in pairs]  # self = 1
    rng = np.random.default_rng(0)
    top = min(TOP_WORDS, len(words))
    x, y = rng.integers(0, top, 2000), rng.integers(0, top, 2000)
    random_pairs = np.einsum("ij,ij->i", unit[x[x != y]], unit[y[x != y]])
    return {
        "pairs": len(pairs),
        "probe_cosine": round(float(np.mean(cosines)), 4),
        "random_cosine": round(float(np.mean(random_pairs)), 4),
        "median_rank": float(np.median(ranks)),
    }


def alternating(paths: list[Path], reps: int, work: Path) -> Iterator[tuple[int, str, Path, dict]]:
    """Repetition r (seed r + 1) of gensim and of `quijote train` (a fresh QUIJOTE_HOME,
    `work/home-<r>`) on `paths`, the order alternating: (r, side, vectors file, process)."""
    for rep in range(reps):
        for name in ("gensim", "quijote") if rep % 2 == 0 else ("quijote", "gensim"):
            out = work / f"{name}-{rep}.txt"
            if name == "gensim":
                yield rep, name, out, gensim(paths, out, rep + 1)
            else:
                yield rep, name, out, quijote(paths, out, rep + 1, work / f"home-{rep}")


def compare(paths: list[Path], reps: int, work: Path) -> dict:
    """Alternating repetitions on one corpus, then the warm and first-compile runs."""
    runs: dict[str, list[dict]] = {"gensim": [], "quijote": []}
    for rep, name, out, result in alternating(paths, reps, work):
        result["rep"], result["out"] = rep, str(out)
        runs[name].append(result)
        print(f"  rep {rep} {name}: {result['seconds']:.2f} s, {result['rss_mb']:.0f} MB, "
              f"load {result['load']:.2f}", flush=True)  # fmt: skip
    words = runs["quijote"][0]["summary"]["words"]
    total_words = words * SETTINGS["epochs"]
    report: dict = {"words": words, "vocab": runs["quijote"][0]["summary"]["vocab"]}
    for name, results in runs.items():
        seconds = statistics.median(r["seconds"] for r in results)
        report[name] = {
            "seconds": [round(r["seconds"], 2) for r in results],
            "median_seconds": round(seconds, 2),
            "words_per_s": round(total_words / seconds),
            "peak_rss_mb": round(max(r["rss_mb"] for r in results)),
            "load": [round(r["load"], 2) for r in results],
            "probes": probes(Path(results[0]["out"])),
        }
    report["quijote"]["stages"] = stage_seconds(work / "home-0")
    ratio = report["gensim"]["median_seconds"] / report["quijote"]["median_seconds"]
    report["ratio"] = round(ratio, 3)
    report["overlap_top10"] = {
        "quijote_vs_gensim": [overlap(Path(q["out"]), Path(g["out"])) for q, g in zip(
            runs["quijote"], runs["gensim"], strict=True)],
        "gensim_vs_gensim_other_seed": [overlap(Path(a["out"]), Path(b["out"])) for a, b in zip(
            runs["gensim"], runs["gensim"][1:], strict=False)],
        "quijote_vs_quijote_other_seed": [overlap(Path(a["out"]), Path(b["out"])) for a, b in zip(
            runs["quijote"], runs["quijote"][1:], strict=False)],
    }  # fmt: skip
    warm = quijote(paths, work / "warm.txt", 1, work / "home-0")
    numba = {"NUMBA_CACHE_DIR": str(work / "numba")}
    first = quijote(paths, work / "first.txt", 1, work / "home-first", env=numba)
    report["quijote_all_stages_reused_seconds"] = round(warm["seconds"], 2)
    report["quijote_first_compile_seconds"] = round(first["seconds"], 2)
    return report


def stage_seconds(home: Path) -> dict[str, float]:
    """Seconds per stage (summed over shards) of one cold `quijote train`."""
    totals: dict[str, float] = {}
    for meta in home.glob("stages/*/*/stage.json"):
        stage = json.loads(meta.read_text())
        totals[stage["stage"]] = round(totals.get(stage["stage"], 0) + stage["seconds"], 2)
    return totals


def memory(work: Path) -> dict:
    """Peak RSS of `quijote train` on the large corpus and on 4 distinct copies of it."""
    copies = work / "large-x4"
    copies.mkdir()
    files = [f for p in LARGE for f in (sorted(p.glob("*.txt")) if p.is_dir() else [p])]
    for n in range(4):
        for f in files:
            text = f.read_text(encoding="utf-8-sig")
            (copies / f"{n}-{f.name}").write_text(f"{text}\n\ncopia {n}\n", encoding="utf-8")
    report = {}
    for name, paths in (("large", LARGE), ("large_x4", [copies])):
        result = quijote(paths, work / f"{name}.txt", 1, work / f"home-{name}")
        summary = result["summary"]
        report[name] = {
            "words": summary["words"],
            "vocab": summary["vocab"],
            "seconds": round(result["seconds"], 2),
            "words_per_s": summary["words_per_s"],
            "peak_rss_mb": round(result["rss_mb"]),
            "load": round(result["load"], 2),
        }
        print(f"  {name}: {report[name]}", flush=True)
    return report


def cpu_name() -> str:
    """The processor's model name."""
    return next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor(),
    )  # fmt: skip


def machine() -> dict:
    meminfo = Path("/proc/meminfo").read_text().split()
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "ram_gib": round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 2**20, 1),
        "python": platform.python_version(),
        **{lib: version(lib) for lib in ("torch", "numba", "gensim", "numpy", "pyarrow")},
        "device": "cpu",
        "threads": THREADS,
    }


def commit() -> str:
    """The measured commit, with `+changes` when the working tree differs from it; $BENCH_COMMIT
    where there is no checkout (bench/device.sh's copy on the GPU machine)."""
    if given := os.environ.get("BENCH_COMMIT"):
        return given
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    changes = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"],
                             capture_output=True, text=True)  # fmt: skip
    return head.stdout.strip() + ("+changes" if changes.stdout.strip() else "")


def result_path(kind: str) -> Path:
    """bench/results/<kind>-<date>-<commit>-<cpu>.json, with a number added rather than
    replacing a file already there (another machine's run of the same commit, say)."""
    cpu = cpu_name().lower()  # not machine(): it asks for libraries a GPU machine may lack
    tag = next((name for name in ("epyc", "xeon", "ryzen", "core") if name in cpu), "cpu")
    stem = ROOT / "bench" / "results" / f"{kind}-{date.today().isoformat()}-{commit()}-{tag}"
    out, number = stem.with_suffix(".json"), 2
    while out.exists():
        out, number = stem.with_name(f"{stem.name}-{number}.json"), number + 1
    return out


def save(results: dict, out: Path) -> None:
    """Write a benchmark's results JSON, with the load at the end and the CPU time of the
    processes it ran."""
    results["load_end"] = os.getloadavg()
    results["bench_cpu_seconds"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"written {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--corpus", choices=["quijote", "large", "both"], default="both")
    parser.add_argument("--memory", action="store_true", help="the memory runs only")
    parser.add_argument("--out", type=Path, help="results JSON (default bench/results/…)")
    args = parser.parse_args()
    kind = "memory" if args.memory else "speed"
    out = args.out or result_path(kind)
    results: dict = {
        "machine": machine(), "commit": commit(), "settings": SETTINGS,
        "load_start": os.getloadavg(),
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="quijote-bench-") as tmp:
        work = Path(tmp)
        # a warm-up that fills numba's cache (the first compile is measured on its own)
        quijote(QUIJOTE, work / "warm-up.txt", 1, work / "warm-up")
        if args.memory:
            results["memory"] = memory(work)
        else:
            chosen = {"quijote": QUIJOTE, "large": LARGE}
            for name, paths in chosen.items():
                if args.corpus in (name, "both"):
                    print(f"{name}:", flush=True)
                    (work / name).mkdir()
                    results[name] = compare(paths, args.reps, work / name)
                    print(json.dumps({k: v for k, v in results[name].items()}, indent=1))
    save(results, out)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--gensim-worker"]:
        gensim_worker(sys.argv[2], int(sys.argv[3]), sys.argv[4:])
    else:
        main()
