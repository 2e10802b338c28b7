"""Vector files: the Parquet contract (word, vector) and the export formats — word2vec text
(gensim's `KeyedVectors.load_word2vec_format`) and TensorBoard projector TSVs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from quijote.errors import QuijoteError, first_line
from storage.files import atomic_path, mapped_ahead, write_parquet
from storage.schemas import vectors as vectors_schema

Vectors = tuple[list[str], np.ndarray]  # words, (words, dim) float32 matrix


def word2vec_lines(words: list[str], vectors: np.ndarray) -> Iterator[str]:
    """The word2vec text format: a 'count dim' header, then 'word v1 v2 …' per line."""
    yield f"{len(words)} {vectors.shape[1]}\n"
    yield from number_lines(vectors, " ", words)


def number_lines(
    vectors: np.ndarray, sep: str, words: list[str] | None = None, rows: int = 8192
) -> Iterator[str]:
    """The vectors as text, `rows` lines at a time: numbers joined by `sep`, after the word when
    `words` are given, each in the shortest form that reads back as the same float32. Arrow
    formats them in C++, a few blocks at once on every core."""
    dim = vectors.shape[1]

    def block(start: int) -> str:
        part = np.ascontiguousarray(vectors[start : start + rows], dtype=np.float32)
        numbers = pc.cast(pa.array(part.reshape(-1)), pa.string())
        offsets = pa.array(np.arange(0, len(numbers) + 1, dim, dtype=np.int32))
        lines = pc.binary_join(pa.ListArray.from_arrays(offsets, numbers), sep)
        if words is not None:
            labels = pa.array(words[start : start + rows], pa.string())
            lines = pc.binary_join_element_wise(labels, lines, sep)
        lines = pc.binary_join_element_wise(lines, "", "\n")  # each line ends in a newline
        ends = np.frombuffer(lines.buffers()[1], np.int32)[lines.offset :][[0, len(lines)]]
        return lines.buffers()[2][ends[0] : ends[1]].to_pybytes().decode()

    yield from mapped_ahead(block, range(0, len(vectors), rows), os.cpu_count() or 1)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (zero rows stay zero), as float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1)


def read_vectors(path: Path) -> Vectors:
    """A vectors Parquet file (the pipeline's own, trusted)."""
    table = pq.read_table(path)
    column = table["vector"].combine_chunks()
    dim = column.type.list_size
    return table["word"].to_pylist(), column.flatten().to_numpy().reshape(-1, dim)


def read_vectors_file(path: Path) -> Vectors:
    """Word vectors a user names: a vectors Parquet file (suffix .parquet) or word2vec text;
    anything else is one clear error."""
    if not path.is_file():
        raise QuijoteError(f"no such vectors file: {path}")
    if path.suffix.lower() != ".parquet":
        return read_word2vec(path)
    try:
        words, matrix = read_vectors(path)
    except (pa.ArrowException, OSError, KeyError, AttributeError) as error:
        raise QuijoteError(f"cannot read vectors from {path}: {first_line(error)}") from None
    return words, matrix.astype(np.float32)


def read_word2vec(path: Path) -> Vectors:
    """The word2vec text format (a 'count dim' header, then 'word v1 … vdim' per line)."""
    try:
        with path.open(encoding="utf-8") as f:
            header = f.readline().split()
            if len(header) != 2 or not all(part.isdigit() for part in header):
                raise QuijoteError(
                    f"{path} is not a word2vec text file (first line should be 'count dim')"
                )
            count, dim = int(header[0]), int(header[1])
            words, rows = [], []
            for number, line in enumerate(f, 2):
                parts = line.rstrip().rsplit(" ", dim)
                if len(parts) != dim + 1 or not parts[0]:
                    raise QuijoteError(f"line {number} of {path} is not 'word' and {dim} numbers")
                words.append(parts[0])
                rows.append(parts[1:])
    except UnicodeDecodeError:
        raise QuijoteError(f"{path} is not UTF-8 word2vec text") from None
    try:
        matrix = np.array(rows, dtype=np.float32).reshape(len(words), dim)
    except ValueError:
        raise QuijoteError(f"{path} has a value that is not a number") from None
    if len(words) != count:
        raise QuijoteError(f"{path} says {count} words but has {len(words)}")
    return words, matrix


def vector_array(matrix: np.ndarray) -> pa.FixedSizeListArray:
    """The rows of a (words, dim) matrix as Arrow's fixed-size lists of float32."""
    flat = pa.array(np.ascontiguousarray(matrix, dtype=np.float32).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1])


def write_vectors(words: list[str] | pa.Array, matrix: np.ndarray, out: Path) -> int:
    """The vectors Parquet file (word, vector): the train stage's output, an export format."""
    schema = vectors_schema(matrix.shape[1])
    table = pa.table([pa.array(words, pa.string()), vector_array(matrix)], schema=schema)
    return write_parquet(out, schema, table.to_batches())


def write_word2vec(words: list[str], matrix: np.ndarray, out: Path) -> int:
    """Vectors as word2vec text (gensim's `load_word2vec_format`)."""
    with atomic_path(out) as tmp, tmp.open("w", encoding="utf-8") as f:
        f.writelines(word2vec_lines(words, matrix))
    return len(words)


def write_projector(words: list[str], matrix: np.ndarray, directory: Path) -> int:
    """TensorBoard projector files: `vectors.tsv` (one vector per line) and `metadata.tsv`."""
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / "vectors.tsv") as tmp, tmp.open("w", encoding="utf-8") as f:
        f.writelines(number_lines(matrix, "\t"))
    with atomic_path(directory / "metadata.tsv") as tmp:
        tmp.write_text("".join(word + "\n" for word in words), encoding="utf-8")
    return len(words)
