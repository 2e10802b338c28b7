"""Report stage: the run's loss curve and a 2-D map of its most frequent words (PNG files in
the run directory), a markdown report beside them, and Prefect artifacts (the report, tables of
stages and neighbours) on the flow run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from quijote.errors import QuijoteError
from storage import warehouse
from storage.files import atomic_path
from storage.vectors import read_vectors
from tasks.evaluate import score_table

if TYPE_CHECKING:  # matplotlib loads only when a report is drawn (not in `quijote train`)
    from matplotlib.figure import Figure

PROBE_WORDS = ("quijote", "sancho", "dulcinea", "rocinante", "caballero")
MAP_WORDS = 150


def plot_loss(loss: list[float], heldout: list[float], path: Path) -> None:
    """Training loss (mean over each epoch) and held-out loss (after each epoch)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    epochs = np.arange(1, len(loss) + 1)
    axes.plot(epochs, loss, marker="o", label="training (mean over the epoch)")
    if heldout:
        axes.plot(epochs, heldout, marker="s", label="held-out (after the epoch)")
    axes.set(xlabel="epoch", ylabel="SGNS loss per pair", title="Loss")
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.legend()
    _save(figure, path)


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """The first two principal components of the (unit-normalised) vectors."""
    unit = vectors / (np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12)
    centred = unit - unit.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    return centred @ components[:2].T


def plot_word_map(words: list[str], vectors: np.ndarray, path: Path, n: int = MAP_WORDS) -> None:
    """The n most frequent words (vocab order is by count) placed by PCA."""
    points = pca_2d(vectors[:n])
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 10))
    axes = figure.subplots()
    axes.scatter(points[:, 0], points[:, 1], s=4, alpha=0.4)
    for word, (x, y) in zip(words[:n], points, strict=True):
        axes.annotate(word, (x, y), fontsize=7)
    axes.set(title=f"The {n} most frequent words (PCA)", xticks=[], yticks=[])
    _save(figure, path)


