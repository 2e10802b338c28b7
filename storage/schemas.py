"""Parquet schemas of the data contracts (ids are int32)."""

from __future__ import annotations

import pyarrow as pa

DOCUMENTS = pa.schema(
    [("source", pa.string()), ("sha256", pa.string()), ("text", pa.large_string())]
)
SENTENCES = pa.schema([("sentence_id", pa.int64()), ("tokens", pa.list_(pa.string()))])
VOCAB = pa.schema([("id", pa.int32()), ("word", pa.string()), ("count", pa.int64())])
SUBSAMPLED = pa.schema([("sentence_id", pa.int64()), ("ids", pa.list_(pa.int32()))])
# Pairs are read every epoch: required columns store no definition levels to decode.
PAIRS = pa.schema(
    [
        pa.field("center", pa.int32(), nullable=False),
        pa.field("context", pa.int32(), nullable=False),
    ]
)
NOISE = pa.schema([("id", pa.int32()), ("probability", pa.float64())])
EVALUATION = pa.schema(
    [
        ("benchmark", pa.string()),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("found", pa.int32()),
        ("total", pa.int32()),
    ]
)


def vectors(dim: int) -> pa.Schema:
    return pa.schema([("word", pa.string()), ("vector", pa.list_(pa.float32(), dim))])
