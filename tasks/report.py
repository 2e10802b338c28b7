"""Report stage: the run's loss curve and a map of its most frequent content words (PNG files in
the run directory), a markdown report beside them, and Prefect artifacts on the flow run (the
report with both pictures embedded, tables of stages and neighbours)."""

from __future__ import annotations

import base64
import io
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from quijote.errors import QuijoteError
from storage import warehouse
from storage.files import atomic_path
from storage.vectors import read_vectors, unit_rows
from tasks.evaluate import score_table
from tasks.publish import ClassifierRun, RunSummary

if TYPE_CHECKING:  # matplotlib loads only when a report is drawn (not in `quijote train`)
    from matplotlib.figure import Figure

PROBE_WORDS = ("quijote", "sancho", "dulcinea", "rocinante", "caballero")
MAP_WORDS = 300
# Dark enough to read as text on white: one colour per k-means cluster of the word map.
CLUSTER_COLOURS = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#e6730b",
    "#8c564b",
    "#c2389b",
    "#138d90",
)

# Spanish closed-class words (articles, pronouns, determiners, quantifiers, prepositions,
# conjunctions, the commonest adverbs and interjections) and the forms of the auxiliaries
# haber, ser and estar, with the older spellings and contractions of Golden Age prose.
FUNCTION_WORDS = frozenset(
    """
    el la lo los las un una unos unas al del
    yo me mí conmigo tú te ti contigo vos vuesa vuesas él ella ello ellos ellas le les se sí
    consigo nos nosotros nosotras os vosotros vosotras usted ustedes
    mi mis tu tus su sus nuestro nuestra nuestros nuestras vuestro vuestra vuestros vuestras
    mío mía míos mías tuyo tuya tuyos tuyas suyo suya suyos suyas
    este esta esto estos estas ese esa eso esos esas aquel aquella aquello aquellos aquellas
    éste ésta éstos éstas ése ésa ésos ésas aquél aquélla aquéllos aquéllas aqueste aquesta
    dél della dello dellos dellas deste desta desto destos destas dese desa deso
    que qué quien quién quienes quiénes cual cuál cuales cuáles cuyo cuya cuyos cuyas
    cuanto cuánto cuanta cuánta cuantos cuántos cuantas cuántas como cómo donde dónde adonde
    adónde cuando cuándo
    todo toda todos todas otro otra otros otras alguno alguna algunos algunas algún ninguno
    ninguna ningún nada nadie algo mucho mucha muchos muchas poco poca pocos pocas tanto tanta
    tantos tantas tan cada mismo misma mismos mismas mesmo mesma mesmos mesmas tal tales demás
    a ante bajo cabe con contra de desde durante en entre hacia hasta para por según sin so
    sobre tras
    y e ni o u pero mas sino aunque porque pues si conque mientras
    no ya más menos muy aún aun también tampoco así ansí aquí allí allá acá ahí ahora agora
    entonces luego después antes siempre nunca jamás solo sólo casi oh ah ay
    he has ha hemos habemos habéis han hay había habías habíamos habíais habían hube hubo
    hubieron hubiera hubieras hubieran hubiese hubiesen haya hayas hayamos hayan habrá habría
    habrían haber habiendo
    soy eres es somos sois son era eras éramos erais eran fui fuiste fue fuimos fueron fuera
    fueras fueran fuese fueses fuesen sea seas seamos sean será serás serán sería serían ser
    siendo sido
    estoy estás está estamos estáis están estaba estabas estaban estuve estuvo estuvieron
    estuviera estuviese esté estés estén estar estando
    """.split()  # noqa: SIM905 (a word list reads better as text)
)