def _save(figure: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def render_report(summary: dict[str, Any], neighbours: dict[str, list[str]]) -> str:
    """The run's markdown report."""
    m = summary["metrics"]
    gate = m["gate"]
    verdict = gate_outcome(gate["passed"], m["promoted"])
    heldout = m.get("heldout_loss_per_epoch") or []
    lines = [
        f"# Run {summary['run_id']}",
        "",
        f"Corpus: {', '.join(summary['corpus'])} · {m['corpus_words']:,} words · "
        f"{m['sentences']:,} sentences · vocabulary {m['vocab_size']:,} · "
        f"{m['pairs']:,} training pairs · device {m['device']}",
        "",
        "| epoch | training loss | held-out loss |",
        "|---|---|---|",
        *(
            f"| {e + 1} | {loss:.4f} | {heldout[e]:.4f} |"
            if e < len(heldout)
            else f"| {e + 1} | {loss:.4f} | |"
            for e, loss in enumerate(m["loss_per_epoch"])
        ),
        "",
        f"## Quality gate: {verdict}",
        "",
        *(f"- {reason}" for reason in gate["reasons"]),
        "",
        *_evaluation_section(m["evaluation"]),
        "## Nearest neighbours",
        "",
        *(f"- **{word}**: {', '.join(near)}" for word, near in neighbours.items()),
        "",
        *_classifier_section(summary.get("classifier")),
        "## Stages",
        "",
        "| stage | reused | seconds |",
        "|---|---|---|",
        *(
            f"| {name} | {'yes' if s['reused'] else 'no'} | {'' if s['reused'] else s['seconds']} |"
            for name, s in summary["stages"].items()
        ),
        "",
        f"Plots: [loss curve]({summary['run_dir']}/loss.png) · "
        f"[word map]({summary['run_dir']}/map.png) · run directory `{summary['run_dir']}`",
        "",
    ]
    return "\n".join(lines)


def gate_outcome(passed: bool, promoted: bool) -> str:
    """What the gate's verdict meant for the run, in words."""
    if promoted:
        return f"{'passed' if passed else 'failed'}, and the run was made current by hand"
    return "passed: the run is current" if passed else "rejected: the run is kept"


def _evaluation_section(rows: list[dict[str, Any]]) -> list[str]:
    """The benchmark scores (analogy sections left to the warehouse's `evaluations`)."""
    if not rows:
        return ["## Benchmarks", "", "No benchmark files: the evaluate stage was skipped.", ""]
    header, lines = score_table(rows, sections=False)
    return [
        "## Benchmarks",
        "",
        "| " + " | ".join(header) + " |",
        "|---" * len(header) + "|",
        *("| " + " | ".join(line) + " |" for line in lines),
        "",
        "Similarity: Spearman's ρ; analogies: accuracy. Per analogy section: the warehouse "
        "table `evaluations`.",
        "",
    ]


def _classifier_section(classifier: dict[str, Any] | None) -> list[str]:
    """The classifier's validation metrics per mode, when the run trained one."""
    if not classifier:
        return []
    rows = classifier["rows"]
    first = rows[0]
    return [
        f"## Classifier ({classifier['label_column']} of {classifier['data']})",
        "",
        f"Validation split: {first['n_validation']} of {first['n_train'] + first['n_validation']}"
        f" items, stratified; mean ± std over {first['seeds']} seeds.",
        "",
        "| mode | accuracy | macro-F1 |",
        "|---|---|---|",
        *(
            f"| {r['mode']} | {r['accuracy']:.3f} ± {r['accuracy_std']:.3f} | "
            f"{r['macro_f1']:.3f} ± {r['macro_f1_std']:.3f} |"
            for r in rows
        ),
        "",
        f"Model (fine-tuned): `{classifier['model_dir']}`",
        "",
    ]


def probe_neighbours(run_id: str, k: int = 8) -> dict[str, list[str]]:
    """The k nearest words of each probe word in the run's vocabulary."""
    found = {}
    for word in PROBE_WORDS:
        try:
            found[word] = [w for w, _ in warehouse.run_neighbors(run_id, word, k)]
        except QuijoteError:
            continue
    return found


@task(name="report", cache_policy=NONE)
def report_task(summary: dict[str, Any]) -> dict[str, Any]:
    """Write loss.png, map.png and report.md into the run directory; publish artifacts."""
    run_dir = Path(summary["run_dir"])
    metrics = summary["metrics"]
    plot_loss(
        metrics["loss_per_epoch"], metrics.get("heldout_loss_per_epoch") or [], run_dir / "loss.png"
    )
    words, vectors = read_vectors(Path(summary["vectors_path"]))
    plot_word_map(words, vectors, run_dir / "map.png")
    neighbours = probe_neighbours(summary["run_id"])
    report = render_report(summary, neighbours)
    with atomic_path(run_dir / "report.md") as tmp:
        tmp.write_text(report, encoding="utf-8")
    create_markdown_artifact(report, key="quijote-report", description="Run report")
    create_table_artifact(
        [{"stage": n, **s} for n, s in summary["stages"].items()],
        key="quijote-stages",
        description="Stages: key, reused, seconds",
    )
    create_table_artifact(
        [{"word": w, "neighbours": ", ".join(near)} for w, near in neighbours.items()],
        key="quijote-neighbours",
        description="Nearest neighbours of the probe words",
    )
    if metrics["evaluation"]:
        create_table_artifact(
            metrics["evaluation"],
            key="quijote-evaluation",
            description="Benchmarks: Spearman ρ (similarity), 3CosAdd/3CosMul accuracy (analogies)",
        )
    if summary.get("classifier"):
        create_table_artifact(
            summary["classifier"]["rows"],
            key="quijote-classifier",
            description="Classifier: validation accuracy and macro-F1 per mode (mean, std)",
        )
    return {**summary, "neighbours": neighbours, "report": str(run_dir / "report.md")}
