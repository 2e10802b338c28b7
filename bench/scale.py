"""Scale: time, peak memory and disk of every stage of `quijote train` and of the flow's data
prep on a local Dask cluster of 2 workers, on a seeded synthetic corpus, at several sizes.

    .venv/bin/python bench/scale.py --words 10000000 --words 100000000
    .venv/bin/python bench/scale.py --words 1000000 --out /tmp/scale.json   # a quick check

The corpus (`synthetic_corpus`, kept in `--scratch` and reused when its parameters match):
- Vocabulary: `TYPES` potential word types, rank r drawn with the Zipf–Mandelbrot probability
  ∝ (r + 1 + Q)^-S; the corpus's manifest (in the results) records how many distinct types
  occur and how many occur at least 5 times (the default min_count).
- Words: pseudo-Spanish strings of syllables (an onset from Spanish consonants and digraphs,
  or none, and one vowel, accented or not), the shorter strings for the more frequent ranks,
  assigned by a seeded shuffle within each length; every string is distinct and one word for
  the tokenizer.
- Structure: `TOPICS` topics; every word outside the `FUNCTION_WORDS` most frequent belongs
  to one (seeded). A paragraph of `PARAGRAPH` sentences has one topic; a token is drawn from
  the whole vocabulary and, unless it is a function word, replaced with probability `TOPICAL`
  by a draw from its paragraph's topic (its words' Zipf weights renormalised): words of a
  topic share contexts.
- Sentences: lognormal lengths (median `SENTENCE_MEDIAN` words, sigma `SENTENCE_SIGMA`, at
  most `SENTENCE_MAX`), one a line, ended by a full stop; a blank line between paragraphs.
- Files of `FILE_WORDS` words (each under a document's size limit: one document each), file
  i drawn from the generator seeded with (seed, i), so a smaller corpus is a prefix of a
  larger one.

Each size gets fresh data directories (QUIJOTE_HOME): `quijote train -c <corpus>` with the
default parameters, 2 threads, the CPU kernel, the vectors written as Parquet (word2vec text
of a million words would time the formatting); then the data-prep stages (download to pairs)
as Prefect tasks on a local Dask cluster of 2 single-threaded workers (`dask_prep_worker`: the
flow's own `prepare`, mapped; not the evaluate, classify and publish stages of `quijote run`).

Measured: the whole process tree (the command and every process under it: quijote train's
data-prep child and its workers, Prefect's API server, the Dask scheduler and workers),
sampled every SAMPLE_S seconds: the sum of RSS and of PSS (shared pages divided among the
processes that share them: forked workers share their parent's pages); the data directory's
disk use every DISK_S seconds. A stage's seconds are the wall time from the start of its
first shard to the end of its last (from each shard's stage.json: its seconds and the time
it was written), its peak memory the tree's peak in that window, its disk the size of
`stages/<stage>/` at the end. Growth is the ratio of the largest size to the smallest.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import psutil
from speed import ROOT, commit, machine, result_path, save

from storage.files import disk_bytes

TYPES = 4_000_000
S, Q = 1.1, 2.7  # Zipf–Mandelbrot exponent and shift
TOPICS = 100
FUNCTION_WORDS = 100
TOPICAL = 0.3
PARAGRAPH = 10
FILE_WORDS = 2_000_000
SENTENCE_MEDIAN, SENTENCE_SIGMA, SENTENCE_MAX = 18, 0.6, 200
ONSETS = ("", *"bcdfgjlmnprstvz", "ch", "ll", "rr", "ñ")
VOWELS = "aeiouáéíóú"
SAMPLE_S = 0.2
DISK_S = 2.0
PREP_STAGES = ("download", "tokenize", "vocab", "subsample", "pairs")
QUIJOTE = str(ROOT / ".venv/bin/quijote")


@dataclass(frozen=True)
class Corpus:
    """The generator's parameters."""

    words: int
    seed: int = 1
    types: int = TYPES
    s: float = S
    q: float = Q
    topics: int = TOPICS
    function_words: int = FUNCTION_WORDS
    topical: float = TOPICAL
    paragraph: int = PARAGRAPH
    file_words: int = FILE_WORDS
    sentence_median: float = SENTENCE_MEDIAN
    sentence_sigma: float = SENTENCE_SIGMA
    sentence_max: int = SENTENCE_MAX


