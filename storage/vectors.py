"""Vector files: the Parquet contract (word, vector) and the export formats — word2vec text
(gensim's `KeyedVectors.load_word2vec_format`) and TensorBoard projector TSVs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from storage.files import atomic_path


def word2vec_lines(words: list[str], vectors: np.ndarray) -> Iterator[str]:
    """The word2vec text format: a 'count dim' header, then 'word v1 v2 …' per line."""
    yield f"{len(words)} {vectors.shape[1]}\n"
    for word, vector in zip(words, vectors, strict=True):
        yield word + " " + " ".join(f"{x:.6g}" for x in vector) + "\n"


def read_vectors(path: Path) -> tuple[list[str], np.ndarray]:
    table = pq.read_table(path)
    column = table["vector"].combine_chunks()
    dim = column.type.list_size
    return table["word"].to_pylist(), column.flatten().to_numpy().reshape(-1, dim)


def write_word2vec(vectors_parquet: Path, out: Path) -> int:
    """Export a vectors Parquet file as word2vec text (gensim's `load_word2vec_format`)."""
    words, vectors = read_vectors(vectors_parquet)
    with atomic_path(out) as tmp, tmp.open("w", encoding="utf-8") as f:
        f.writelines(word2vec_lines(words, vectors))
    return len(words)


def write_projector(vectors_parquet: Path, directory: Path) -> int:
    """TensorBoard projector files: `vectors.tsv` (one vector per line) and `metadata.tsv`."""
    words, vectors = read_vectors(vectors_parquet)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / "vectors.tsv") as tmp, tmp.open("w", encoding="utf-8") as f:
        f.writelines("\t".join(f"{x:.6g}" for x in vector) + "\n" for vector in vectors)
    with atomic_path(directory / "metadata.tsv") as tmp:
        tmp.write_text("".join(word + "\n" for word in words), encoding="utf-8")
    return len(words)
