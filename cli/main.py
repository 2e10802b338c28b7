"""`quijote`: the command line. Heavy libraries (Prefect, torch) load only in the commands
that need them, so queries start fast; every user error is one line on stderr."""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cli.classify import classify_app, current_run_or_error
from quijote.errors import QuijoteError, first_line

if TYPE_CHECKING:
    from tasks.publish import RunSummary

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    add_completion=False,
)
app.add_typer(classify_app, name="classify")
out = Console(soft_wrap=not sys.stdout.isatty())  # to a file or a pipe: a line per item


def _param(name: str, what: str) -> Any:
    """A `quijote train` option for the parameter `name`: its help, with Params' default."""
    from quijote.params import Params

    return typer.Option(help=f"{what} (default: {getattr(Params(), name)}).", show_default=False)


CorpusOption = Annotated[
    list[str] | None,
    typer.Option("--corpus", "-c", help="A name (quijote), URL, file or directory (README)."),
]
TextFieldOption = Annotated[
    str | None, typer.Option(help="The text field of JSON lines, CSV or Parquet corpus files.")
]
GlobOption = Annotated[
    str | None,
    typer.Option(
        help="Files to read in directory and zip corpora, at any depth, such as '*.jsonl.gz' "
        "(default: .txt files, compressed or not)."
    ),
]
SetOption = Annotated[list[str] | None, typer.Option("--set", "-s", help="A parameter, key=value.")]
TopK = Annotated[int, typer.Option("-k", min=1, help="How many words.")]
Exact = Annotated[
    bool, typer.Option(help="Compare with every word (else by cell from 50,000 words).")
]


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version

        print(f"quijote-embeddings {version('quijote-embeddings')}")
        raise typer.Exit()


