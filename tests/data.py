"""Test data: slices of ../shared/corpora (never copied into the project) and small runs."""

from __future__ import annotations

import random
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import torch
import torch.nn.functional as F

from storage import schemas
from storage.files import write_parquet
from storage.vectors import write_vectors
from storage.warehouse import RunRecord

if TYPE_CHECKING:
    from tasks.publish import RunSummary, StageRun

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
QUIJOTE = CORPORA / "quijote_pg2000.txt"


def first_words(text: str, words: int) -> str:
    """The beginning of `text` up to its `words`-th whitespace-separated word."""
    ends = re.finditer(r"\S+", text)
    last = next(m for i, m in enumerate(ends, 1) if i == words)
    return text[: last.end()] + "\n"


def quijote_slice(words: int) -> str:
    """The first `words` words of the novel's text (after the Gutenberg header)."""
    text = QUIJOTE.read_text(encoding="utf-8-sig").replace("\r\n", "\n")
    return first_words(text[text.index("En un lugar de la Mancha") :], words)


# Axes: royal, male, female. rey - hombre + mujer lands on reina.
WORDS = ["rey", "reina", "hombre", "mujer", "niño", "niña"]
VECTORS = np.array(
    [[1, 1, 0], [1, 0, 1], [0, 1, 0], [0, 0, 1], [0.1, 1, 0.2], [0.1, 0.2, 1]], dtype=np.float32
)
OTHER_WORDS = ["molino", "gigante", "sancho", "dulcinea"]
OTHER_VECTORS = np.eye(4, dtype=np.float32) + 0.1


def make_run(directory: Path, run_id: str, words: list[str], vectors: np.ndarray) -> RunRecord:
    """Write a run's vocab and vectors Parquet under `directory` and describe the run."""
    dim = vectors.shape[1]
    vocab_path = directory / run_id / "vocab.parquet"
    vectors_path = directory / run_id / "vectors.parquet"
    ids = pa.array(range(len(words)), pa.int32())
    counts = pa.array(range(len(words), 0, -1), pa.int64())
    write_parquet(
        vocab_path,
        schemas.VOCAB,
        [pa.record_batch([ids, pa.array(words), counts], schema=schemas.VOCAB)],
    )
    write_vectors(words, vectors, vectors_path)
    return RunRecord(
        run_id=run_id,
        started_at=datetime(2024, 4, 23, 10, 0, tzinfo=UTC),
        finished_at=datetime(2024, 4, 23, 10, 5, tzinfo=UTC),
        corpus=["quijote"],
        params={"dim": dim, "window": 5},
        metrics={"vocab_size": len(words), "loss_per_epoch": [2.5, 1.5]},
        vocab_path=vocab_path,
        vectors_path=vectors_path,
        dim=dim,
    )


def summary_for(
    run_dir: Path, vectors_path: Path, stages: dict[str, StageRun], **metrics: Any
) -> RunSummary:
    """The summary of a published run in `run_dir`, as the report stage and `quijote run`'s
    printout get it: a first run that passed the gate, no benchmark, no classifier; `metrics`
    replace the defaults."""
    from tasks.gate import Verdict  # Prefect: imported only by the tests that use this
    from tasks.publish import Metrics, RunSummary

    defaults = {
        "documents": 1, "corpus_words": 1000, "sentences": 50, "vocab_size": 100, "pairs": 4000,
        "loss_per_epoch": [2.5, 2.0], "heldout_loss_per_epoch": [], "heldout_loss": None,
        "heldout_set": "", "evaluation": [], "promoted": False, "device": "cpu",
        "train_seconds": 1.0, "gate": Verdict(True, ["first run: nothing to compare with"]),
    }  # fmt: skip
    return RunSummary(
        run_id=run_dir.name,
        status="current",
        started_at=datetime(2024, 4, 23, 10, 0, tzinfo=UTC),
        finished_at=datetime(2024, 4, 23, 10, 5, tzinfo=UTC),
        corpus=["quijote"],
        inputs=[],
        params={},
        stages=stages,
        metrics=Metrics(**defaults | metrics),
        libraries={},
        python="3.12",
        machine="test",
        run_dir=run_dir,
        vectors_path=vectors_path,
        classifier=None,
    )


# Generated labelled news: words of their topic mixed with common words.
TOPICS = {
    "deporte": ["gol", "partido", "equipo", "liga", "balón", "jugador"],
    "política": ["gobierno", "elección", "partido", "ley", "ministro", "voto"],
    "ciencia": ["estudio", "célula", "planeta", "científico", "virus", "datos"],
}
COMMON = ["el", "la", "de", "que", "en", "por", "un", "una"]


def news(rows_per_topic: int = 12, seed: int = 0) -> tuple[list[str], list[str]]:
    """Short generated texts and their topics."""
    rng = random.Random(seed)
    texts, labels = [], []
    for topic, words in TOPICS.items():
        for _ in range(rows_per_topic):
            chosen = rng.choices(words, k=4) + rng.choices(COMMON, k=4)
            rng.shuffle(chosen)
            texts.append(" ".join(chosen).capitalize() + ".")
            labels.append(topic)
    return texts, labels


