"""`quijote classify`: train the EmbeddingBag text classifier on a labelled CSV or Parquet
table, starting from skip-gram vectors, and predict labels with it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from quijote.errors import QuijoteError

if TYPE_CHECKING:
    from storage.vectors import Vectors
    from storage.warehouse import RegisteredRun

classify_app = typer.Typer(
    help="Text classifier on top of the word vectors.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    add_completion=False,
)

DataOption = Annotated[Path, typer.Option("--data", help="CSV (with a header) or Parquet file.")]
TextColumn = Annotated[str, typer.Option("--text-column", help="Column holding the text.")]


def current_run_or_error(hint: str = "") -> RegisteredRun:
    """The warehouse's current run; without one, an error that says to run `quijote run` first
    (then `hint`: what else the command takes instead)."""
    from storage import warehouse

    run = warehouse.current_run()
    if run is None:
        raise QuijoteError(f"no current run in the warehouse: run `quijote run` first{hint}")
    return run


def _current_model() -> Path:
    """The current run's classifier folder; an error telling a run that trained none (its
    metrics have no classifier) from one whose model files are not on disk."""
    from storage.paths import run_classifier_dir

    run = current_run_or_error(", or pass --model DIR")
    model = run_classifier_dir(run.run_id)
    if model.is_dir():
        return model
    if "classifier" in run.metrics:
        raise QuijoteError(
            f"the current run {run.run_id} trained a classifier, but its model folder "
            f"{model} is missing (was the warehouse copied without the runs/ and stages/ "
            "folders beside it?): pass --model DIR"
        )
    raise QuijoteError(
        f"the current run {run.run_id} has no classifier (it ran without labelled "
        "data): pass --model DIR"
    )


def _vectors(name: str | None) -> tuple[str, Vectors]:
    """--vectors: a file, else a run id in the warehouse (read from the warehouse's own copy);
    the current run's when not given. Returns where they came from, and the vectors."""
    from storage import warehouse
    from storage.vectors import read_vectors_file

    if name is not None and Path(name).is_file():
        return name, read_vectors_file(Path(name))
    if name is None:
        run = current_run_or_error(", or pass --vectors FILE (or --vectors none)")
    elif (run := warehouse.find_run(name)) is None:
        raise QuijoteError(f"--vectors {name}: neither a file nor a run id in the warehouse")
    return f"run {run.run_id}", warehouse.run_vectors(run.run_id)


@classify_app.command()
def train(
    data: DataOption,
    text_column: TextColumn,
    label_column: Annotated[str, typer.Option("--label-column", help="Column of labels.")],
    vectors: Annotated[
        str | None,
        typer.Option(
            help="A run id, a word2vec text or vectors Parquet file, or none "
            "(default: the current run's vectors)."
        ),
    ] = None,
    freeze: Annotated[bool, typer.Option("--freeze", help="Do not train the vectors.")] = False,
    random_init: Annotated[
        bool, typer.Option("--random-init", help="Start from random vectors (baseline).")
    ] = False,
    model: Annotated[
        Path | None,
        typer.Option("--model", help="Model directory to write (default: <data dir>/classifier)."),
    ] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the split and the model.")] = 1,
) -> None:
    """Train on a stratified 80 % of the rows, print accuracy and macro-F1 on the other 20 %,
    save the model."""
    from storage.paths import data_home
    from tasks.classify import ClassifyParams, fit_and_evaluate, read_labelled

    if freeze and random_init:
        raise QuijoteError("--freeze and --random-init exclude each other")
    no_vectors = random_init or (vectors is not None and vectors.lower() == "none")
    if freeze and no_vectors:
        raise QuijoteError("--freeze needs vectors: give --vectors FILE")
    mode = "random" if no_vectors else "frozen" if freeze else "finetune"
    origin, word_vectors = (None, None) if no_vectors else _vectors(vectors)
    params = ClassifyParams(mode=mode, seed=seed)
    texts, labels = read_labelled(data, text_column, label_column)
    target = model or data_home() / "classifier"
    source = {
        "vectors": origin,
        "text_column": text_column,
        "label_column": label_column,
    }
    classifier, metrics = fit_and_evaluate(texts, labels, word_vectors, params, source)
    classifier.save(target)
    typer.echo(
        f"{mode} classifier: {len(classifier.labels)} labels, "
        f"{len(classifier.vocab):,} words, trained on {metrics['n_train']} rows"
    )
    typer.echo(
        f"validation ({metrics['n_validation']} rows): accuracy {metrics['accuracy']:.4f} · "
        f"macro-F1 {metrics['macro_f1']:.4f}"
    )
    typer.echo(f"model: {target}")


@classify_app.command()
def predict(
    data: DataOption,
    text_column: TextColumn,
    out_file: Annotated[
        Path, typer.Option("--out", help="Predictions: .csv or .parquet (row, label, probability).")
    ],
    model: Annotated[
        Path | None,
        typer.Option("--model", help="Model directory (default: the current run's classifier)."),
    ] = None,
) -> None:
    """Write the predicted label of each row of --data and its probability."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from models.classifier import TextClassifier
    from storage.files import atomic_path
    from storage.tables import read_columns
    from tasks.classify import tokenize_texts

    suffix = out_file.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise QuijoteError(f"unknown output format {out_file.name!r}: use a .csv or .parquet file")
    classifier = TextClassifier.load(model or _current_model())
    texts = read_columns(data, [text_column])[text_column]
    labels, probabilities = classifier.predict(tokenize_texts(texts, str(data), text_column))
    table = pa.table(
        {
            "row": pa.array(range(1, len(labels) + 1), pa.int64()),
            "label": pa.array(labels, pa.string()),
            "probability": pa.array(probabilities, pa.float64()),
        }
    )
    with atomic_path(out_file) as tmp:
        if suffix == ".csv":
            pacsv.write_csv(table, tmp)
        else:
            pq.write_table(table, tmp)
    typer.echo(f"wrote {len(labels)} predictions to {out_file}")
