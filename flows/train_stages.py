"""The stages from corpus to vectors, wired once for both callers: the flow (each stage a
Prefect task, the per-shard stages mapped) and `quijote train` (plain calls, Prefect not
imported at all, the per-shard stages in forked worker processes, one per core)."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
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
            rows = [_row(args, i) for i in range(len(shards))]
            return in_workers(stage, rows, meanwhile=load_kernels)
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


PER_SHARD = {stage.name: stage for stage in (tokenize_task, subsample_task, pairs_task)}


def in_workers(
    stage: StageTask, rows: list[list[Any]], meanwhile: Callable[[], None] = lambda: None
) -> list[StageOutput]:
    """`stage(*row)` for every row in forked worker processes (as many as cores and rows: the
    stages hold the GIL), running `meanwhile()` here while they work. Forked, so the workers
    start at once and inherit what this process has loaded."""
    workers = min(len(rows), os.cpu_count() or 1)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        futures = [pool.submit(_run, stage.name, row) for row in rows]  # forks every worker
        meanwhile()
        return [future.result() for future in futures]


def _run(name: str, row: list[Any]) -> StageOutput:
    return PER_SHARD[name](*row)


def load_kernels() -> None:
    """Load the compiled kernels from numba's cache (the first compiled call of a process
    pays numba's set-up), so that workers forked afterwards start with them loaded. Only
    serial kernels: a process forked after numba has started its thread pool may hang."""
    import numpy as np

    from models.sgns_kernel import alias_table
    from tasks.pairs import window_pairs

    alias_table(np.ones(1))
    window_pairs(np.zeros(1, np.int32), np.ones(1, np.int64), 1, np.random.default_rng(0))