def news_csv(path: Path, rows_per_topic: int = 12) -> Path:
    """`news()` as a CSV file with the columns id, texto, tema."""
    texts, labels = news(rows_per_topic)
    ids = [str(i) for i in range(len(texts))]
    pacsv.write_csv(pa.table({"id": ids, "texto": texts, "tema": labels}), path)
    return path


def toy_epochs(vocab: int, block: int, pairs: int = 40_000, negatives: bool = False):
    """`epochs(e, start)` for `train_sgns`: epoch e's toy pairs from row `start` on, in blocks
    (with 5 random negatives per pair when `negatives`). Words 0..vocab/2-1 co-occur with each
    other, and so do the rest."""
    half = vocab // 2

    def epochs(epoch: int, start: int = 0):
        rng = np.random.default_rng(epoch)
        group = rng.integers(0, 2, pairs) * half
        center = (group + rng.integers(0, half, pairs)).astype(np.int32)
        context = (group + rng.integers(0, half, pairs)).astype(np.int32)
        columns = [center, context]
        if negatives:
            columns.append(rng.integers(0, vocab, (pairs, 5)).astype(np.int32))
        for s in range(start, pairs, block):
            yield tuple(column[s : s + block] for column in columns)

    return epochs


def resumes_identically(new_trainer, epochs, checkpoints: list[int]) -> None:
    """Train 3 epochs saving after every block; then resume fresh trainers from the given
    checkpoints (by number): each must end with the uninterrupted run's vectors and losses."""
    from models.skipgram import Position, train_sgns

    saved = []

    def save(position, state) -> None:
        saved.append((position, {name: array.copy() for name, array in state.items()}))

    whole = train_sgns(new_trainer(), epochs, 3, 120_000, save=save, save_every=0)
    assert len({(p["epoch"], p["first"]) for p, _ in saved}) == len(saved) > max(checkpoints)
    for position, state in (saved[i] for i in checkpoints):
        trainer = new_trainer()
        trainer.load_state(state)
        resumed = train_sgns(trainer, epochs, 3, 120_000, start=Position(**position))
        np.testing.assert_array_equal(resumed.vectors, whole.vectors)
        assert resumed.loss_per_epoch == whole.loss_per_epoch
        assert resumed.pairs == whole.pairs


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_HOLD = (
    "import duckdb, sys, time; c = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == 'read'); "
    "print('open', flush=True); time.sleep(float(sys.argv[3]))"
)


@contextmanager
def warehouse_held(db: Path, mode: str, seconds: float) -> Iterator[subprocess.Popen]:
    """Another process holding the warehouse `db` open for `seconds`, as a run does ("write")
    or as `quijote sql` does while its query runs ("read"): yielded once it holds it, stopped
    at the end of the block."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(db), mode, str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    try:
        assert holder.stdout.readline() == "open\n"
        yield holder
    finally:  # not Popen's own exit: after a timed-out wait it waits again, without a bound
        holder.kill()
        holder.stdout.close()
        holder.wait(timeout=10)


def sgns_loss(w_in, w_out, center, context, negatives) -> torch.Tensor:
    """The SGNS loss summed over pairs, in plain torch (autograd's reference): the center's
    input vector against the context's output vector and the negatives' (a negative equal to
    the context skipped)."""
    v = w_in[center]
    positive = F.logsigmoid((w_out[context] * v).sum(1))
    scores = torch.bmm(w_out[negatives], v.unsqueeze(2)).squeeze(2)
    keep = (negatives != context.unsqueeze(1)).float()
    return -(positive + (F.logsigmoid(-scores) * keep).sum(1)).sum()


def heldout_problem(vocab: int, dim: int, pairs: int = 400, seed: int = 5):
    """Random weights and held-out pairs (center, context, negatives), some negatives equal to
    the center."""
    rng = np.random.default_rng(seed)
    w_in = rng.normal(0, 0.5, (vocab, dim)).astype(np.float32)
    w_out = rng.normal(0, 0.5, (vocab, dim)).astype(np.float32)
    center, context = rng.integers(0, vocab, (2, pairs)).astype(np.int32)
    negatives = rng.integers(0, vocab, (pairs, 5)).astype(np.int32)
    negatives[::7, 0] = center[::7]
    return w_in, w_out, (center, context, negatives)


def heldout_reference(w_in: np.ndarray, w_out: np.ndarray, batch: tuple) -> float:
    """The mean held-out loss in float64, as the trainers measure it: the context predicting
    the center (sgns_loss with the two swapped)."""
    center, context, negatives = (torch.from_numpy(a.astype(np.int64)) for a in batch)
    weights = torch.from_numpy(w_in.astype(np.float64)), torch.from_numpy(w_out.astype(np.float64))
    return float(sgns_loss(*weights, context, center, negatives)) / len(center)
