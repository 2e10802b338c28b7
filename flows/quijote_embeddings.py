"""The `quijote-embeddings` flow: corpus -> skip-gram vectors -> quality gate -> DuckDB
warehouse -> report."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from prefect import Task, flow

from quijote.params import Params
from storage.stages import StageOutput
from tasks.download import download
from tasks.gate import gate_task
from tasks.negatives import negatives_task
from tasks.pairs import pairs_task
from tasks.publish import new_run_id, publish_task
from tasks.report import report_task
from tasks.stage_task import plain
from tasks.subsample import subsample_task
from tasks.tokenize import tokenize_task
from tasks.train import train_task
from tasks.vocab import vocab_task

DEFAULT_CORPUS = ("quijote",)


def train_stages(
    corpus: list[str], params: Params, orchestrated: bool = True
) -> dict[str, StageOutput]:
    """Run the stages from download to train, in order; `orchestrated=False` calls the plain
    functions behind the tasks (no Prefect API), as `quijote train` does."""

    def call(task: Task) -> Callable[..., StageOutput]:
        if not orchestrated:
            return plain(task)
        return lambda *args: task(*args, return_state=True).result()

    documents = call(download)(corpus)
    sentences = call(tokenize_task)(documents)
    vocab = call(vocab_task)(sentences, params)
    subsampled = call(subsample_task)(sentences, vocab, params)
    pairs = call(pairs_task)(subsampled, params)
    negatives = call(negatives_task)(vocab, params)
    trained = call(train_task)(vocab, pairs, negatives, params)
    return {
        "download": documents,
        "tokenize": sentences,
        "vocab": vocab,
        "subsample": subsampled,
        "pairs": pairs,
        "negatives": negatives,
        "train": trained,
    }


@flow(name="quijote-embeddings")
def quijote_embeddings(
    corpus: tuple[str, ...] = DEFAULT_CORPUS, params: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Train skip-gram vectors on `corpus` (names, URLs, files or directories), judge them
    against the warehouse's current run, publish them (as the current run if they pass) and
    report. `params` overrides the defaults in quijote.params."""
    settings = Params.from_mapping(params or {})
    started_at = datetime.now(UTC)
    stages = train_stages(list(corpus), settings)
    verdict = gate_task(stages["train"])
    summary = publish_task(new_run_id(), started_at, list(corpus), settings, stages, verdict)
    return report_task(summary)