def plot_loss(loss: list[float], heldout: list[float], path: Path) -> None:
    """Training loss (mean over each epoch) and held-out loss (after each epoch)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=110)
    axes = figure.subplots()
    epochs = np.arange(1, len(loss) + 1)
    axes.plot(epochs, loss, marker="o", label="training (mean over the epoch)")
    if heldout:
        axes.plot(epochs, heldout, marker="s", label="held-out (after the epoch)")
    axes.set(xlabel="epoch", ylabel="SGNS loss per pair", title="Loss")
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.legend()
    _save(figure, path)


def content_words(words: list[str]) -> list[int]:
    """Indices of the words made of letters only that are not function words."""
    return [i for i, w in enumerate(words) if w.isalpha() and w not in FUNCTION_WORDS]


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """The first two principal components of the (unit-normalised) vectors."""
    unit = unit_rows(vectors)
    centred = unit - unit.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    return centred @ components[:2].T


def tsne_2d(vectors: np.ndarray, perplexity: float = 15.0, steps: int = 500) -> np.ndarray:
    """A 2-D t-SNE of the vectors by cosine distance, started from their PCA (no randomness)."""
    unit = unit_rows(vectors)
    n = len(unit)
    distances = np.maximum(2.0 - 2.0 * unit @ unit.T, 0.0)
    np.fill_diagonal(distances, np.inf)
    distances -= distances.min(axis=1, keepdims=True)
    low, high = np.full(n, -10.0), np.full(n, 10.0)  # bisection on log(precision) per word
    for _ in range(60):
        middle = (low + high) / 2
        p = np.exp(-distances * np.exp(middle)[:, None])
        p /= p.sum(axis=1, keepdims=True)
        entropy = -(p * np.log(np.maximum(p, 1e-12))).sum(axis=1)
        spread = entropy > np.log(perplexity)
        low, high = np.where(spread, middle, low), np.where(spread, high, middle)
    p = np.maximum((p + p.T) / (2 * n), 1e-12)
    points = pca_2d(vectors)
    points *= 1e-4 / (points[:, 0].std() + 1e-12)
    velocity, gains = np.zeros_like(points), np.ones_like(points)
    for step in range(steps):
        early = step < steps // 4
        squares = (points**2).sum(axis=1)
        kernel = 1.0 / (1.0 + squares[:, None] + squares[None, :] - 2.0 * points @ points.T)
        np.fill_diagonal(kernel, 0.0)
        q = np.maximum(kernel / kernel.sum(), 1e-12)
        weights = ((12.0 if early else 1.0) * p - q) * kernel
        gradient = 4.0 * (weights.sum(axis=1)[:, None] * points - weights @ points)
        same = np.sign(gradient) == np.sign(velocity)
        gains = np.maximum(np.where(same, gains * 0.8, gains + 0.2), 0.01)
        velocity = (0.5 if early else 0.8) * velocity - 100.0 * gains * gradient
        points += velocity
    return points


def kmeans(points: np.ndarray, k: int, steps: int = 50) -> np.ndarray:
    """Cluster labels of the points by k-means, started from a farthest-point traversal."""
    centres = [points[0]]
    for _ in range(1, k):
        nearest = np.min([((points - c) ** 2).sum(axis=1) for c in centres], axis=0)
        centres.append(points[nearest.argmax()])
    centres = np.array(centres)
    for _ in range(steps):
        labels = ((points[:, None, :] - centres[None]) ** 2).sum(axis=-1).argmin(axis=1)
        centres = np.array(
            [
                points[labels == c].mean(axis=0) if (labels == c).any() else centres[c]
                for c in range(k)
            ]
        )
    return labels


def map_selection(words: list[str], neighbours: dict[str, list[str]], n: int) -> list[int]:
    """Indices of the probe words and their neighbours, then of the most frequent content words
    (vocab order is by count): n in all."""
    index = {w: i for i, w in enumerate(words)}
    marked = (w for p, near in neighbours.items() if p in index for w in (p, *near) if w in index)
    chosen = dict.fromkeys(index[w] for w in marked)
    for i in content_words(words):
        if len(chosen) >= n:
            break
        chosen.setdefault(i)
    return list(chosen)


def plot_word_map(
    words: list[str],
    vectors: np.ndarray,
    neighbours: dict[str, list[str]],
    path: Path,
    n: int = MAP_WORDS,
) -> None:
    """The most frequent content words placed by t-SNE and coloured by k-means cluster, with
    each probe word linked to its nearest neighbours."""
    chosen = map_selection(words, neighbours, n)
    points = tsne_2d(vectors[chosen])
    clusters = kmeans(unit_rows(vectors[chosen]), min(len(CLUSTER_COLOURS), len(chosen)))
    colours = np.array(CLUSTER_COLOURS)[clusters]
    from matplotlib import patheffects
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 7.5), dpi=140)
    axes = figure.subplots()
    where = {words[i]: j for j, i in enumerate(chosen)}
    probes = [where[p] for p in neighbours if p in where]
    links = [
        (where[p], where[w]) for p in neighbours for w in neighbours[p] if p in where and w in where
    ]
    for link in links:
        axes.plot(*points[list(link)].T, color="0.65", lw=0.7, zorder=1)
    axes.scatter(*points.T, s=14, c=colours, zorder=2)
    axes.scatter(*points[probes].T, s=40, c="black", marker="D", zorder=3)
    margin = 0.04 * np.ptp(points, axis=0)
    low, high = points.min(axis=0) - margin, points.max(axis=0) + margin
    axes.set(xlim=(low[0], high[0]), ylim=(low[1], high[1]), xticks=[], yticks=[])
    axes.set_title(
        f"{len(chosen)} words by t-SNE: the probe words, their neighbours, the most frequent "
        "content words\ncolour: k-means cluster · bold: a probe word (◆) and its neighbours",
        fontsize=9,
    )
    role = np.zeros(len(chosen), dtype=int)  # 0: a word, 1: a probe's neighbour, 2: a probe
    role[[j for _, j in links]], role[probes] = 1, 2
    sizes = np.array([8.0, 8.5, 11.0])[role]
    order = list(dict.fromkeys([*probes, *(j for _, j in links), *range(len(chosen))]))
    to_points = axes.transData.transform  # then * 72 / dpi: in points, like the font sizes
    xy = to_points(points) * 72 / figure.dpi
    frame = to_points(np.array([low, high])).ravel() * 72 / figure.dpi
    labels = [words[i] for i in chosen]
    spots = _label_spots(xy, labels, sizes, role > 0, order, frame)
    halo = [patheffects.withStroke(linewidth=2.5, foreground="white")]
    for j, spot in zip(order, spots, strict=True):
        if spot is None:
            continue
        axes.annotate(
            labels[j],
            points[j],
            xytext=spot[:2],
            textcoords="offset points",
            ha=spot[2],
            va="center",
            fontsize=sizes[j],
            fontweight="bold" if role[j] else "normal",
            color="black" if role[j] == 2 else colours[j],
            path_effects=halo,
            arrowprops=None
            if max(abs(spot[0]), abs(spot[1])) <= sizes[j]
            else {"arrowstyle": "-", "color": "0.5", "lw": 0.6},
            zorder=4,
        )
    _save(figure, path)


def _label_spots(
    xy: np.ndarray,
    labels: list[str],
    sizes: np.ndarray,
    marked: np.ndarray,
    order: list[int],
    frame: np.ndarray,
) -> list[tuple[float, float, str] | None]:
    """Greedy placement, in `order`: each label takes the nearest spot around its point where
    its box (estimated from the font size) stays in the frame and meets no placed label and no
    point. Marked words mind only marked points, may go farther out, and take the first spot
    when none is free; the others stay beside their point or have no label."""
    dots = [(x - 3, y - 3, x + 3, y + 3) for x, y in xy]
    placed: list[tuple[float, float, float, float]] = []
    spots = []
    for j in order:
        width, height, (x, y) = 0.62 * sizes[j] * len(labels[j]), sizes[j], xy[j]
        obstacles = [b for k, b in enumerate(dots) if k != j and (marked[k] or not marked[j])]
        found = None
        for dx, dy, align in _SPOTS if marked[j] else _SPOTS[:8]:
            left = x + dx * height - {"left": 0.0, "right": width, "center": width / 2}[align]
            bottom = y + dy * height - height / 2
            box = (left, bottom, left + width, bottom + height)
            inside = frame[0] <= left and frame[1] <= bottom and box[2] <= frame[2]
            free = not any(_overlap(box, b) for b in (*placed, *obstacles))
            if inside and box[3] <= frame[3] and free:
                found = dx * height, dy * height, align
                placed.append(box)
                break
        if found is None and marked[j]:
            found = _SPOTS[0][0] * height, 0.0, "left"
        spots.append(found)
    return spots


# Label positions around a point, nearest first, in units of the font size: right, left, above,
# below and the diagonals, one to four line heights away.
_SPOTS = [
    (
        dx * (0.5 + 1.2 * (ring - 1)),
        dy * ring,
        "center" if dx == 0 else "left" if dx > 0 else "right",
    )
    for ring in (1, 2, 3, 4)
    for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, 1), (1, -1), (-1, -1))
]


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _save(figure: Figure, path: Path) -> None:
    """A PNG of the figure with a 256-colour palette (a third of the size, the same look)."""
    from PIL import Image  # matplotlib's own image library

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi="figure", bbox_inches="tight")
    with atomic_path(path) as tmp:
        Image.open(buffer).convert("RGB").quantize(256).save(tmp, format="png", optimize=True)


def render_report(
    summary: RunSummary, neighbours: dict[str, list[str]], embed: bool = False
) -> str:
    """The run's markdown report. Its plots are links relative to the run directory (report.md
    lies beside them) or, with `embed`, data URLs: the Prefect UI shows those without the files."""

    def image(title: str, name: str) -> str:
        if not embed:
            return f"![{title}]({name})"
        data = base64.b64encode((summary.run_dir / name).read_bytes()).decode("ascii")
        return f"![{title}](data:image/png;base64,{data})"

    m = summary.metrics
    verdict = gate_outcome(m.gate.passed, m.promoted)
    heldout = m.heldout_loss_per_epoch
    lines = [
        f"# Run {summary.run_id}",
        "",
        f"Corpus: {', '.join(summary.corpus)} · {m.corpus_words:,} words · "
        f"{m.sentences:,} sentences · vocabulary {m.vocab_size:,} · "
        f"{m.pairs:,} training pairs · device {m.device}",
        "",
        "| epoch | training loss | held-out loss |",
        "|---|---|---|",
        *(
            f"| {e + 1} | {loss:.4f} | {heldout[e]:.4f} |"
            if e < len(heldout)
            else f"| {e + 1} | {loss:.4f} | |"
            for e, loss in enumerate(m.loss_per_epoch)
        ),
        "",
        image("Loss per epoch", "loss.png"),
        "",
        f"## Quality gate: {verdict}",
        "",
        *(f"- {reason}" for reason in m.gate.reasons),
        "",
        *_evaluation_section(m.evaluation),
        "## Nearest neighbours",
        "",
        *(f"- **{word}**: {', '.join(near)}" for word, near in neighbours.items()),
        "",
        image("Word map", "map.png"),
        "",
        *_classifier_section(summary.classifier),
        "## Stages",
        "",
        "| stage | reused | seconds |",
        "|---|---|---|",
        *(
            f"| {name} | {'yes' if s.reused else 'no'} | {'' if s.reused else s.seconds} |"
            for name, s in summary.stages.items()
        ),
        "",
        f"Run directory: `{summary.run_dir}` (report.md, loss.png, map.png)",
        "",
    ]
    return "\n".join(lines)


def gate_outcome(passed: bool, promoted: bool) -> str:
    """What the gate's verdict meant for the run, in words."""
    if promoted:
        return f"{'passed' if passed else 'failed'}, and the run was made current by hand"
    return "passed: the run is current" if passed else "rejected: the run is stored, not current"


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


