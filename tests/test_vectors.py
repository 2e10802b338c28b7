"""Vector exports: word2vec text and projector TSVs read back as exactly the stored float32s."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from gensim.models import KeyedVectors

from quijote.errors import QuijoteError
from storage.vectors import (
    number_lines,
    read_vectors,
    read_vectors_file,
    unit_rows,
    write_projector,
    write_vectors,
    write_word2vec,
)

ODD = [0.0, -0.0, 1e-10, -2.25e-5, 3.0, 1.5e20, 123456.7, 0.1]


def test_the_parquet_word2vec_and_projector_files_read_back_exactly(tmp_path: Path) -> None:
    matrix = np.random.default_rng(0).normal(0, 0.3, (7, len(ODD))).astype(np.float32)
    matrix[3] = ODD
    words = ["señor", "año", "qué", "a", "b", "c", "d"]
    assert write_vectors(pa.array(words), matrix, tmp_path / "v.parquet") == len(words)
    vector_type = pq.read_schema(tmp_path / "v.parquet").field("vector").type
    assert vector_type == pa.list_(pa.float32(), len(ODD))
    read_words, read_matrix = read_vectors(tmp_path / "v.parquet")
    assert read_words == words
    np.testing.assert_array_equal(read_matrix, matrix)

    assert write_word2vec(words, matrix, tmp_path / "v.txt") == len(words)
    loaded = KeyedVectors.load_word2vec_format(str(tmp_path / "v.txt"))
    assert loaded.index_to_key == words
    np.testing.assert_array_equal(loaded.vectors, matrix)

    write_projector(words, matrix, tmp_path / "projector")
    tsv = np.loadtxt(tmp_path / "projector" / "vectors.tsv", delimiter="\t", dtype=np.float32)
    np.testing.assert_array_equal(tsv, matrix)
    assert (tmp_path / "projector" / "metadata.tsv").read_text().split() == words


def test_lines_are_the_same_whatever_the_chunk_size() -> None:
    matrix = np.arange(15, dtype=np.float32).reshape(5, 3) / 7
    words = list("abcde")
    whole = "".join(number_lines(matrix, " ", words))
    assert whole == "".join(number_lines(matrix, " ", words, rows=2))
    assert whole.splitlines()[1] == "b " + " ".join(str(x) for x in matrix[1])


def test_a_zero_row_stays_a_zero_row_when_scaled_to_unit_length() -> None:
    units = unit_rows(np.array([[3, 4], [0, 0]], dtype=np.float32))
    np.testing.assert_array_equal(units, np.array([[0.6, 0.8], [0, 0]], dtype=np.float32))
    assert units.dtype == np.float32


def test_a_truncated_word2vec_file_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "v.txt"
    path.write_text("3 2\nrey 1 0\nreina 0 1\n")  # the header says 3 words, 2 follow
    with pytest.raises(QuijoteError, match=r"v\.txt says 3 words but has 2$"):
        read_vectors_file(path)
