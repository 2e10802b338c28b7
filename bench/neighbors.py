"""Neighbours and analogies in the warehouse at 30K, 300K and 1M words: the latency of the SQL
macros (exact and searched by cell), their recall@10 against exact search, what registering a
run costs, and the first query of a fresh process.

    .venv/bin/python bench/neighbors.py                       # 30K, 300K, 1M words x 300 dims
    .venv/bin/python bench/neighbors.py --words 30000 --hnsw  # and DuckDB vss's HNSW index
    .venv/bin/python bench/neighbors.py --vectors data/stages/train/<key>/vectors.parquet

The synthetic vectors (seeded) are built the way word vectors cluster: topics in a few broader
domains, words around their topic, topic sizes Zipfian, an anisotropic spectrum (the variance
of dimension i falls as 1/(1 + i/8)), and rarer words (later ids) noisier. Each size is
registered in a fresh data directory with the cells the warehouse builds from
INDEX_MIN_WORDS words (built here at every size, to compare). The query words are a seeded
sample over the whole vocabulary, and another among the first 10,000 words (the most frequent
in a trained run's file, the least noisy here); exact top-10 lists come from numpy. Latencies
are warm: one read-only connection, after two warm-up queries; `first query` is a new process
that opens the warehouse and runs one `neighbors` call.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
from speed import commit, machine, result_path, save

from storage import schemas, warehouse
from storage.files import write_parquet
from storage.vectors import read_vectors, unit_rows

SIZES = (30_000, 300_000, 1_000_000)
DIM = 300
K = 10
QUERIES = 100  # timed and scored by cell
FREQUENT = 10_000  # recall is also scored on as many queries among the first words
EXACT_QUERIES = 20  # timed exactly (a full scan each)
PROBE_SWEEP = (8, 16, 24, 32, 48)
HNSW_MAX_WORDS = 100_000  # --hnsw stops here: building it took 177 s at 100K x 300 already
FIRST_QUERY = (
    "import sys, time; t = time.perf_counter(); import duckdb; "
    "c = duckdb.connect(sys.argv[1], read_only=True); "
    "c.execute('SELECT * FROM neighbors(?, 10)', [sys.argv[2]]).fetchall(); "
    "print(time.perf_counter() - t)"
)


def synthetic(words: int, dim: int, seed: int = 0) -> np.ndarray:
    """Clustered vectors as described in the module docstring."""
    rng = np.random.default_rng(seed)
    scale = (1 / np.sqrt(1 + np.arange(dim) / 8)).astype(np.float32)
    topics = max(1, words // 50)
    domains = rng.standard_normal((max(1, topics // 20), dim)).astype(np.float32) * scale
    centres = domains[rng.integers(0, len(domains), topics)]
    centres += 0.7 * rng.standard_normal((topics, dim)).astype(np.float32) * scale
    weights = 1 / np.arange(1, topics + 1)
    topic = rng.choice(topics, size=words, p=weights / weights.sum())
    noise = (0.35 + 0.5 * np.arange(words) / words).astype(np.float32)[:, None]
    vectors = centres[topic]
    for start in range(0, words, 100_000):  # in blocks: the noise of 1M x 300 is 1.2 GB
        block = slice(start, start + 100_000)
        draw = rng.standard_normal((len(vectors[block]), dim)).astype(np.float32)
        vectors[block] += noise[block] * draw * scale
    return vectors


def register(home: Path, words: list[str], vectors: np.ndarray) -> dict:
    """A run of these vectors registered as current in `home` (cells at every size)."""
    dim = vectors.shape[1]
    ids = pa.array(np.arange(len(words), dtype=np.int32))
    counts = pa.array(np.arange(len(words), 0, -1, dtype=np.int64))
    write_parquet(
        home / "vocab.parquet", schemas.VOCAB,
        [pa.record_batch([ids, pa.array(words), counts], schema=schemas.VOCAB)],
    )  # fmt: skip
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim)
    write_parquet(
        home / "vectors.parquet", schemas.vectors(dim),
        [pa.record_batch([pa.array(words), column], schema=schemas.vectors(dim))],
    )  # fmt: skip
    now = datetime.now(UTC)
    record = warehouse.RunRecord(
        run_id="bench", started_at=now, finished_at=now, corpus=["synthetic"], params={},
        metrics={}, vocab_path=home / "vocab.parquet", vectors_path=home / "vectors.parquet",
        dim=dim,
    )  # fmt: skip
    start = time.perf_counter()
    warehouse.register_run(record, db=home / "warehouse.duckdb", index_min_words=1)
    seconds = time.perf_counter() - start
    return {
        "register_s": round(seconds, 1),
        "warehouse_mb": round((home / "warehouse.duckdb").stat().st_size / 1e6),
    }


def truth(units: np.ndarray, queries: np.ndarray, exclude: list[list[int]]) -> list[set[int]]:
    """Exact top-K ids by cosine for each query vector, its excluded ids left out."""
    similarities = units @ unit_rows(queries).T
    found = []
    for column, skip in enumerate(exclude):
        scores = similarities[:, column].copy()
        scores[skip] = -np.inf
        found.append(set(np.argpartition(-scores, K)[:K].tolist()))
    return found


def timed(conn: duckdb.DuckDBPyConnection, sql: str, args: list[list]) -> tuple[list, list]:
    """Each query's rows, and its wall and CPU seconds (this process's CPU time: DuckDB's
    threads, less sensitive to other load than wall time), after two warm-up runs."""
    for warm in args[:2]:
        conn.execute(sql, warm).fetchall()
    rows, seconds = [], []
    for arg in args:
        start, started = time.perf_counter(), time.process_time()
        rows.append(conn.execute(sql, arg).fetchall())
        seconds.append((time.perf_counter() - start, time.process_time() - started))
    return rows, seconds


def ms(seconds: list[tuple[float, float]]) -> dict:
    wall = sorted(w for w, _ in seconds)
    return {
        "median_ms": round(1000 * statistics.median(wall), 2),
        "p90_ms": round(1000 * wall[int(0.9 * (len(wall) - 1))], 2),
        "cpu_median_ms": round(1000 * statistics.median(c for _, c in seconds), 2),
    }


def recall(rows: list[list], expected: list[set[int]], index: dict[str, int]) -> float:
    return float(
        np.mean(
            [len({index[w] for w, _ in r} & e) / K for r, e in zip(rows, expected, strict=True)]
        )
    )


def measure(words: list[str], vectors: np.ndarray, work: Path, hnsw: bool) -> dict:
    home = Path(tempfile.mkdtemp(dir=work))
    result = {"words": len(words), "dim": vectors.shape[1], **register(home, words, vectors)}
    db = home / "warehouse.duckdb"
    rng = np.random.default_rng(1)
    picks = rng.choice(len(words), size=(QUERIES, 3), replace=False)
    units = unit_rows(vectors)
    index = {w: i for i, w in enumerate(words)}
    near = truth(units, vectors[picks[:, 0]], [[p] for p in picks[:, 0]])
    targets = units[picks[:, 0]] - units[picks[:, 1]] + units[picks[:, 2]]
    solved = truth(units, targets, [list(p) for p in picks])
    single = [[words[p], K] for p in picks[:, 0]]
    common = rng.choice(min(FREQUENT, len(words)), size=QUERIES, replace=False)
    common_near = truth(units, vectors[common], [[p] for p in common])
    common_single = [[words[p], K] for p in common]
    triples = [[words[a], words[b], words[c], K] for a, b, c in picks]
    with closing(duckdb.connect(str(db), read_only=True)) as conn:
        result["cells"] = conn.execute("SELECT count(*) FROM vector_cells").fetchone()[0]
        _, seconds = timed(conn, "SELECT * FROM neighbors_exact(?, ?)", single[:EXACT_QUERIES])
        result["neighbors_exact"] = ms(seconds)
        _, seconds = timed(conn, "SELECT * FROM analogy_exact(?, ?, ?, ?)", triples[:EXACT_QUERIES])
        result["analogy_exact"] = ms(seconds)
        sweep = {}
        for probes in PROBE_SWEEP:
            sql = f"SELECT * FROM neighbors_approx(?, ?, probes := {probes})"
            rows, seconds = timed(conn, sql, single)
            entry = {**ms(seconds), "recall_at_10": round(recall(rows, near, index), 4)}
            rows, _ = timed(conn, sql, common_single)
            entry["recall_at_10_frequent"] = round(recall(rows, common_near, index), 4)
            sql = f"SELECT * FROM analogy_approx(?, ?, ?, ?, probes := {probes})"
            rows, seconds = timed(conn, sql, triples)
            entry["analogy"] = {
                **ms(seconds),
                "recall_at_10": round(recall(rows, solved, index), 4),
            }
            sweep[probes] = entry
            print(f"  {len(words):>9,} words, {probes:>2} probes: {entry}", flush=True)
        result["by_cell"] = sweep
    first = subprocess.run(
        [sys.executable, "-c", FIRST_QUERY, str(db), words[0]],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    result["first_query_s"] = round(float(first.stdout), 3)
    if hnsw and len(words) <= HNSW_MAX_WORDS:
        result["hnsw"] = hnsw_index(vectors, single, near, words, index)
    result["load"] = os.getloadavg()
    return result


def vss_extension_path() -> Path:
    """The vss extension from the duckdb-extension-vss wheel: `LOAD '<path>'` works offline."""
    from importlib import resources

    package = Path(str(resources.files("duckdb_extension_vss")))
    return package / "extensions" / f"v{duckdb.__version__}" / "vss.duckdb_extension"


def hnsw_index(
    vectors: np.ndarray, single: list[list], near: list[set[int]], words: list[str], index: dict
) -> dict:
    """DuckDB vss's HNSW index (cosine) on the same vectors, in memory: build seconds, and the
    warm latency and recall of its only indexed form, a query against a constant vector
    (DuckDB 1.5 does not use it for a vector that comes from a subquery: duckdb-vss#80)."""
    dim = vectors.shape[1]
    with closing(duckdb.connect()) as conn:
        conn.execute(f"LOAD '{vss_extension_path()}'")
        column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim)
        conn.register("new", pa.table({"word": words, "vector": column}))
        conn.execute(f"CREATE TABLE t AS SELECT word, vector::FLOAT[{dim}] AS vector FROM new")
        start = time.perf_counter()
        conn.execute("CREATE INDEX t_hnsw ON t USING HNSW (vector) WITH (metric = 'cosine')")
        built = time.perf_counter() - start
        sql = (
            f"SELECT word, 0 FROM t ORDER BY array_cosine_distance(vector, ?::FLOAT[{dim}]) "
            f"LIMIT {K + 1}"
        )
        args = [[vectors[index[w]].tolist()] for w, _ in single]
        rows, seconds = timed(conn, sql, args)
        rows = [
            [r for r in found if r[0] != w][:K] for found, (w, _) in zip(rows, single, strict=True)
        ]
        return {
            "build_s": round(built, 1),
            **ms(seconds),
            "recall_at_10": round(recall(rows, near, index), 4),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--words", type=int, action="append", help=f"sizes (default {SIZES})")
    parser.add_argument("--dim", type=int, default=DIM)
    parser.add_argument("--vectors", type=Path, help="a vectors Parquet file instead")
    parser.add_argument(
        "--hnsw", action="store_true", help="also DuckDB vss's HNSW index (up to 100K words)"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = {
        "commit": commit(), "machine": machine(), "load_start": os.getloadavg(),
        "settings": {"k": K, "queries": QUERIES, "exact_queries": EXACT_QUERIES,
                     "index_min_words": warehouse.INDEX_MIN_WORDS, "probes": warehouse.PROBES},
        "sizes": [],
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="neighbors-") as work:
        if args.vectors:
            words, vectors = read_vectors(args.vectors)
            results["vectors"] = str(args.vectors)
            results["sizes"].append(measure(words, vectors, Path(work), args.hnsw))
        for size in args.words or ([] if args.vectors else SIZES):
            vectors = synthetic(size, args.dim)
            words = [f"w{i}" for i in range(size)]
            results["sizes"].append(measure(words, vectors, Path(work), args.hnsw))
    save(results, args.out or result_path("neighbors"))


if __name__ == "__main__":
    main()