def _classifier_section(classifier: ClassifierRun | None) -> list[str]:
    """The classifier's validation metrics per mode, when the run trained one."""
    if not classifier:
        return []
    rows = classifier.rows
    first = rows[0]
    return [
        f"## Classifier ({classifier.label_column} of {classifier.data})",
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
        f"Model (fine-tuned): `{classifier.model_dir}`",
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
def report_task(summary: RunSummary) -> RunSummary:
    """Write loss.png, map.png and report.md into the run directory; publish artifacts; the
    summary with the probe words' neighbours and the report's path."""
    run_dir = summary.run_dir
    metrics = summary.metrics
    plot_loss(metrics.loss_per_epoch, metrics.heldout_loss_per_epoch, run_dir / "loss.png")
    words, vectors = read_vectors(summary.vectors_path)
    neighbours = probe_neighbours(summary.run_id)
    plot_word_map(words, vectors, neighbours, run_dir / "map.png")
    with atomic_path(run_dir / "report.md") as tmp:
        tmp.write_text(render_report(summary, neighbours), encoding="utf-8")
    create_markdown_artifact(
        render_report(summary, neighbours, embed=True),
        key="quijote-report",
        description="Run report",
    )
    create_table_artifact(
        [{"stage": n, **asdict(s)} for n, s in summary.stages.items()],
        key="quijote-stages",
        description="Stages: key, reused, seconds",
    )
    create_table_artifact(
        [{"word": w, "neighbours": ", ".join(near)} for w, near in neighbours.items()],
        key="quijote-neighbours",
        description="Nearest neighbours of the probe words",
    )
    if metrics.evaluation:
        create_table_artifact(
            metrics.evaluation,
            key="quijote-evaluation",
            description="Benchmarks: Spearman ρ (similarity), 3CosAdd/3CosMul accuracy (analogies)",
        )
    if summary.classifier:
        create_table_artifact(
            summary.classifier.rows,
            key="quijote-classifier",
            description="Classifier: validation accuracy and macro-F1 per mode (mean, std)",
        )
    return replace(summary, neighbours=neighbours, report=run_dir / "report.md")
