import pyarrow as pa
import pytest

from quijote.errors import QuijoteError
from storage.schemas import VOCAB
from tasks.vocab import build_vocab


def sentences(*rows: list[str]) -> pa.Table:
    return pa.table({"sentence_id": range(len(rows)), "tokens": list(rows)})


def test_counts_ranked_by_count_then_word() -> None:
    table = build_vocab(sentences(["b", "a", "c"], ["a", "b", "d"], ["a"]), min_count=1)
    assert table.schema == VOCAB
    assert table.to_pylist() == [
        {"id": 0, "word": "a", "count": 3},
        {"id": 1, "word": "b", "count": 2},
        {"id": 2, "word": "c", "count": 1},
        {"id": 3, "word": "d", "count": 1},
    ]


def test_min_count_and_max_vocab() -> None:
    data = sentences(["a"] * 5 + ["b"] * 4 + ["c"] * 3 + ["d"])
    assert build_vocab(data, min_count=3)["word"].to_pylist() == ["a", "b", "c"]
    assert build_vocab(data, min_count=1, max_vocab=2)["word"].to_pylist() == ["a", "b"]


def test_empty_vocabulary_is_a_clear_error() -> None:
    with pytest.raises(QuijoteError, match=r"vocabulary is empty.*min_count"):
        build_vocab(sentences(["a", "b"]), min_count=5)
