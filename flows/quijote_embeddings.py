"""The `quijote-embeddings` flow: corpus -> skip-gram vectors -> benchmarks -> quality gate ->
text classifier (when a labelled table is configured) -> DuckDB warehouse -> report. The data-prep
stages (tokenize, subsample, pairs) run once per corpus document (shard), mapped: on threads by
default, on a Dask cluster with `on_dask`."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from prefect import Flow, flow, get_run_logger

from flows.train_stages import DEFAULT_CORPUS, train_stages
from quijote.params import Params
from storage.benchmarks import find_benchmarks
from storage.stages import stages_lock
from storage.tables import DEFAULT_LABELLED, find_labelled
from tasks.evaluate import evaluate_task
from tasks.gate import gate_task
from tasks.publish import RunSummary, new_run_id, prune_task, publish_task
from tasks.report import report_task


@flow(name="quijote-embeddings")
def quijote_embeddings(
    corpus: tuple[str, ...] = DEFAULT_CORPUS,
    params: dict[str, Any] | None = None,
    labelled: str | None = DEFAULT_LABELLED,
    text_column: str = "Text",
    label_column: str = "Topic",
    classifier: dict[str, Any] | None = None,
    benchmarks: tuple[str, ...] | None = None,
    promote: bool = False,
    text_field: str | None = None,
    glob: str | None = None,
    keep_runs: int | None = None,
) -> RunSummary:
    """Train skip-gram vectors on `corpus` (names, URLs, files or directories: see README
    "Corpora"; `text_field` names the text of JSON lines, CSV or Parquet records, `glob` the
    files to read in a directory or zip archive), score them on `benchmarks` (similarity and
    analogy files; None: the eval/ folder beside the corpus mirror, () for none), judge them
    against the warehouse's current run, train the text classifier on `labelled` (a CSV or
    Parquet file, or a path inside the corpus mirror; None for no classifier), publish them (as
    the current run if the vectors pass, or whatever the gate says with `promote`) and report;
    then prune the vectors of all runs but the current one and the `keep_runs` most recent
    others, with the stage outputs only they used (None: keep everything).
    `params` overrides the defaults in quijote.params, `classifier` those of
    tasks.classify.ClassifyParams."""
    from tasks.classify import ClassifyParams, classify_task  # torch: not for `quijote train`

    log = get_run_logger()
    settings = Params.from_mapping(params or {})
    classify_settings = ClassifyParams.from_mapping(classifier or {})
    table = find_labelled(labelled, text_column, label_column) if labelled else None
    if labelled and table is None:
        log.warning("no %s in the corpus mirror: no classifier this run", labelled)
    sets = find_benchmarks(benchmarks)
    if not sets:
        log.warning("no benchmark files: no evaluate stage this run")
    with stages_lock():  # no prune removes a stage output while this run uses it
        started_at = datetime.now(UTC)
        stages = train_stages(list(corpus), settings, text_field=text_field, glob=glob)
        if sets:
            evaluated = evaluate_task.task(stages.train, sets, settings, return_state=True)
            stages = replace(stages, evaluate=evaluated.result())
        verdict = gate_task(stages.train, sets, settings.restrict_vocab)
        if table:
            classified = classify_task.task(
                stages.train, table, classify_settings, return_state=True
            )
            stages = replace(stages, classify=classified.result())
        summary = publish_task(
            new_run_id(), started_at, list(corpus), settings, stages, verdict, promote
        )
        summary = report_task(summary)
    if keep_runs is not None:
        prune_task(keep_runs)
    return summary


def on_dask(workers: int = 2, address: str | None = None) -> Flow:
    """The same flow with its mapped stages on Dask: a local cluster of `workers` processes,
    or the running scheduler at `address` (tcp://host:8786)."""
    from prefect_dask import DaskTaskRunner

    runner = (
        DaskTaskRunner(address=address)
        if address
        else DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1})
    )
    return quijote_embeddings.with_options(task_runner=runner)
