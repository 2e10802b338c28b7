"""Tokenize stage: cleaned documents -> sentences of lowercase Spanish words.

A word is a run of letters (á é í ó ú ü ñ and any other Unicode letter); digits, punctuation
(¿ ¡ « » included) and underscores separate words and are dropped. Sentences end at . ! ? …
or a blank line (paragraph); hard line wraps inside a paragraph do not break a sentence.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from storage.files import write_parquet
from storage.schemas import SENTENCES
from storage.stages import StageOutput, run_stage
from tasks.stage_task import stage_task

VERSION = 1
WORD = re.compile(r"[^\W\d_]+")
SENTENCE_BREAK = re.compile(r"[.!?…]+|\n[ \t]*\n")


def split_sentences(text: str) -> Iterator[list[str]]:
    """Yield the non-empty sentences of `text` as lists of lowercase words."""
    for chunk in SENTENCE_BREAK.split(text):
        words = WORD.findall(chunk.lower())
        if words:
            yield words


def tokenize(documents: Iterable[str], batch_rows: int = 20_000) -> Iterator[pa.RecordBatch]:
    """Sentences of all documents, numbered from 0, in record batches of `batch_rows`."""
    sentence_id = 0
    rows: list[list[str]] = []
    for text in documents:
        for words in split_sentences(text):
            rows.append(words)
            if len(rows) == batch_rows:
                yield _batch(sentence_id, rows)
                sentence_id += len(rows)
                rows = []
    if rows:
        yield _batch(sentence_id, rows)


def _batch(first_id: int, rows: list[list[str]]) -> pa.RecordBatch:
    ids = pa.array(range(first_id, first_id + len(rows)), pa.int64())
    return pa.record_batch([ids, pa.array(rows, SENTENCES.field("tokens").type)], schema=SENTENCES)


@stage_task("tokenize")
def tokenize_task(documents: StageOutput) -> StageOutput:
    """Read the documents one at a time and write `sentences.parquet`."""

    def texts() -> Iterator[str]:
        for batch in pq.ParquetFile(documents.file("documents.parquet")).iter_batches(
            batch_size=1, columns=["text"]
        ):
            yield batch.column(0)[0].as_py()

    def build(out):
        stats = {"sentences": 0, "tokens": 0}

        def counted(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            for batch in batches:
                stats["sentences"] += batch.num_rows
                stats["tokens"] += len(batch.column("tokens").flatten())
                yield batch

        write_parquet(out / "sentences.parquet", SENTENCES, counted(tokenize(texts())))
        return stats

    return run_stage("tokenize", VERSION, {}, [documents.key], build)
