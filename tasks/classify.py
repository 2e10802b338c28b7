"""Text classification on top of the skip-gram vectors: read a labelled table, tokenize it
with the pipeline's tokenizer, split it (stratified, seeded), train the EmbeddingBag
classifier of models.classifier, measure accuracy and macro-F1, and compare the three ways
to start its embedding (finetune, frozen, random) on the same split and seeds.

Training is Adam on shuffled mini-batches for a fixed number of epochs (no early stopping:
with a few hundred texts, holding out a slice of the training part to stop on costs more
than it saves; the defaults below were tuned on splits of the training part of the Spanish
fake-news corpus, see bench/classifier.py), on one torch thread: the ops are small, a second
thread costs more than it saves (and spins while the cores are busy), and the model does not
depend on the machine's core count. Every random draw derives from `seed`: the same data and
parameters give the same model on the CPU. compare_modes trains its models in forked worker
processes, one per core: the same models as one after another.
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from models.classifier import MODES, TextClassifier, bags, build
from quijote.errors import QuijoteError
from quijote.params import Settings
from storage.files import file_sha256
from storage.paths import CLASSIFIER_MODEL
from storage.stages import StageOutput, run_stage
from storage.tables import Labelled, read_columns
from storage.vectors import Vectors, read_vectors
from tasks.stage_task import stage_task
from tasks.tokenize import split_sentences
from tasks.workers import forked_map

VERSION = 2


@dataclass(frozen=True)
class ClassifyParams(Settings):
    """Classifier parameters; every default in one place."""

    mode: str = "finetune"  # finetune, frozen (pretrained embedding not trained) or random
    validation: float = 0.2  # share of each label held out for validation
    seed: int = 1  # the split and the first model; compare_modes uses seed .. seed+seeds-1
    seeds: int = 3  # models per mode in compare_modes
    dim: int = 100  # embedding size without vectors (random); pretrained modes take theirs
    min_count: int = 1  # words seen fewer times in the training texts are left out
    max_df: float = 0.5  # words in more than this share of the training texts too (stop words)
    epochs: int = 20
    lr: float = 0.05  # Adam (SparseAdam for the embedding)
    batch_size: int = 32
    dropout: float = 0.0  # on the mean embedding (and the hidden layer)
    hidden: int = 0  # size of a ReLU hidden layer (0 = none: mean embedding -> linear)

    RULES: ClassVar[dict[str, str]] = {
        "mode": f"must be one of {', '.join(MODES)}",
        "validation": "must be a share in (0, 1)",
        "seed": "must be an integer >= 0",
        "seeds": "must be an integer >= 1",
        "dim": "must be an integer >= 1",
        "min_count": "must be an integer >= 1",
        "max_df": "must be a share in (0, 1] (1 = keep every word)",
        "epochs": "must be an integer >= 1",
        "lr": "must be a number > 0",
        "batch_size": "must be an integer >= 1",
        "dropout": "must be a share in [0, 1)",
        "hidden": "must be an integer >= 0 (0 = no hidden layer)",
    }

    def checks(self) -> dict[str, bool]:
        return {
            "mode": self.mode in MODES,
            "validation": 0 < self.validation < 1,
            "seed": self.seed >= 0,
            "seeds": self.seeds >= 1,
            "dim": self.dim >= 1,
            "min_count": self.min_count >= 1,
            "max_df": 0 < self.max_df <= 1,
            "epochs": self.epochs >= 1,
            "lr": self.lr > 0,
            "batch_size": self.batch_size >= 1,
            "dropout": 0 <= self.dropout < 1,
            "hidden": self.hidden >= 0,
        }


# Reading


def read_labelled(
    path: Path, text_column: str, label_column: str
) -> tuple[list[list[str]], list[str]]:
    """Tokenized texts and their labels (as strings) from a labelled table."""
    data = read_columns(path, [text_column, label_column])
    for row, label in enumerate(data[label_column], 1):
        if label is None or str(label).strip() == "":
            raise QuijoteError(f"row {row} of {path} has an empty label (column {label_column!r})")
    texts = tokenize_texts(data[text_column], f"{path}", text_column)
    return texts, [str(label).strip() for label in data[label_column]]


def tokenize_text(text: str) -> list[str]:
    """The words of a text, as the pipeline tokenizes its corpora (NFC, lowercase)."""
    normal = unicodedata.normalize("NFC", text)
    return [word for sentence in split_sentences(normal) for word in sentence]


def tokenize_texts(texts: Sequence[Any], source: str, column: str) -> list[list[str]]:
    """Tokenize every row; a row without a word is an error naming the row (1 = first row
    after the header)."""
    if not texts:
        raise QuijoteError(f"{source} has no rows")
    tokenized = []
    for row, text in enumerate(texts, 1):
        tokens = tokenize_text("" if text is None else str(text))
        if not tokens:
            what = "an empty text" if text is None or not str(text).strip() else "no words"
            raise QuijoteError(f"row {row} of {source} has {what} (column {column!r})")
        tokenized.append(tokens)
    return tokenized


# Split and vocabulary


def stratified_split(
    labels: Sequence[str], validation: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, validation), both sorted: each label gives round(n * validation)
    of its n rows to validation, at least 1 and at most n - 1, drawn with `seed`."""
    counts = Counter(labels)
    rare = sorted(label for label, n in counts.items() if n < 2)
    if rare:
        raise QuijoteError(
            f"label {rare[0]!r} has only 1 example: a train/validation split needs at least 2"
        )
    generator = np.random.default_rng(seed)
    array = np.asarray(labels, dtype=object)
    held: list[np.ndarray] = []
    for label in sorted(counts):
        rows = np.flatnonzero(array == label)
        take = min(max(int(np.floor(len(rows) * validation + 0.5)), 1), len(rows) - 1)
        held.append(generator.permutation(rows)[:take])
    validation_rows = np.sort(np.concatenate(held))
    train_rows = np.setdiff1d(np.arange(len(labels)), validation_rows)
    return train_rows, validation_rows


