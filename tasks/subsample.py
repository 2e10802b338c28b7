"""Subsample stage: map tokens to vocabulary ids and drop frequent words at random, redrawn
for every epoch, with the word2vec keep rule (or the paper's discard rule)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NONE

from quijote.params import Params
from storage.files import write_parquet
from storage.schemas import SUBSAMPLED
from storage.stages import StageOutput, run_stage

VERSION = 1
STREAM = 1  # random stream id of this stage, see `epoch_rng`


def epoch_rng(seed: int, epoch: int, stream: int) -> np.random.Generator:
    """The generator of one stage (`stream`) for one epoch: runs are reproducible by seed."""
    return np.random.default_rng((seed, epoch, stream))


def keep_probabilities(counts: np.ndarray, sample: float, rule: str = "word2vec") -> np.ndarray:
    """Probability of keeping each word, f = count / total of the vocabulary's counts.

    word2vec (C tool, gensim): min(1, (sqrt(f/t) + 1) * t/f); paper: 1 - discard, discard =
    1 - sqrt(t/f), that is min(1, sqrt(t/f)).
    """
    f = counts / counts.sum()
    ratio = sample / f
    keep = (np.sqrt(1 / ratio) + 1) * ratio if rule == "word2vec" else np.sqrt(ratio)
    return np.minimum(keep, 1.0)


def subsample(
    sentences: Iterable[pa.RecordBatch],
    words: pa.Array,
    keep: np.ndarray,
    rng: np.random.Generator,
) -> Iterator[pa.RecordBatch]:
    """Sentences as vocabulary ids (id = position in `words`), out-of-vocabulary tokens removed,
    each word kept with probability `keep[id]`; sentences left with no word are dropped."""
    for batch in sentences:
        tokens = batch.column("tokens")
        ids = pc.index_in(tokens.flatten(), value_set=words).to_numpy(zero_copy_only=False)
        known = ~np.isnan(ids)
        ids = np.where(known, ids, 0).astype(np.int32)
        kept = known & (rng.random(len(ids)) < keep[ids])
        lengths = np.diff(tokens.offsets.to_numpy())
        row_of = np.repeat(np.arange(len(lengths)), lengths)
        kept_per_row = np.bincount(row_of[kept], minlength=len(lengths))
        offsets = np.concatenate([[0], np.cumsum(kept_per_row)]).astype(np.int32)
        lists = pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids[kept]))
        rows = pa.record_batch([batch.column("sentence_id"), lists], schema=SUBSAMPLED)
        yield rows.filter(pa.array(kept_per_row > 0))


def epoch_file(epoch: int) -> str:
    return f"epoch-{epoch:03d}.parquet"


@task(name="subsample", cache_policy=NONE)
def subsample_task(sentences: StageOutput, vocab: StageOutput, params: Params) -> StageOutput:
    """One file of subsampled sentences per epoch."""
    table = pq.read_table(vocab.file("vocab.parquet"))
    keep = keep_probabilities(table["count"].to_numpy(), params.sample, params.subsample_rule)

    def build(out):
        words_per_epoch = []
        for epoch in range(params.epochs):
            batches = pq.ParquetFile(sentences.file("sentences.parquet")).iter_batches()
            rng = epoch_rng(params.seed, epoch, STREAM)
            counted = _count_ids(subsample(batches, table["word"], keep, rng), words_per_epoch)
            write_parquet(out / epoch_file(epoch), SUBSAMPLED, counted)
        return {"kept_words_per_epoch": words_per_epoch}

    settings = params.subset("sample", "subsample_rule", "epochs", "seed")
    return run_stage("subsample", VERSION, settings, [sentences.key, vocab.key], build)


def _count_ids(batches: Iterable[pa.RecordBatch], totals: list[int]) -> Iterator[pa.RecordBatch]:
    total = 0
    for batch in batches:
        total += len(batch.column("ids").flatten())
        yield batch
    totals.append(total)
