"""The whole flow on a slice of the Quijote, through Prefect: artifacts, warehouse, cache."""

from dataclasses import replace
from pathlib import Path
from typing import Any
from uuid import UUID

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
from gensim.models import KeyedVectors
from prefect import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
)

from flows.quijote_embeddings import quijote_embeddings
from models.classifier import TextClassifier
from storage import queries, schemas, warehouse
from storage.vectors import read_vectors, write_word2vec
from tasks.classify import accuracy, read_labelled, stratified_split
from tasks.publish import RunSummary
from tests.data import news_csv, quijote_slice

pytestmark = pytest.mark.slow

SMALL = {"dim": 24, "epochs": 4, "min_count": 3, "lr": 0.1}  # sane vectors, quickly
DEGENERATE = {"dim": 24, "epochs": 1, "min_count": 3}  # collapsed: every word alike
CLASSIFIER = {"epochs": 10, "batch_size": 8, "seeds": 2}


@pytest.fixture
def corpus(tmp_path: Path) -> str:
    path = tmp_path / "quijote_slice.txt"
    path.write_text(quijote_slice(30_000), encoding="utf-8")
    return str(path)


def test_flow_writes_every_stage_and_publishes(prefect_api, home: Path, corpus: str) -> None:
    summary = quijote_embeddings((corpus,), SMALL, labelled=None)
    stages = home / "stages"
    expected = {
        "download": ("documents.parquet", schemas.DOCUMENTS),
        "tokenize": ("sentences.parquet", schemas.SENTENCES),
        "vocab": ("vocab.parquet", schemas.VOCAB),
        "subsample": ("epoch-001.parquet", schemas.SUBSAMPLED),
        "pairs": ("epoch-001.parquet", schemas.PAIRS),
        "negatives": ("noise.parquet", schemas.NOISE),
        "train": ("vectors.parquet", schemas.vectors(24)),
        "evaluate": ("evaluation.parquet", schemas.EVALUATION),
    }
    for stage, (name, schema) in expected.items():
        key = summary.stages[stage].key
        key = key[0] if isinstance(key, list) else key  # a stage mapped over one shard
        assert pq.read_schema(stages / stage / key / name) == schema, stage
    metrics = summary.metrics
    assert 29_000 < metrics.corpus_words < 31_000
    assert len(metrics.loss_per_epoch) == SMALL["epochs"]
    assert metrics.loss_per_epoch[1] < metrics.loss_per_epoch[0]

    run_dir = summary.run_dir
    assert (run_dir / "manifest.json").exists()
    assert (run_dir / "stages" / "train" / "vectors.parquet").exists()
    assert (run_dir / "stages" / "pairs" / "00000" / "epoch-001.parquet").exists()
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        (current,) = con.execute("SELECT run_id FROM runs WHERE is_current").fetchone()
        top = con.execute("SELECT word FROM neighbors('sancho', 5)").fetchall()
        (vocab_size,) = con.execute("SELECT count(*) FROM vocab").fetchone()
    assert current == summary.run_id
    assert len(top) == 5 and ("sancho",) not in top
    assert vocab_size == metrics.vocab_size
    _, scores = queries.query(
        "SELECT e.benchmark, e.metric, e.found, e.total FROM runs r JOIN evaluations e "
        "USING (run_id) WHERE r.is_current AND e.benchmark = 'es_ws353'"
    )  # the default benchmarks: the eval/ folder beside the corpus mirror
    assert scores == [("es_ws353", "spearman", scores[0][2], 352)] and scores[0][2] > 0
    _, stored = queries.query("SELECT benchmark, metric, value, found, total FROM evaluations")
    assert sorted(stored) == sorted(tuple(row.values()) for row in metrics.evaluation)

    moved = home.rename(home.with_name("moved"))  # nothing in the data directory names its path
    moved_run = moved / "runs" / run_dir.name
    assert (moved_run / "stages" / "train" / "vectors.parquet").exists()
    assert (moved_run / "stages" / "pairs" / "00000" / "epoch-001.parquet").exists()
    with duckdb.connect(str(moved / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("SELECT word FROM neighbors('sancho', 5)").fetchall() == top


def test_word2vec_export_round_trip_through_gensim(prefect_api, home: Path, corpus: str) -> None:
    quijote_embeddings((corpus,), SMALL, labelled=None)
    run = warehouse.current_run()
    out = home / "vectors.txt"
    write_word2vec(*read_vectors(run.vectors_path), out)
    loaded = KeyedVectors.load_word2vec_format(str(out), binary=False)
    words, vectors = read_vectors(run.vectors_path)
    assert loaded.index_to_key == words
    assert np.allclose(loaded.vectors, vectors, atol=1e-5)
    by_gensim = [w for w, _ in loaded.most_similar("sancho", topn=5)]
    assert by_gensim == [w for w, _ in warehouse.neighbors("sancho", 5)]


def run_flow(
    corpus: str, params: dict, labelled: Path | None = None, promote: bool = False, **more: Any
) -> tuple[RunSummary, UUID]:
    """The flow's summary and its flow run id; a classifier on `labelled` (texto, tema)."""
    table = str(labelled) if labelled else None
    state = quijote_embeddings(
        (corpus,), params, table, "texto", "tema", CLASSIFIER, promote=promote, return_state=True,
        **more,
    )  # fmt: skip
    return state.result(), state.state_details.flow_run_id


def task_states(flow_run_id: UUID) -> dict[str, str]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return {run.name.rsplit("-", 1)[0]: run.state.name for run in runs}


def test_second_run_reuses_every_stage_and_a_change_reruns_downstream(
    prefect_api, home: Path, corpus: str
) -> None:
    labelled = news_csv(home.parent / "news.csv")
    first, first_id = run_flow(corpus, SMALL, labelled)
    assert not any(s.reused for s in first.stages.values())
    assert set(task_states(first_id).values()) == {"Completed"}
    again, again_id = run_flow(corpus, SMALL, labelled)
    assert all(s.reused for s in again.stages.values())
    states = task_states(again_id)
    assert all(states[stage] == "Cached" for stage in again.stages), states
    assert "| train | yes |" in again.report.read_text()
    assert again.stages == {k: replace(v, reused=True) for k, v in first.stages.items()}

    changed, changed_id = run_flow(corpus, {**SMALL, "epochs": 5}, labelled, keep_runs=1)
    reused = {name for name, s in changed.stages.items() if s.reused}
    assert reused == {"download", "tokenize", "vocab", "negatives"}
    assert task_states(changed_id)["prune"] == "Completed"
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as conn:
        runs = conn.execute("SELECT run_id FROM runs ORDER BY started_at").fetchall()
        held = conn.execute("SELECT DISTINCT run_id FROM run_vectors ORDER BY run_id").fetchall()
    assert [r for (r,) in runs] == [first.run_id, again.run_id, changed.run_id]
    assert [r for (r,) in held] == [again.run_id, changed.run_id]  # current, then 1 more
    assert not (first.run_dir / "vectors.txt").exists()  # the pruned run's copy and links
    assert not (first.run_dir / "stages").exists() and (first.run_dir / "report.md").is_file()
    for kept in (again, changed):  # every stage output they link to is still there
        assert (kept.run_dir / "stages" / "train" / "vectors.parquet").is_file()
        assert (kept.run_dir / "stages" / "pairs" / "00000" / "stage.json").is_file()


def test_report_files_and_artifacts(prefect_api, home: Path, corpus: str) -> None:
    labelled = news_csv(home.parent / "news.csv")
    summary, flow_run_id = run_flow(corpus, SMALL, labelled)
    run_dir = summary.run_dir
    for name in ("loss.png", "map.png"):
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (run_dir / "report.md").read_text()
    assert "## Quality gate: passed" in report and "loss.png" in report
    assert "## Benchmarks" in report and "| es_ws353 |" in report
    assert "**sancho**" in report and "| train | no |" in report
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    kinds = {(a.key, a.type) for a in artifacts}
    assert {("quijote-report", "markdown"), ("quijote-stages", "table")} <= kinds
    assert ("quijote-evaluation", "table") in kinds
    assert ("quijote-classifier", "table") in kinds
    progress = [a for a in artifacts if a.type == "progress"]
    assert progress and progress[0].data == 100.0


def test_a_worse_run_is_rejected_and_kept(prefect_api, home: Path, corpus: str) -> None:
    good, _ = run_flow(corpus, SMALL)
    worse, _ = run_flow(corpus, {**SMALL, "lr": 1e-5})  # barely trains: same held-out set
    gate = worse.metrics.gate
    assert not gate.passed and gate.current_run == good.run_id
    assert worse.metrics.heldout_loss > good.metrics.heldout_loss
    assert warehouse.current_run().run_id == good.run_id
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        statuses = dict(con.execute("SELECT run_id, status FROM runs").fetchall())
    assert statuses == {good.run_id: "current", worse.run_id: "rejected"}
    assert len(warehouse.run_neighbors(worse.run_id, "sancho", 5)) == 5
    assert "## Quality gate: rejected" in worse.report.read_text()


def test_the_classifier_is_trained_recorded_and_saved(prefect_api, home: Path, corpus: str) -> None:
    labelled = news_csv(home.parent / "news.csv")
    summary, _ = run_flow(corpus, SMALL, labelled)
    rows = summary.classifier.rows
    assert [row["mode"] for row in rows] == ["finetune", "frozen", "random"]
    assert all(row["seeds"] == 2 and row["n_validation"] == 6 for row in rows)
    _, stored = queries.query(
        "SELECT run_id, mode, accuracy, macro_f1 FROM classifier_metrics ORDER BY mode"
    )
    assert stored == [(summary.run_id, r["mode"], r["accuracy"], r["macro_f1"]) for r in rows]
    report = summary.report.read_text()
    assert "## Classifier (tema of" in report and "| finetune |" in report
    model = TextClassifier.load(summary.classifier.model_dir)
    assert model.settings["mode"] == "finetune" and model.labels == sorted(set(model.labels))
    texts, labels = read_labelled(labelled, "texto", "tema")
    _, held = stratified_split(labels, model.settings["validation"], model.settings["seed"])
    predicted, _ = model.predict([texts[i] for i in held])
    assert accuracy([labels[i] for i in held], predicted) == model.settings["accuracy"]
    assert model.settings["accuracy"] > 0.5  # three easy topics: far above chance (1/3)


def test_a_degenerate_run_is_rejected_and_once_forced_current_never_blocks_a_good_one(
    prefect_api, home: Path, corpus: str
) -> None:
    """The scheduled-deployment story: a collapsed run must not become current, and when an
    operator forces one anyway, the next good run replaces it."""
    good, _ = run_flow(corpus, SMALL)
    degenerate, _ = run_flow(corpus, DEGENERATE)
    gate = degenerate.metrics.gate
    assert not gate.passed and gate.reasons[0].startswith("collapsed: ")
    assert warehouse.current_run().run_id == good.run_id

    forced, _ = run_flow(corpus, DEGENERATE, promote=True)  # every stage reused
    assert not forced.metrics.gate.passed and forced.metrics.promoted
    assert warehouse.current_run().run_id == forced.run_id
    assert "made current by hand" in forced.report.read_text()

    recovered, _ = run_flow(corpus, {**SMALL, "seed": 2})
    gate = recovered.metrics.gate
    assert gate.passed, gate.reasons
    assert (
        f"the current run {forced.run_id} fails the sanity checks (collapsed" in (gate.reasons[0])
    )
    _, rows = queries.query(
        "SELECT run_id, status, promoted_at IS NOT NULL FROM runs ORDER BY started_at"
    )
    assert rows == [
        (good.run_id, "kept", False),
        (degenerate.run_id, "rejected", False),
        (forced.run_id, "kept", True),
        (recovered.run_id, "current", False),
    ]
