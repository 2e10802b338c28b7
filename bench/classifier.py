"""Do the skip-gram vectors help a text classifier? Topic classification of the Spanish
fake-news corpus (676 news, 9 topics) with the EmbeddingBag classifier started from vectors
trained on (a) the Quijote, (b) the Quijote + 32 novels, (c) (b) + the training part of the
labelled texts (never the validation part), (d) that training part alone (20 epochs, window
10, min_count 2: a small in-domain corpus), in the three modes (finetune, frozen, random
init), mean and std over seeds on one stratified 80/20 split; a TF-IDF + multinomial logistic
regression baseline for reference. The classifier's defaults are tuned first on a split of
the training part (never on the validation part).

    .venv/bin/python bench/classifier.py [--home /tmp/quijote-bench] [--seeds 5]

Vectors are trained by the pipeline's own stages without Prefect, cached under --home (a
rerun reuses them); writes bench/results/classifier-<date>.json and prints tables.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from speed import ROOT, commit, machine, result_path, save

from models.classifier import MODES
from storage.tables import read_columns
from storage.vectors import Vectors, read_vectors_file
from tasks.classify import (
    ClassifyParams,
    accuracy,
    compare_modes,
    macro_f1,
    stratified_split,
    tokenize_texts,
)

CORPORA = ROOT.parent / "shared" / "corpora"
DATA = CORPORA / "labelled" / "spanish_fake_news_v1_train.csv"
NOVELS = [str(CORPORA / "eltec_spa"), str(CORPORA / "gutenberg_es")]
LABEL = "Topic"
FIELDS = {"Text": ("Text",), "Headline+Text": ("Headline", "Text")}


def labelled_corpus(directory: Path, headlines: Sequence[str], texts: Sequence[str]) -> Path:
    """The given news as one .txt corpus file (headline, blank line, text, blank line)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "fake_news_train.txt"
    body = "".join(f"{h}\n\n{t}\n\n" for h, t in zip(headlines, texts, strict=True))
    path.write_text(body, encoding="utf-8")
    return path


IN_DOMAIN = {"epochs": 20, "window": 10, "min_count": 2}  # for the small labelled corpus alone


def train_vectors(corpus: list[str], changes: dict[str, Any]) -> dict[str, Any]:
    """Skip-gram vectors (default parameters but `changes`) on `corpus` by the pipeline's
    stages."""
    from flows.train_stages import train_stages
    from quijote.params import Params
    from storage.stages import total

    started = time.perf_counter()
    stages = train_stages(corpus, Params(**changes), orchestrated=False)
    return {
        "path": stages.train.file("vectors.parquet"),
        "corpus_words": total(stages.tokenize, "tokens"),
        "vocab": stages.vocab.meta["words"],
        "params": changes,
        "seconds": round(time.perf_counter() - started, 1),
    }


