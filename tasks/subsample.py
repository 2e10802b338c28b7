"""Subsample stage: map tokens to vocabulary ids and drop frequent words at random, redrawn
for every epoch, with the word2vec keep rule (or the paper's discard rule). A share of the
sentences, the same whatever the run's seed, is held out of training (`heldout.parquet`) to
measure a validation loss."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from quijote.params import Params
from storage.files import Tally, mapped_ahead, read_row_groups, write_parquet
from storage.schemas import SUBSAMPLED
from storage.stages import StageOutput, run_stage
from tasks.seeding import HELDOUT_SEED, Stream
from tasks.seeding import rng as seeded
from tasks.stage_task import stage_task

VERSION = 4
HELDOUT_FILE = "heldout.parquet"
IdBatch = tuple[pa.Array, np.ndarray, np.ndarray]  # sentence ids, token ids, sentence lengths


def keep_probabilities(counts: np.ndarray, sample: float, rule: str = "word2vec") -> np.ndarray:
    """Probability of keeping each word, f = count / total of the vocabulary's counts.

    word2vec (C tool, gensim): min(1, (sqrt(f/t) + 1) * t/f); paper: 1 - discard, discard =
    1 - sqrt(t/f), that is min(1, sqrt(t/f)).
    """
    f = counts / counts.sum()
    ratio = sample / f
    keep = (np.sqrt(1 / ratio) + 1) * ratio if rule == "word2vec" else np.sqrt(ratio)
    return np.minimum(keep, 1.0)


def is_heldout(sentence_ids: np.ndarray, share: float) -> np.ndarray:
    """Which sentences are held out: a hash of the id, so the choice is the same in every
    epoch, for every batch size and every run seed."""
    mixed = np.random.SeedSequence(HELDOUT_SEED).generate_state(1, np.uint64)[0]
    hashed = (sentence_ids.astype(np.uint64) + mixed) * np.uint64(0x9E3779B97F4A7C15)
    return (hashed >> np.uint64(11)).astype(np.float64) / 2.0**53 < share


def split_heldout(
    batches: Iterable[pa.RecordBatch], share: float, heldout: bool
) -> Iterator[pa.RecordBatch]:
    """The training sentences (`heldout=False`) or the held-out ones (`heldout=True`)."""
    for batch in batches:
        ids = batch.column("sentence_id").to_numpy()
        yield batch.filter(pa.array(is_heldout(ids, share) == heldout))


def vocabulary_ids(sentences: Iterable[pa.RecordBatch], words: pa.Array) -> Iterator[IdBatch]:
    """Each batch's sentence ids, its tokens as vocabulary ids (id = position in `words`,
    -1 for a word not in it) and the sentences' lengths. All the batches are looked up at
    once (so held together: a document's at most), as Arrow hashes `words` for each lookup,
    which at a million words costs more than a batch's tokens."""
    batches = list(sentences)
    tokens = [batch.column("tokens").flatten() for batch in batches]
    ids = pc.index_in(pa.chunked_array(tokens, pa.string()), value_set=words)
    ids = ids.fill_null(-1).to_numpy().astype(np.int32)
    ends = np.cumsum([len(t) for t in tokens], dtype=np.int64)
    for batch, start, end in zip(batches, ends - [len(t) for t in tokens], ends, strict=True):
        lengths = np.diff(batch.column("tokens").offsets.to_numpy())
        yield batch.column("sentence_id"), ids[start:end], lengths


def subsample_ids(
    batches: Iterable[IdBatch], keep: np.ndarray, rng: np.random.Generator
) -> Iterator[pa.RecordBatch]:
    """Out-of-vocabulary tokens removed, each word kept with probability `keep[id]`;
    sentences left with no word are dropped."""
    for sentence_ids, ids, lengths in batches:
        kept = (ids >= 0) & (rng.random(len(ids)) < keep[np.maximum(ids, 0)])
        row_of = np.repeat(np.arange(len(lengths)), lengths)
        kept_per_row = np.bincount(row_of[kept], minlength=len(lengths))
        offsets = np.concatenate([[0], np.cumsum(kept_per_row)]).astype(np.int32)
        lists = pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids[kept]))
        rows = pa.record_batch([sentence_ids, lists], schema=SUBSAMPLED)
        yield rows.filter(pa.array(kept_per_row > 0))


def subsample(
    sentences: Iterable[pa.RecordBatch],
    words: pa.Array,
    keep: np.ndarray,
    rng: np.random.Generator,
) -> Iterator[pa.RecordBatch]:
    """Sentences as vocabulary ids, subsampled (`subsample_ids` of `vocabulary_ids`)."""
    return subsample_ids(vocabulary_ids(sentences, words), keep, rng)


def epoch_file(epoch: int) -> str:
    return f"epoch-{epoch:03d}.parquet"


@stage_task("subsample")
def subsample_task(
    sentences: StageOutput, vocab: StageOutput, params: Params, shard: int
) -> StageOutput:
    """One shard's subsampled sentences: a file per epoch, and the held-out ones."""
    table = pq.read_table(vocab.file("vocab.parquet"))
    keep = keep_probabilities(table["count"].to_numpy(), params.sample, params.subsample_rule)

    def part(heldout: bool) -> Iterator[pa.RecordBatch]:
        batches = read_row_groups(sentences.file("sentences.parquet"))
        return split_heldout(batches, params.heldout, heldout)

    def build(out):
        # the shard's ids once for all epochs (4 bytes a token: bounded by the document), the
        # held-out sentences' in the same lookup
        training_batches, heldout_batches = list(part(False)), list(part(True))
        ids = list(vocabulary_ids(training_batches + heldout_batches, table["word"]))
        training, heldout_ids = ids[: len(training_batches)], ids[len(training_batches) :]

        def epoch(e: int) -> int:
            rng = seeded(params.seed, e, Stream.SUBSAMPLE, shard)
            return write_ids(out / epoch_file(e), subsample_ids(training, keep, rng))

        # the epochs in threads: numpy and Parquet release the GIL
        words_per_epoch = list(mapped_ahead(epoch, range(params.epochs), os.cpu_count() or 1))
        rng = seeded(HELDOUT_SEED, 0, Stream.HELDOUT_SUBSAMPLE, shard)
        heldout = write_ids(out / HELDOUT_FILE, subsample_ids(heldout_ids, keep, rng))
        return {"kept_words_per_epoch": words_per_epoch, "heldout_words": heldout}

    names = "sample", "subsample_rule", "epochs", "heldout", "seed"
    settings = {**params.subset(*names), "shard": shard}
    return run_stage("subsample", VERSION, settings, [sentences.key, vocab.key], build)


def write_ids(path: Path, batches: Iterable[pa.RecordBatch]) -> int:
    """Write subsampled sentences to `path`; return the words kept."""
    kept = Tally(batches, "ids")
    write_parquet(path, SUBSAMPLED, kept)
    return kept.values