def vocabulary(
    texts: Sequence[Sequence[str]], params: ClassifyParams, vectors: Vectors | None
) -> list[str]:
    """The classifier's words: those seen at least `min_count` times in the training texts
    and in at most `max_df` of them (by count, then alphabetically), then with pretrained
    vectors every other word that has a vector but is not that frequent, so that words unseen
    in training still count at prediction; `frozen` keeps only the words with a vector (a
    frozen random vector carries nothing). Words outside the vocabulary are skipped."""
    counts = Counter(word for text in texts for word in text)
    documents = Counter(word for text in texts for word in set(text))
    frequent = {w for w, n in documents.items() if n > params.max_df * len(texts)}
    seen = sorted(
        (w for w, n in counts.items() if n >= params.min_count and w not in frequent),
        key=lambda w: (-counts[w], w),
    )
    if params.mode == "random" or vectors is None:
        return seen
    known = set(vectors[0])
    kept = [w for w in seen if w in known] if params.mode == "frozen" else seen
    skip = frequent | set(kept)
    return kept + [w for w in dict.fromkeys(vectors[0]) if w not in skip]


# Training and metrics


def train(
    texts: Sequence[Sequence[str]],
    labels: Sequence[str],
    vectors: Vectors | None,
    params: ClassifyParams,
    settings: Mapping[str, Any] | None = None,
) -> TextClassifier:
    """A classifier of `params.mode` trained on tokenized texts; `settings` are recorded in
    the model (with the parameters)."""
    names = sorted(set(labels))
    dim = params.dim if params.mode == "random" or vectors is None else vectors[1].shape[1]
    model = build(
        vocabulary(texts, params, vectors),
        names,
        params.mode,
        dim,
        vectors if params.mode != "random" else None,
        params.hidden,
        params.dropout,
        params.seed,
        {**params.to_dict(), **(settings or {})},
    )
    module = model.module
    index = {name: i for i, name in enumerate(names)}
    targets = torch.tensor([index[label] for label in labels], dtype=torch.long)
    encoded = [model.ids(tokens) for tokens in texts]
    with torch.random.fork_rng(devices=[]), one_thread():
        torch.default_generator.manual_seed(params.seed)  # dropout
        order_generator = torch.Generator().manual_seed(params.seed)
        weights = [w for w in module.parameters() if w.requires_grad]  # frozen: the head only
        optimizer = RowAdam(weights, lr=params.lr)
        module.train()
        for _ in range(params.epochs):
            order = torch.randperm(len(encoded), generator=order_generator)
            for batch in order.split(params.batch_size):
                ids, offsets = bags([encoded[i] for i in batch])
                loss = F.cross_entropy(module(ids, offsets), targets[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    module.eval()
    return model


class RowAdam:
    """Adam as torch.optim.SparseAdam computes it, for weights with sparse gradients (the
    embedding's: only the gradient's rows move, and to the bit as SparseAdam moves them) or
    dense ones (every row moves). It gathers and scatters the gradient's rows of the moments
    instead of masking and adding sparse tensors, and does without torch.optim, whose first
    optimizer in a process imports torch._dynamo."""

    def __init__(
        self,
        weights: Sequence[torch.Tensor],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.weights, self.lr, self.betas, self.eps = list(weights), lr, betas, eps
        self.moments = [(torch.zeros_like(w), torch.zeros_like(w)) for w in self.weights]
        self.steps = 0

    def zero_grad(self) -> None:
        for weight in self.weights:
            weight.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One Adam step of every weight that has a gradient (counted even when a sparse
        gradient is empty, as SparseAdam counts it)."""
        self.steps += 1
        beta1, beta2 = self.betas
        step_size = self.lr * math.sqrt(1 - beta2**self.steps) / (1 - beta1**self.steps)
        for weight, (exp_avg, exp_avg_sq) in zip(self.weights, self.moments, strict=True):
            if weight.grad is None:
                continue
            if weight.grad.is_sparse:
                grad = weight.grad.coalesce()  # the update is non-linear: one value per row
                rows, values = grad.indices()[0], grad.values()
            else:
                rows, values = torch.arange(len(weight)), weight.grad
            old = exp_avg.index_select(0, rows)
            mean = values.sub(old).mul_(1 - beta1).add_(old)
            old = exp_avg_sq.index_select(0, rows)
            square = values.pow(2).sub_(old).mul_(1 - beta2).add_(old)
            exp_avg.index_copy_(0, rows, mean)
            exp_avg_sq.index_copy_(0, rows, square)
            update = mean.div_(square.sqrt_().add_(self.eps)).mul_(-step_size)
            weight.index_add_(0, rows, update)


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread meanwhile."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def accuracy(true: Sequence[str], predicted: Sequence[str]) -> float:
    """Share of predictions equal to the true label."""
    if len(true) != len(predicted) or not true:
        raise ValueError("accuracy needs two non-empty sequences of the same length")
    return sum(t == p for t, p in zip(true, predicted, strict=True)) / len(true)


def macro_f1(true: Sequence[str], predicted: Sequence[str]) -> float:
    """Unweighted mean over labels (those true or predicted) of F1 = 2tp / (2tp + fp + fn)."""
    if len(true) != len(predicted) or not true:
        raise ValueError("macro_f1 needs two non-empty sequences of the same length")
    scores = []
    for label in set(true) | set(predicted):
        tp = sum(t == label and p == label for t, p in zip(true, predicted, strict=True))
        fp = sum(t != label and p == label for t, p in zip(true, predicted, strict=True))
        fn = sum(t == label and p != label for t, p in zip(true, predicted, strict=True))
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def evaluate(
    model: TextClassifier, texts: Sequence[Sequence[str]], labels: Sequence[str]
) -> dict[str, float]:
    predicted, _ = model.predict(texts)
    return {"accuracy": accuracy(labels, predicted), "macro_f1": macro_f1(labels, predicted)}


def fit_and_evaluate(
    texts: Sequence[Sequence[str]],
    labels: Sequence[str],
    vectors: Vectors | None,
    params: ClassifyParams,
    settings: Mapping[str, Any] | None = None,
) -> tuple[TextClassifier, dict[str, Any]]:
    """Split, train on the training part, measure on the validation part; the metrics are
    also recorded in the model's settings."""
    train_rows, validation_rows = stratified_split(labels, params.validation, params.seed)
    model = train(*_take(texts, labels, train_rows), vectors, params, settings)
    metrics = {
        **evaluate(model, *_take(texts, labels, validation_rows)),
        "n_train": len(train_rows),
        "n_validation": len(validation_rows),
    }
    model.settings.update(metrics)
    return model, metrics


@dataclass
class Comparison:
    """The modes compared: one row per mode (metrics over seeds), and per mode the model of
    the first seed with its metrics (no need to train it again to keep it)."""

    rows: list[dict[str, Any]]
    first: dict[str, tuple[TextClassifier, dict[str, Any]]]


def compare_modes(
    texts: Sequence[Sequence[str]],
    labels: Sequence[str],
    vectors: Vectors | None,
    params: ClassifyParams,
    modes: Sequence[str] | None = None,
) -> Comparison:
    """Train every mode (all three with vectors, else random only) on the same split with
    the same seeds (params.seed, params.seed + 1, …: params.seeds models per mode); one row
    per mode with the mean and the sample std over seeds of accuracy and macro-F1."""
    train_rows, validation_rows = stratified_split(labels, params.validation, params.seed)
    split = Split(_take(texts, labels, train_rows), _take(texts, labels, validation_rows), vectors)
    sizes = {"n_train": len(train_rows), "n_validation": len(validation_rows)}
    modes = list(modes or (MODES if vectors is not None else ("random",)))
    runs = {
        (mode, i): params.with_(mode=mode, seed=params.seed + i)
        for mode in modes
        for i in range(params.seeds)
    }
    order = sorted(runs, key=lambda run: run[0] == "frozen")  # quick (the head only): last
    fitted = _fit_each(split, [(runs[run], run[1] == 0) for run in order])
    results = dict(zip(order, fitted, strict=True))
    comparison = Comparison([], {})
    for mode in modes:
        row: dict[str, Any] = {"mode": mode}
        for metric in ("accuracy", "macro_f1"):
            values = np.array([results[mode, i][0][metric] for i in range(params.seeds)])
            row[metric] = float(values.mean())
            row[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        comparison.rows.append({**row, "seeds": params.seeds, **sizes})
        metrics, model = results[mode, 0]
        assert model is not None
        comparison.first[mode] = model, {**metrics, **sizes}
    return comparison


@dataclass(frozen=True)
class Split:
    """The texts and labels to train on and to measure on, with the vectors."""

    train: tuple[list[Sequence[str]], list[str]]
    validation: tuple[list[Sequence[str]], list[str]]
    vectors: Vectors | None

    def fit(
        self, params: ClassifyParams, keep: bool
    ) -> tuple[dict[str, float], TextClassifier | None]:
        """Train a model and measure it (on one torch thread, as in a worker process): its
        metrics, and the model if `keep`."""
        with one_thread():
            model = train(*self.train, self.vectors, params)
            return evaluate(model, *self.validation), model if keep else None


Job = tuple[ClassifyParams, bool]  # Split.fit's arguments


def _fit_each(
    split: Split, jobs: Sequence[Job]
) -> list[tuple[dict[str, float], TextClassifier | None]]:
    """split.fit(*job) for every job, in forked worker processes which inherit the split, or
    one after another (see forked_map)."""
    return forked_map(lambda job: split.fit(*job), jobs, _one_torch_thread)


def _one_torch_thread() -> None:
    """One torch thread before any torch op: GNU OpenMP's threads do not survive a fork, and
    a forked process that starts a parallel region waits for them forever."""
    torch.set_num_threads(1)


def _take(
    texts: Sequence[Sequence[str]], labels: Sequence[str], rows: np.ndarray
) -> tuple[list[Sequence[str]], list[str]]:
    return [texts[i] for i in rows], [labels[i] for i in rows]


@stage_task("classify")
def classify_task(trained: StageOutput, labelled: Labelled, params: ClassifyParams) -> StageOutput:
    """Compare the three modes on `labelled` with the trained vectors (same split, same seeds),
    then train the fine-tuned model on the training split and save it to `model/`."""

    def build(out: Path) -> dict[str, Any]:
        texts, labels = read_labelled(labelled.path, labelled.text_column, labelled.label_column)
        vectors = read_vectors(trained.file("vectors.parquet"))
        comparison = compare_modes(texts, labels, vectors, params)
        source = {
            "data": str(labelled.path),
            "text_column": labelled.text_column,
            "label_column": labelled.label_column,
        }
        model, metrics = comparison.first["finetune"]  # = fit_and_evaluate's, trained once
        model.settings.update(source | metrics)
        model.save(out / CLASSIFIER_MODEL)
        return {**source, "rows": comparison.rows, "validation": metrics, "labels": model.labels}

    settings = {
        **params.to_dict(),
        "text_column": labelled.text_column,
        "label_column": labelled.label_column,
    }
    inputs = [trained.key, file_sha256(labelled.path)]
    return run_stage("classify", VERSION, settings, inputs, build)
