"""Test data: slices of ../shared/corpora (never copied into the project) and small runs."""

import random
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from storage import schemas
from storage.files import write_parquet
from storage.warehouse import RunRecord

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
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), dim)
    write_parquet(
        vectors_path,
        schemas.vectors(dim),
        [pa.record_batch([pa.array(words), column], schema=schemas.vectors(dim))],
    )
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