def tfidf_logistic(
    train_texts: Sequence[Sequence[str]],
    train_labels: Sequence[str],
    test_texts: Sequence[Sequence[str]],
    c: float = 1.0,
) -> list[str]:
    """TF-IDF (raw counts, smooth idf, l2-normalised rows; words of the training texts) and
    multinomial logistic regression with an L2 penalty of 1/(2c), fitted by L-BFGS: the
    defaults of scikit-learn's TfidfVectorizer and LogisticRegression."""
    words = sorted({w for text in train_texts for w in text})
    index = {w: i for i, w in enumerate(words)}
    df = np.zeros(len(words))
    for text in train_texts:
        df[[index[w] for w in set(text)]] += 1
    idf = np.log((1 + len(train_texts)) / (1 + df)) + 1

    def features(texts: Sequence[Sequence[str]]) -> torch.Tensor:
        x = np.zeros((len(texts), len(words)))
        for row, text in enumerate(texts):
            for word, n in Counter(w for w in text if w in index).items():
                x[row, index[word]] = n
        x *= idf
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return torch.tensor(x, dtype=torch.float64)

    names = sorted(set(train_labels))
    y = torch.tensor([names.index(label) for label in train_labels])
    x = features(train_texts)
    weight = torch.zeros(len(words), len(names), dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(len(names), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], max_iter=1000, tolerance_grad=1e-8, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight + bias, y, reduction="sum")
        loss = loss + 0.5 / c * (weight**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        best = (features(test_texts) @ weight + bias).argmax(dim=1)
    return [names[i] for i in best]


TUNING = {  # changes from ClassifyParams' defaults, tried on splits of the training part
    "defaults": {},
    "max_df=1 (keep stop words)": {"max_df": 1.0},
    "lr=0.02": {"lr": 0.02},
    "lr=0.01": {"lr": 0.01},
    "epochs=10": {"epochs": 10},
    "epochs=40": {"epochs": 40},
    "dropout=0.3": {"dropout": 0.3},
    "hidden=64": {"hidden": 64},
    "min_count=2": {"min_count": 2},
}


def inner_scores(
    texts: Sequence[Sequence[str]],
    labels: Sequence[str],
    vectors: Vectors | None,
    params: ClassifyParams,
    mode: str,
    splits: int,
) -> dict[str, float]:
    """Mean accuracy and macro-F1 of one model per split over `splits` seeded 80/20 splits
    of (texts, labels) — the training part only."""
    rows = [
        compare_modes(texts, labels, vectors, params.with_(seed=100 + s, seeds=1), [mode]).rows[0]
        for s in range(splits)
    ]
    return {m: round(float(np.mean([r[m] for r in rows])), 4) for m in ("accuracy", "macro_f1")}


def tune(
    texts: dict[str, list[list[str]]],
    labels: list[str],
    vectors: Vectors,
    params: ClassifyParams,
    splits: int,
) -> list[dict[str, Any]]:
    """The TUNING variants (finetune and random, field Text) and the Headline+Text field at
    the defaults, on inner splits of the training part."""
    rows = []
    variants = [("Text", name, change) for name, change in TUNING.items()]
    variants.append(("Headline+Text", "defaults", {}))
    for field, name, change in variants:
        for mode in ("finetune", "random"):
            scores = inner_scores(
                texts[field], labels, vectors, params.with_(**change), mode, splits
            )
            rows.append({"field": field, "variant": name, "mode": mode, **scores})
            print(f"  tune {field:14} {name:28} {mode:9} {scores}", flush=True)
    return rows


def tfidf_runs(
    texts: list[list[str]], labels: list[str], train_rows: np.ndarray, splits: int
) -> dict[str, Any]:
    """TF-IDF + LR: c chosen among 1, 10, 100 on inner splits of the training part, then
    trained on the training part and measured on the validation part (c = 1 too)."""
    train_texts = [texts[i] for i in train_rows]
    train_labels = [labels[i] for i in train_rows]
    validation_rows = np.setdiff1d(np.arange(len(labels)), train_rows)
    inner = {}
    for c in (1.0, 10.0, 100.0):
        accuracies = []
        for s in range(splits):
            fit, held = stratified_split(train_labels, 0.2, 100 + s)
            predicted = tfidf_logistic(
                [train_texts[i] for i in fit],
                [train_labels[i] for i in fit],
                [train_texts[i] for i in held],
                c,
            )
            accuracies.append(accuracy([train_labels[i] for i in held], predicted))
        inner[c] = float(np.mean(accuracies))
    best = max(inner, key=lambda c: inner[c])
    true = [labels[i] for i in validation_rows]
    result: dict[str, Any] = {"inner_accuracy_by_c": inner, "c": best}
    for name, c in (("chosen", best), ("c=1", 1.0)):
        predicted = tfidf_logistic(
            train_texts, train_labels, [texts[i] for i in validation_rows], c
        )
        result[name] = {
            "accuracy": round(accuracy(true, predicted), 4),
            "macro_f1": round(macro_f1(true, predicted), 4),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, default=Path("/tmp/quijote-bench"))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--splits", type=int, default=3, help="inner splits for tuning")
    args = parser.parse_args()
    os.environ["QUIJOTE_HOME"] = str(args.home)
    started, load_start = time.perf_counter(), os.getloadavg()
    params = ClassifyParams(seeds=args.seeds)
    columns = read_columns(DATA, ["Headline", "Text", LABEL])
    labels = [str(label) for label in columns[LABEL]]
    texts = {
        field: tokenize_texts(
            [" ".join(columns[c][i] for c in names) for i in range(len(labels))], str(DATA), field
        )
        for field, names in FIELDS.items()
    }
    train_rows, validation_rows = stratified_split(labels, params.validation, params.seed)

    print("vectors (cached under --home after the first run)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        labelled = labelled_corpus(
            Path(tmp) / "labelled_train",
            [columns["Headline"][i] for i in train_rows],
            [columns["Text"][i] for i in train_rows],
        )
        corpora = {
            "a: quijote": ["quijote"],
            "b: quijote + 32 novels": ["quijote", *NOVELS],
            "c: b + labelled train texts": ["quijote", *NOVELS, str(labelled.parent)],
            "d: labelled train texts only": [str(labelled.parent)],
        }
        trained = {}
        for name, corpus in corpora.items():
            trained[name] = train_vectors(corpus, IN_DOMAIN if name.startswith("d") else {})
            print(f"  {name}: {trained[name]}", flush=True)
    vectors = {name: read_vectors_file(info["path"]) for name, info in trained.items()}

    print("tuning on the training part (finetune with vectors b, and random)", flush=True)
    train_texts = {field: [t[i] for i in train_rows] for field, t in texts.items()}
    train_labels = [labels[i] for i in train_rows]
    tuning = tune(train_texts, train_labels, vectors["b: quijote + 32 novels"], params, args.splits)

    print(f"validation: {args.seeds} seeds per mode, one split", flush=True)
    results = []
    for field, field_texts in texts.items():
        for name, words in vectors.items():
            compared = compare_modes(field_texts, labels, words, params, ["finetune", "frozen"])
            for row in compared.rows:
                results.append({"field": field, "vectors": name, **row})
        for row in compare_modes(field_texts, labels, None, params).rows:
            results.append({"field": field, "vectors": "none", **row})
    tfidf = {field: tfidf_runs(t, labels, train_rows, args.splits) for field, t in texts.items()}

    report = {
        "date": date.today().isoformat(),
        "commit": commit(),
        "machine": {**machine(), "torch_threads": torch.get_num_threads()},
        "load_start": load_start,
        "data": {
            "file": DATA.name,
            "label": LABEL,
            "rows": len(labels),
            "labels": dict(Counter(labels).most_common()),
            "n_train": len(train_rows),
            "n_validation": len(validation_rows),
            "words": {field: sum(map(len, t)) for field, t in texts.items()},
        },
        "vectors": {
            name: {k: str(v) if isinstance(v, Path) else v for k, v in info.items()}
            for name, info in trained.items()
        },
        "params": asdict(params),
        "tuning": tuning,
        "results": results,
        "tfidf_logistic": tfidf,
        "seconds": round(time.perf_counter() - started, 1),
    }
    save(report, result_path("classifier"))
    print_tables(report)


def print_tables(report: dict[str, Any]) -> None:
    """Accuracy / macro-F1 (mean ± std over seeds) per field, vectors and mode."""
    for field in FIELDS:
        print(
            f"\n{field}: validation accuracy / macro-F1, mean ± std of {report['params']['seeds']}"
        )
        print(f"{'vectors':30} {'finetune':>26} {'frozen':>26} {'random':>26}")
        rows = [r for r in report["results"] if r["field"] == field]
        random_row = next(r for r in rows if r["mode"] == "random")
        for name in report["vectors"]:
            cells = {r["mode"]: r for r in rows if r["vectors"] == name}
            cells["random"] = random_row
            print(f"{name:30} " + " ".join(f"{_cell(cells[m]):>26}" for m in MODES))
        tfidf = report["tfidf_logistic"][field]
        chosen, plain = tfidf["chosen"], tfidf["c=1"]
        print(
            f"TF-IDF + LR (c={tfidf['c']:g}): {chosen['accuracy']:.3f} / {chosen['macro_f1']:.3f}"
            f"; c=1: {plain['accuracy']:.3f} / {plain['macro_f1']:.3f}"
        )


def _cell(row: dict[str, Any]) -> str:
    return (
        f"{row['accuracy']:.3f}±{row['accuracy_std']:.3f} / "
        f"{row['macro_f1']:.3f}±{row['macro_f1_std']:.3f}"
    )


if __name__ == "__main__":
    main()
