"""The stages from corpus to vectors, wired once for both callers: the flow (each stage a
Prefect task, the per-shard stages mapped) and `quijote train` (plain calls, one shard after
another, and Prefect not imported at all)."""

from __future__ import annotations

from typing import Any

from quijote.params import Params
from storage.stages import StageOutput
from tasks.download import download
from tasks.negatives import negatives_task
from tasks.pairs import pairs_task
from tasks.stage_task import StageTask
from tasks.subsample import subsample_task
from tasks.tokenize import tokenize_task
from tasks.train import train_task
from tasks.vocab import vocab_task

DEFAULT_CORPUS = ("quijote",)

Stages = dict[str, StageOutput | list[StageOutput]]


def train_stages(corpus: list[str], params: Params, orchestrated: bool = True) -> Stages:
    """Run the stages from download to train, as Prefect tasks or (`orchestrated=False`) as
    plain functions."""

    def call(stage: StageTask, *args: Any) -> StageOutput:
        if not orchestrated:
            return stage(*args)
        return stage.task(*args, return_state=True).result()

    def each(stage: StageTask, *args: Any) -> list[StageOutput]:
        """`stage` once per shard: list arguments are per shard, the others shared."""
        if not orchestrated:
            return [stage(*_row(args, i)) for i in range(len(shards))]
        from prefect import unmapped

        futures = stage.task.map(*(a if isinstance(a, list) else unmapped(a) for a in args))
        return [future.result() for future in futures]

    documents = call(download, corpus)
    shards = list(range(documents.meta["documents"]))
    sentences = each(tokenize_task, documents, shards)
    vocab = call(vocab_task, sentences, params)
    subsampled = each(subsample_task, sentences, vocab, params, shards)
    pairs = each(pairs_task, subsampled, params, shards)
    negatives = call(negatives_task, vocab, params)
    trained = call(train_task, vocab, pairs, negatives, params)
    return {
        "download": documents,
        "tokenize": sentences,
        "vocab": vocab,
        "subsample": subsampled,
        "pairs": pairs,
        "negatives": negatives,
        "train": trained,
    }


def _row(args: tuple[Any, ...], i: int) -> list[Any]:
    return [a[i] if isinstance(a, list) else a for a in args]