@app.callback()
def _options(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Spanish word embeddings: train skip-gram vectors and query them in SQL."""
    # DuckDB is loaded while Ctrl-C still ends the process: a KeyboardInterrupt inside its
    # initialisation can crash it. `quijote train` does not use it in this process.
    if ctx.invoked_subcommand != "train":
        import duckdb  # noqa: F401
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the command's work starts


def main() -> None:
    """Entry point: run the app, turning user errors into one line and exit status 2."""
    try:
        app()
    except QuijoteError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except SystemExit as done:
        if done.code == 130:  # typer's exit for Ctrl-C in a command, silent otherwise
            print("interrupted", file=sys.stderr)
        raise
    finally:
        gc.freeze()  # the exit then skips collecting what numba and LLVM built: half a second


def _prepare_prefect() -> None:
    """Local defaults for Prefect before it is imported: no telemetry, state in the data dir
    (created here: Prefect makes only the last level), and time for the first start, which
    creates and migrates a new database (about 20 s on two cores; Prefect's default is 20)."""
    from storage.paths import data_home

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_HOME", str(data_home() / "prefect"))
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)


def _start_prefect() -> None:
    """Start the temporary Prefect API now (unless PREFECT_API_URL names one), one process at
    a time: two runs starting together would both migrate a new Prefect database, and the
    second would fail."""
    import fcntl

    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME

    if PREFECT_API_URL.value():
        return
    with (Path(PREFECT_HOME.value()) / "quijote-start.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        try:
            SubprocessASGIServer().start()
        except RuntimeError as error:  # it did not answer in time, or exited
            message = f"the temporary Prefect API did not start: {first_line(error)}"
            raise QuijoteError(message) from None


class _HideUserErrors(logging.Filter):
    """Drop Prefect's console records of a QuijoteError (tracebacks, failed states): the CLI
    prints the one-line message itself. The API handler still sends them to the UI."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, QuijoteError):
            return False
        return not (record.levelno >= logging.ERROR and "QuijoteError" in record.getMessage())


def _quiet_console() -> None:
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler):
            handler.addFilter(_HideUserErrors())


def _parse_settings(pairs: list[str]) -> dict[str, str]:
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise QuijoteError(f"expected key=value, got {pair!r}")
        settings[key.strip()] = value.strip()
    return settings


@app.command()
def run(
    corpus: CorpusOption = None,
    text_field: TextFieldOption = None,
    glob: GlobOption = None,
    set_: SetOption = None,
    dask: Annotated[
        int, typer.Option(min=0, help="Map the data-prep stages on a local Dask cluster of N.")
    ] = 0,
    dask_address: Annotated[
        str | None, typer.Option(help="…or on the Dask scheduler at this address.")
    ] = None,
    labelled: Annotated[
        str | None,
        typer.Option(
            help="Labelled CSV/Parquet for the classifier, or none "
            "(default: labelled/spanish_fake_news_v1_train.csv in the corpus mirror)."
        ),
    ] = None,
    text_column: Annotated[str, typer.Option(help="Text column of --labelled.")] = "Text",
    label_column: Annotated[str, typer.Option(help="Label column of --labelled.")] = "Topic",
    classify_set: Annotated[
        list[str] | None,
        typer.Option("--classify-set", help="A classifier parameter, key=value."),
    ] = None,
    eval_: Annotated[
        list[str] | None,
        typer.Option(
            "--eval",
            help="A similarity or analogy benchmark file, or none "
            "(default: the eval/ folder beside the corpus mirror).",
        ),
    ] = None,
    promote: Annotated[
        bool, typer.Option("--promote", help="Make this run current whatever the gate says.")
    ] = False,
    keep_runs: Annotated[
        int | None,
        typer.Option(min=0, help="Then prune the vectors of older runs but N (see `prune`)."),
    ] = None,
) -> None:
    """Run the whole flow locally: download, tokenize, ..., train, evaluate, gate, classify,
    publish, report."""
    from models.skipgram import check_device
    from quijote.params import Params
    from storage.benchmarks import find_benchmarks
    from storage.tables import DEFAULT_LABELLED, find_labelled
    from tasks.classify import ClassifyParams

    settings = _parse_settings(set_ or [])
    classifier = _parse_settings(classify_set or [])
    check_device(Params.from_mapping(settings).device)  # reject bad parameters before any work
    ClassifyParams.from_mapping(classifier)
    table = None if labelled and labelled.lower() == "none" else labelled or DEFAULT_LABELLED
    _check_corpora(corpus or [], text_field, glob)  # before starting Prefect
    if table:
        find_labelled(table, text_column, label_column)  # a missing file: fail before any work
    benchmarks = tuple(eval_) if eval_ else None  # None: the eval/ folder beside the mirror
    if benchmarks and [b.lower() for b in benchmarks] == ["none"]:
        benchmarks = ()
    find_benchmarks(benchmarks)  # a bad benchmark file: fail before starting Prefect
    _prepare_prefect()
    from flows.quijote_embeddings import DEFAULT_CORPUS, on_dask, quijote_embeddings

    _quiet_console()
    _start_prefect()
    pipeline = on_dask(dask, dask_address) if dask or dask_address else quijote_embeddings
    summary = pipeline(
        tuple(corpus or DEFAULT_CORPUS), settings, table, text_column, label_column, classifier,
        benchmarks, promote, text_field, glob, keep_runs,
    )  # fmt: skip
    _print_summary(summary)


def _check_corpora(corpus: list[str], text_field: str | None, glob: str | None) -> None:
    """A missing file or text field: one line before any work, with nothing written."""
    from tasks.download import check_corpus
    from tasks.sources import Reading

    reading = Reading(text_field, glob)
    for spec in corpus:
        check_corpus(spec, reading)


def _print_summary(summary: RunSummary) -> None:
    from storage.paths import warehouse_path
    from tasks.evaluate import score_table
    from tasks.report import gate_outcome

    metrics = summary.metrics
    out.print(f"\n[bold]Run {summary.run_id}[/bold] on {', '.join(summary.corpus)}")
    out.print(
        f"corpus words {metrics.corpus_words:,} · sentences {metrics.sentences:,} · "
        f"vocabulary {metrics.vocab_size:,} · pairs {metrics.pairs:,} · "
        f"device {metrics.device}"
    )
    losses = ", ".join(f"{loss:.4f}" for loss in metrics.loss_per_epoch)
    out.print(f"loss per epoch: {losses}")
    if metrics.heldout_loss is not None:
        out.print(f"held-out loss: {metrics.heldout_loss:.4f}")
    stages = " · ".join(
        f"{name} " + ("reused" if s.reused else f"{s.seconds:.1f}s")
        for name, s in summary.stages.items()
    )
    out.print(f"stages: {stages}")
    for word in ("quijote", "sancho", "dulcinea"):
        if word in summary.neighbours:
            out.print(f"  {word}: " + ", ".join(summary.neighbours[word]))
    header, lines = score_table(metrics.evaluation, sections=False)
    for line in lines:
        scores = " · ".join(f"{m} {v}" for m, v in zip(header[2:], line[2:], strict=True) if v)
        out.print(f"benchmark {line[0]}: {scores} ({line[1]} found)")
    gate = metrics.gate
    verdict = gate_outcome(gate.passed, metrics.promoted)
    out.print(f"quality gate {verdict} ({'; '.join(gate.reasons)})")
    if summary.classifier:
        classifier = summary.classifier
        out.print(f"classifier ({classifier.label_column}), validation accuracy / macro-F1:")
        for row in classifier.rows:
            out.print(f"  {row['mode']:8} {row['accuracy']:.3f} / {row['macro_f1']:.3f}")
    out.print(f"run directory: {summary.run_dir} (report.md, loss.png, map.png)")
    out.print(f"warehouse: {warehouse_path()}")
    if gate.passed or metrics.promoted:  # the neighbors macro serves the current run
        out.print("try: quijote sql \"SELECT * FROM neighbors('dulcinea', 10)\"")


@app.command()
def train(
    corpus: CorpusOption = None,
    text_field: TextFieldOption = None,
    glob: GlobOption = None,
    out_file: Annotated[Path, typer.Option("--out", help="Vectors file to write.")] = Path(
        "vectors.txt"
    ),
    format_: Annotated[str, typer.Option("--format", help="word2vec or parquet.")] = "word2vec",
    dim: Annotated[int | None, _param("dim", "Vector size")] = None,
    window: Annotated[int | None, _param("window", "Largest context distance")] = None,
    negative: Annotated[int | None, _param("negative", "Negatives per pair")] = None,
    min_count: Annotated[
        int | None, _param("min_count", "Words seen fewer times are dropped")
    ] = None,
    sample: Annotated[float | None, _param("sample", "Subsampling threshold")] = None,
    epochs: Annotated[int | None, _param("epochs", "Passes over the corpus")] = None,
    seed: Annotated[int | None, _param("seed", "Seed of every random draw")] = None,
    device: Annotated[str | None, _param("device", "auto, cpu, cuda or torch")] = None,
    threads: Annotated[int | None, _param("threads", "CPU threads, 0 = all cores")] = None,
    batch_size: Annotated[
        int | None, _param("batch_size", "Pairs per step of the PyTorch path")
    ] = None,
    pairs: Annotated[
        str | None, _param("pairs", "files (kept on disk for reruns) or stream (none on disk)")
    ] = None,
    set_: SetOption = None,
) -> None:
    """Train skip-gram vectors only (no warehouse), print one JSON summary line. Every
    parameter can be given with --set; the most used have flags of their own."""
    from models.skipgram import check_device
    from quijote.params import Params
    from storage.files import check_writable

    given = {
        "dim": dim, "window": window, "negative": negative, "min_count": min_count,
        "sample": sample, "epochs": epochs, "seed": seed, "device": device, "threads": threads,
        "batch_size": batch_size, "pairs": pairs,
    }  # fmt: skip
    flags = {k: v for k, v in given.items() if v is not None}
    settings = _parse_settings(set_ or [])
    for name in sorted(set(flags) & set(settings)):
        flag = "--" + name.replace("_", "-")
        raise QuijoteError(f"{name} is given twice: by {flag} and by --set {name}=…; give one")
    params = Params.from_mapping({**settings, **flags})
    if format_ not in ("word2vec", "parquet"):
        raise QuijoteError(f"unknown format {format_!r}: use word2vec or parquet")
    check_device(params.device)
    check_writable(out_file)
    started = time.perf_counter()
    from flows.train_stages import DEFAULT_CORPUS, train_stages
    from storage.stages import shards, stages_lock, total
    from storage.vectors import read_vectors, write_word2vec

    specs = list(corpus or DEFAULT_CORPUS)
    _check_corpora(specs, text_field, glob)
    with stages_lock():  # no prune removes a stage output while this command uses it
        stages = train_stages(specs, params, orchestrated=False, text_field=text_field, glob=glob)
        vectors = stages.train.file("vectors.parquet")
        if format_ == "parquet":
            _copy(vectors, out_file)
        else:
            write_word2vec(*read_vectors(vectors), out_file)
    seconds = time.perf_counter() - started
    words = total(stages.tokenize, "tokens")
    heldout = stages.train.meta["heldout_loss_per_epoch"]
    summary = {
        "words": words,
        "epochs": params.epochs,
        "vocab": stages.vocab.meta["words"],
        "seconds": round(seconds, 3),
        "words_per_s": round(words * params.epochs / seconds),
        "device": stages.train.meta["device"],
        "heldout_loss": round(heldout[-1], 6) if heldout else None,
        "heldout_set": stages.train.meta["heldout_set"],
        "reused": [name for name, s in stages.items() if all(p.reused for p in shards(s))],
        "out": str(out_file),
    }
    print(json.dumps(summary))


def _copy(source: Path, target: Path) -> None:
    import shutil

    from storage.files import atomic_path

    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def _print_words(rows: list[tuple[str, float]], header: str) -> None:
    table = Table(header, "similarity")
    for word, similarity in rows:
        table.add_row(word, f"{similarity:.4f}")
    out.print(table)


@app.command()
def neighbors(word: str, k: TopK = 10, exact: Exact = False) -> None:
    """The k nearest words by cosine similarity (current run)."""
    from storage import warehouse

    _print_words(warehouse.neighbors(word.lower(), k, exact=exact), f"neighbours of {word}")


@app.command()
def analogy(a: str, b: str, c: str, k: TopK = 10, exact: Exact = False) -> None:
    """Words closest to a - b + c (rey - hombre + mujer -> reina)."""
    from storage import warehouse

    found = warehouse.analogy(a.lower(), b.lower(), c.lower(), k, exact=exact)
    _print_words(found, f"{a} - {b} + {c}")


@app.command()
def sql(
    query: str,
    max_rows: Annotated[
        int, typer.Option(min=1, help="Rows shown: the first and the last half.")
    ] = 40,
    format_: Annotated[
        str, typer.Option("--format", help="table, or csv, json (lines) or parquet: every row.")
    ] = "table",
    out_file: Annotated[
        Path | None, typer.Option("--out", help="File for --format (/dev/stdout for a pipe).")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(min=0.001, help="Stop the query after this many seconds.")
    ] = None,
) -> None:
    """Read-only SQL on the warehouse (views vocab, vectors; table runs; macros neighbors,
    analogy): a table of at most --max-rows rows and the row count, or the whole result
    with --format."""
    from storage import queries

    if format_ != "table":
        if out_file is None:
            raise QuijoteError(f"--format {format_} needs --out FILE (/dev/stdout for a pipe)")
        rows = queries.export(query, format_, out_file, timeout)
        print(f"{rows:,} rows written to {out_file} ({format_})", file=sys.stderr)
        return
    if out_file is not None:
        raise QuijoteError("--out needs --format csv, json or parquet")
    result = queries.preview(query, max_rows, timeout)
    table = Table(*result.columns)
    for row in result.head:
        table.add_row(*(_cell(value) for value in row))
    if result.tail:
        table.add_row(*("…" for _ in result.columns))
        for row in result.tail:
            table.add_row(*(_cell(value) for value in row))
    out.print(table)
    shown = len(result.head) + len(result.tail)
    if not result.counted:
        out.print(
            f"more than {result.rows:,} rows (the first {shown} shown; the count stopped after "
            f"{queries.COUNT_BUDGET_S:g} s: --format csv|json|parquet --out FILE writes them all)"
        )
    elif shown < result.rows:
        out.print(f"{result.rows:,} rows ({shown} shown)")
    else:
        out.print(f"{result.rows:,} row{'s' if result.rows != 1 else ''}")


def _cell(value: Any) -> str:
    if isinstance(value, list | tuple) and len(value) > 6:
        return "[" + ", ".join(_cell(v) for v in value[:6]) + f", … ({len(value)})]"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@app.command()
def export(
    format_: Annotated[
        str, typer.Option("--format", help="word2vec, projector or parquet.")
    ] = "word2vec",
    out_path: Annotated[
        Path | None, typer.Option("--out", help="File (or directory for projector).")
    ] = None,
) -> None:
    """Export the current run's vectors (the warehouse's copy): word2vec text (gensim),
    TensorBoard projector TSVs, or Parquet."""
    from storage import warehouse
    from storage.files import check_writable
    from storage.vectors import write_projector, write_vectors, write_word2vec

    run_row = current_run_or_error()
    formats = {
        "word2vec": ("vectors.txt", write_word2vec),
        "projector": ("projector", write_projector),
        "parquet": ("vectors.parquet", write_vectors),
    }
    if format_ not in formats:
        raise QuijoteError(f"unknown format {format_!r}: use {', '.join(formats)}")
    default, write = formats[format_]
    target = out_path or Path(default)
    check_writable(target / "vectors.tsv" if format_ == "projector" else target)
    write(*warehouse.run_vectors(run_row.run_id), target)
    out.print(f"wrote {target} ({format_}, run {run_row.run_id})")


@app.command()
def evaluate(
    run_id: Annotated[
        str | None, typer.Option("--run", help="A run id (default: the current run).")
    ] = None,
    vectors: Annotated[
        Path | None,
        typer.Option(help="A vectors file instead: word2vec text or Parquet (word, vector)."),
    ] = None,
    similarity: Annotated[
        list[Path] | None,
        typer.Option(help="A word-similarity file: word1 word2 score per line (repeatable)."),
    ] = None,
    analogies: Annotated[
        list[Path] | None,
        typer.Option(help="An analogy file in word2vec's questions-words format (repeatable)."),
    ] = None,
    restrict_vocab: Annotated[
        int | None,
        typer.Option(min=0, help="Search only this many most frequent words (0 = all)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON line instead of a table.")] = (
        False
    ),
) -> None:
    """Score vectors on similarity (Spearman ρ) and analogy (3CosAdd, 3CosMul) benchmarks;
    without --similarity or --analogies, on the eval/ folder beside the corpus mirror."""
    from quijote.params import Params
    from storage import warehouse
    from storage.benchmarks import find_benchmarks, read_benchmarks
    from storage.vectors import read_vectors_file
    from tasks import evaluate as evaluation

    if run_id and vectors:
        raise QuijoteError("--run and --vectors exclude each other")
    limit = Params.from_mapping(
        {} if restrict_vocab is None else {"restrict_vocab": restrict_vocab}
    ).restrict_vocab
    if similarity or analogies:
        benchmarks = read_benchmarks(similarity or [], analogies or [])
    else:
        benchmarks = find_benchmarks(None)
        if not benchmarks:
            raise QuijoteError("no benchmark: give --similarity FILE or --analogies FILE")
    if vectors is None:
        if run_id is None:
            run_id = current_run_or_error(", or give --vectors FILE").run_id
        elif warehouse.find_run(run_id) is None:
            raise QuijoteError(f"no run {run_id!r} in the warehouse")
    started = time.perf_counter()
    words, matrix = warehouse.run_vectors(run_id) if vectors is None else read_vectors_file(vectors)
    rows = evaluation.score_rows(evaluation.evaluate(words, matrix, benchmarks, limit))
    seconds = round(time.perf_counter() - started, 3)
    if as_json:
        print(json.dumps({"run_id": run_id, "vectors": vectors and str(vectors), "seconds": seconds,
                          "scores": rows}, ensure_ascii=False))  # fmt: skip
        return
    header, lines = evaluation.score_table(rows)
    table = Table(*header)
    for line in lines:
        table.add_row(*line)
    out.print(table)
    out.print(f"{run_id or vectors}: {len(words):,} words, scored in {seconds:.2f} s")


@app.command()
def prune(
    keep: Annotated[int, typer.Option(min=0, help="Earlier runs whose vectors to keep.")] = 3,
) -> None:
    """Drop the vectors of all runs but the current one and the `keep` most recent others,
    and the stage outputs no kept run uses; their rows in `runs` and their scores stay."""
    from storage.pruning import prune as prune_runs

    out.print(prune_runs(keep).describe())


@app.command()
def promote(run_id: str) -> None:
    """Make a finished run (kept or rejected) the current one, whatever the gate said; the
    runs table records when (promoted_at)."""
    from storage import warehouse

    warehouse.promote(run_id)
    out.print(f"run {run_id} is now current (promoted by hand)")