def word_strings(types: int, seed: int) -> list[str]:
    """`types` distinct syllable strings, shortest first, shuffled within each length."""
    syllables = [onset + vowel for onset in ONSETS for vowel in VOWELS]
    rng = np.random.default_rng([seed, 0])
    words: list[str] = []
    for length in itertools.count(1):
        need = types - len(words)
        if need <= 0:
            break
        count = len(syllables) ** length
        picks = rng.permutation(count)[:need] if count <= 4 * need else None
        if picks is None:  # sample distinct indices without a permutation of all of them
            picks = np.unique(rng.integers(0, count, int(need * 1.1)))[:need]
            rng.shuffle(picks)
        digits = np.stack([(picks // len(syllables) ** d) % len(syllables) for d in range(length)])
        words += ["".join(syllables[i] for i in column) for column in digits.T.tolist()]
    if len(set(words)) != types:
        raise SystemExit("word strings are not distinct")
    return words


class Sampler:
    """Draws a file's tokens: ranks from the Zipf–Mandelbrot law, by topic or not."""

    def __init__(self, corpus: Corpus) -> None:
        self.corpus = corpus
        weights = (np.arange(corpus.types) + 1 + corpus.q) ** -corpus.s
        self.cdf = np.cumsum(weights / weights.sum())
        topic = np.random.default_rng([corpus.seed, 1]).integers(0, corpus.topics, corpus.types)
        topic[: corpus.function_words] = -1
        self.order = np.argsort(topic, kind="stable")[corpus.function_words :]
        sorted_topic = topic[self.order]
        within = weights[self.order]
        sums = np.bincount(sorted_topic, weights=within, minlength=corpus.topics)
        before = np.repeat(np.cumsum(sums) - sums, np.bincount(sorted_topic))  # earlier topics
        cumulative = np.cumsum(within) - before
        self.topic_cdf = sorted_topic + cumulative / sums[sorted_topic]  # in [t, t+1) for topic t

    def file(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """File `index`'s token ranks and its sentences' lengths."""
        c = self.corpus
        rng = np.random.default_rng([c.seed, 2, index])
        drawn = rng.lognormal(np.log(c.sentence_median), c.sentence_sigma, c.file_words // 10)
        lengths = np.clip(np.rint(drawn), 1, c.sentence_max).astype(np.int64)
        lengths = lengths[: np.searchsorted(np.cumsum(lengths), c.file_words) + 1]
        lengths[-1] -= lengths.sum() - c.file_words
        lengths = lengths[lengths > 0]
        paragraph_topic = rng.integers(0, c.topics, len(lengths) // c.paragraph + 1)
        token_topic = np.repeat(paragraph_topic[np.arange(len(lengths)) // c.paragraph], lengths)
        ranks = np.searchsorted(self.cdf, rng.random(c.file_words), side="right")
        topical = (rng.random(c.file_words) < c.topical) & (ranks >= c.function_words)
        u = token_topic[topical] + rng.random(int(topical.sum()))
        picks = np.searchsorted(self.topic_cdf, u, side="right")
        ranks[topical] = self.order[np.minimum(picks, len(self.order) - 1)]
        return np.minimum(ranks, c.types - 1), lengths


def synthetic_corpus(corpus: Corpus, directory: Path) -> dict:
    """Write the corpus's files into `directory` (reused when its manifest matches); return
    the manifest: the parameters, files, characters and the distinct types that occur."""
    manifest_file = directory / "manifest.json"
    if manifest_file.exists():
        manifest = json.loads(manifest_file.read_text())
        if manifest["corpus"] == asdict(corpus):
            return manifest
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    started = time.perf_counter()
    words = np.array([w + " " for w in word_strings(corpus.types, corpus.seed)], dtype=object)
    sampler = Sampler(corpus)
    counts = np.zeros(corpus.types, dtype=np.int64)
    characters = 0
    files = -(-corpus.words // corpus.file_words)
    for index in range(files):
        ranks, lengths = sampler.file(index)
        ranks = ranks[: corpus.words - index * corpus.file_words]
        counts += np.bincount(ranks, minlength=corpus.types)
        tokens = words[ranks]
        ends = np.cumsum(lengths) - 1
        ends = ends[ends < len(ranks)]
        tokens[ends] = [t[:-1] + ".\n" for t in tokens[ends]]
        paragraph_ends = ends[corpus.paragraph - 1 :: corpus.paragraph]
        tokens[paragraph_ends] = [t + "\n" for t in tokens[paragraph_ends]]
        text = "".join(tokens.tolist())
        characters += len(text)
        (directory / f"part-{index:05d}.txt").write_text(text, encoding="utf-8")
    manifest = {
        "corpus": asdict(corpus),
        "files": files,
        "characters": characters,
        "types_seen": int((counts > 0).sum()),
        "types_seen_5_times": int((counts >= 5).sum()),
        "top1_share": round(float(counts.max() / counts.sum()), 4),
        "top100_share": round(float(np.sort(counts)[-100:].sum() / counts.sum()), 4),
        "seconds": round(time.perf_counter() - started, 1),
    }
    manifest_file.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


# --- measuring ------------------------------------------------------------------------------


def pss_kb(pid: int) -> int:
    """The proportional set size of a process (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def measured(command: list[str], env: dict[str, str], home: Path) -> dict:
    """Run `command` to its end, sampling its process tree's memory and `home`'s disk use."""
    samples: list[tuple[float, int, int]] = []  # time, RSS bytes, PSS bytes
    peak_disk = 0
    load = os.getloadavg()
    started = time.time()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    root = psutil.Process(process.pid)
    done = threading.Event()

    def sample_memory() -> None:
        while not done.wait(SAMPLE_S):
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            rss = 0
            for p in tree:
                with contextlib.suppress(psutil.NoSuchProcess):
                    rss += p.memory_info().rss
            samples.append((time.time(), rss, sum(pss_kb(p.pid) for p in tree) * 1024))

    def sample_disk() -> None:
        nonlocal peak_disk
        while not done.wait(DISK_S):
            peak_disk = max(peak_disk, disk_bytes(home))

    threads = [threading.Thread(target=f, daemon=True) for f in (sample_memory, sample_disk)]
    for thread in threads:
        thread.start()
    stdout = process.stdout.read() if process.stdout else ""
    status = process.wait()
    done.set()
    for thread in threads:
        thread.join()
    seconds = time.time() - started
    if status != 0:
        raise SystemExit(f"failed ({status}): {' '.join(command)}")
    return {
        "seconds": round(seconds, 1),
        "peak_rss_mb": mb(max((s[1] for s in samples), default=0)),
        "peak_pss_mb": mb(max((s[2] for s in samples), default=0)),
        "peak_disk_mb": mb(max(peak_disk, disk_bytes(home))),
        "final_disk_mb": mb(disk_bytes(home)),
        "load_before": [round(x, 2) for x in load],
        "stages": per_stage(home, samples),
        "stdout_tail": stdout.strip().splitlines()[-1:] if stdout.strip() else [],
    }


def per_stage(home: Path, samples: list[tuple[float, int, int]]) -> dict[str, dict]:
    """Each stage's wall window, summed shard seconds, peak tree memory and disk."""
    windows: dict[str, list[tuple[float, float]]] = {}
    for meta_file in home.glob("stages/*/*/stage.json"):
        meta = json.loads(meta_file.read_text())
        end = meta_file.stat().st_mtime
        windows.setdefault(meta["stage"], []).append((end - meta["seconds"], end))
    stages = {}
    for stage, spans in sorted(windows.items(), key=lambda item: min(s for s, _ in item[1])):
        start, end = min(s for s, _ in spans), max(e for _, e in spans)
        inside = [s for s in samples if start <= s[0] <= end + SAMPLE_S]
        stages[stage] = {
            "seconds": round(end - start, 1),
            "shards": len(spans),
            "shard_seconds": round(sum(e - s for s, e in spans), 1),
            "peak_rss_mb": mb(max((s[1] for s in inside), default=0)),
            "peak_pss_mb": mb(max((s[2] for s in inside), default=0)),
            "disk_mb": mb(disk_bytes(home / "stages" / stage)),
        }
    return stages


def mb(n: float) -> float:
    return round(n / 2**20, 1)


def environment(home: Path) -> dict[str, str]:
    env = {**os.environ, "QUIJOTE_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_HOME", None)
    env.pop("PREFECT_API_URL", None)
    return env


def train(corpus: Path, home: Path, out: Path, extra: list[str]) -> dict:
    command = [QUIJOTE, "train", "-c", str(corpus), "--threads=2", "--device=cpu"]
    command += ["--format=parquet", f"--out={out}", *extra]
    result = measured(command, environment(home), home)
    result["summary"] = json.loads(result.pop("stdout_tail")[0])
    return result


def dask_prep(corpus: Path, home: Path) -> dict:
    command = [sys.executable, __file__, "--dask-prep-worker", str(corpus)]
    result = measured(command, environment(home), home)
    result.pop("stdout_tail")
    return result


def dask_prep_worker(corpus: str) -> None:
    """The flow's data-prep stages, mapped on a local Dask cluster of 2 workers."""
    from prefect import flow
    from prefect_dask import DaskTaskRunner

    from cli import main as cli

    cli._prepare_prefect()  # the data directory's Prefect home, a started temporary API
    cli._start_prefect()
    from flows.train_stages import _as_task, _mapped, prepare
    from quijote.params import Params

    runner = DaskTaskRunner(cluster_kwargs={"n_workers": 2, "threads_per_worker": 1})

    @flow(name="scale-data-prep", task_runner=runner)
    def data_prep() -> None:
        prepare([corpus], Params(), _as_task, _mapped, None, None)

    data_prep()


def growth(runs: dict[int, dict]) -> dict:
    """Largest size over smallest, for every measure of the whole run and of each stage."""
    sizes = sorted(runs)
    if len(sizes) < 2:
        return {}
    small, large = runs[sizes[0]], runs[sizes[-1]]

    def ratios(a: dict, b: dict) -> dict:
        keys = ("seconds", "peak_rss_mb", "peak_pss_mb", "disk_mb", "peak_disk_mb")
        return {k: round(b[k] / a[k], 2) for k in keys if a.get(k) and k in b}

    report = {"whole": ratios(small, large)}
    for stage, measures in small["stages"].items():
        if stage in large["stages"]:
            report[stage] = ratios(measures, large["stages"][stage])
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--words", type=int, action="append", help="corpus size (repeatable)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/quijote-scale"))
    parser.add_argument("--no-dask", action="store_true", help="quijote train only")
    parser.add_argument("--train-flag", action="append", default=[], help="for quijote train")
    parser.add_argument("--keep", action="store_true", help="keep the data directories")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sizes = sorted(args.words or [10_000_000, 100_000_000])
    out = args.out or result_path("scale")
    results: dict = {
        "machine": machine(), "commit": commit(), "load_start": os.getloadavg(),
        "train_flags": args.train_flag, "sample_seconds": SAMPLE_S, "runs": {},
    }  # fmt: skip
    train_runs, dask_runs = {}, {}
    for words in sizes:
        corpus = Corpus(words, args.seed)
        directory = args.scratch / f"corpus-{words}-seed{args.seed}"
        manifest = synthetic_corpus(corpus, directory)
        print(f"{words:,} words: corpus {manifest}", flush=True)
        run: dict = {"corpus": manifest}
        home = args.scratch / f"home-train-{words}"
        shutil.rmtree(home, ignore_errors=True)
        run["train"] = train_runs[words] = train(
            directory, home, args.scratch / f"vectors-{words}.parquet", args.train_flag
        )
        print(f"  quijote train: {json.dumps(run['train'])}", flush=True)
        if not args.keep:
            shutil.rmtree(home)
        if not args.no_dask:
            home = args.scratch / f"home-dask-{words}"
            shutil.rmtree(home, ignore_errors=True)
            run["dask_prep"] = dask_runs[words] = dask_prep(directory, home)
            print(f"  dask data prep: {json.dumps(run['dask_prep'])}", flush=True)
            if not args.keep:
                shutil.rmtree(home)
        results["runs"][str(words)] = run
        save(results, out)  # the sizes done so far, should a larger one not finish
    results["growth"] = {"train": growth(train_runs), "dask_prep": growth(dask_runs)}
    save(results, out)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--dask-prep-worker"]:
        dask_prep_worker(sys.argv[2])
    else:
        main()
