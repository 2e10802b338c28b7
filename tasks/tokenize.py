"""Tokenize stage: one cleaned document (a corpus shard) -> sentences of lowercase Spanish
words. Sentence ids are `shard << 32 | position`, the same whether shards run in sequence or
in parallel.

A word is a run of Unicode letters (á é í ó ú ü ñ and any other letter, with combining marks);
numbers of any kind (7, ¼, ², Ⅻ), punctuation (¿ ¡ « » included) and symbols separate words and
are dropped. Sentences end at . ! ? …
or a blank line (paragraph); hard line wraps inside a paragraph do not break a sentence. A
sentence longer than 1000 words (a file that is one long line without full stops) is cut into
pieces of 1000, as the word2vec C tool does, and a batch holds at most about 2^20 words, so
memory never depends on how long a line or a sentence is.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice

import pyarrow as pa
import pyarrow.parquet as pq
import regex

from storage.files import Tally, write_parquet
from storage.schemas import SENTENCES
from storage.stages import StageOutput, run_stage
from tasks.stage_task import stage_task

VERSION = 4
SHARD_BITS = 32
MAX_SENTENCE_WORDS = 1000  # the word2vec C tool's MAX_SENTENCE_LENGTH
STREAM_CHARS = 1 << 16  # a longer sentence is matched word by word (bounded memory)
BATCH_TOKENS = 1 << 20  # a batch (a Parquet row group) holds at most about this many words
WORD = regex.compile(r"\p{L}[\p{L}\p{M}]*")
SENTENCE_BREAK = regex.compile(r"[.!?…]+|\n[ \t]*\n")


def split_sentences(text: str, max_words: int = MAX_SENTENCE_WORDS) -> Iterator[list[str]]:
    """Yield the non-empty sentences of `text` as lists of lowercase words, a sentence longer
    than `max_words` in pieces of `max_words`. A sentence of more than STREAM_CHARS
    characters is matched word by word, one piece in memory at a time."""
    for chunk in SENTENCE_BREAK.splititer(text):
        if len(chunk) <= STREAM_CHARS:  # nearly all: findall is faster than finditer
            words = WORD.findall(chunk.lower())
            yield from (words[i : i + max_words] for i in range(0, len(words), max_words))
            continue
        matches = WORD.finditer(chunk.lower())
        while piece := [match.group() for match in islice(matches, max_words)]:
            yield piece


def tokenize(
    documents: Iterable[str],
    batch_rows: int = 20_000,
    first_id: int = 0,
    batch_tokens: int = BATCH_TOKENS,
) -> Iterator[pa.RecordBatch]:
    """Sentences of all documents, numbered from `first_id`, in batches of `batch_rows`
    sentences or about `batch_tokens` words, whichever comes first."""
    sentence_id = first_id
    rows: list[list[str]] = []
    tokens = 0
    for text in documents:
        for words in split_sentences(text):
            rows.append(words)
            tokens += len(words)
            if len(rows) == batch_rows or tokens >= batch_tokens:
                yield _batch(sentence_id, rows)
                sentence_id += len(rows)
                rows, tokens = [], 0
    if rows:
        yield _batch(sentence_id, rows)


def _batch(first_id: int, rows: list[list[str]]) -> pa.RecordBatch:
    ids = pa.array(range(first_id, first_id + len(rows)), pa.int64())
    return pa.record_batch([ids, pa.array(rows, SENTENCES.field("tokens").type)], schema=SENTENCES)


@stage_task("tokenize")
def tokenize_task(documents: StageOutput, shard: int) -> StageOutput:
    """Tokenize document number `shard` into its `sentences.parquet`."""

    def texts() -> Iterator[str]:
        file = pq.ParquetFile(documents.file("documents.parquet"))
        yield file.read_row_group(shard, columns=["text"]).column("text")[0].as_py()

    def build(out):
        sentences = Tally(tokenize(texts(), first_id=shard << SHARD_BITS), "tokens")
        write_parquet(out / "sentences.parquet", SENTENCES, sentences)
        return {"sentences": sentences.rows, "tokens": sentences.values}

    content = documents.meta["document_sha256"][shard]
    return run_stage("tokenize", VERSION, {"shard": shard}, [content], build)
