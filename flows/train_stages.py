"""The stages from corpus to vectors, wired once for both callers: the flow (each stage a
Prefect task, the per-shard stages mapped) and `quijote train` (plain calls, Prefect not
imported at all). `quijote train` prepares the data (download to pairs) in a forked child,
the per-shard stages there in forked workers, one per core, while this process loads the
compiled training kernels; then it trains.

The data preparation needs no numba, and this module imports it only once the child is
forked (the negatives and train stages are imported in the functions that run them), so
that numba's import and set-up overlap the preparation instead of preceding it."""

from __future__ import annotations

import os
import pickle
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from quijote.errors import QuijoteError
from quijote.params import Params
from storage.stages import Prepared, StageOutput, Stages
from tasks.download import download
from tasks.pairs import pairs_task
from tasks.stage_task import StageTask
from tasks.subsample import subsample_task
from tasks.tokenize import tokenize_task
from tasks.vocab import vocab_task
from tasks.workers import forked_map

DEFAULT_CORPUS = ("quijote",)

Call = Callable[..., StageOutput]  # (stage, *args) -> its output
Each = Callable[..., list[StageOutput]]  # (stage, *args, one list item per shard) -> outputs
T = TypeVar("T")


def train_stages(
    corpus: list[str],
    params: Params,
    orchestrated: bool = True,
    text_field: str | None = None,
    glob: str | None = None,
) -> Stages:
    """Run the stages from download to train, as Prefect tasks or (`orchestrated=False`) as
    plain functions; `text_field` and `glob` tell the download stage how to read the corpus."""
    if orchestrated:
        call, prepared = _as_task, prepare(corpus, params, _as_task, _mapped, text_field, glob)
    else:
        wait = forked(lambda: prepare(corpus, params, _plainly, in_workers, text_field, glob))
        load_kernels()
        call, prepared = _plainly, wait()
    from tasks.negatives import negatives_task  # numba: imported after the fork (see above)
    from tasks.train import train_task

    negatives = call(negatives_task, prepared.vocab, params)
    trained = call(
        train_task, prepared.vocab, prepared.pairs, negatives, params, prepared.subsample
    )
    return Stages(**vars(prepared), negatives=negatives, train=trained)


def prepare(
    corpus: list[str],
    params: Params,
    call: Call,
    each: Each,
    text_field: str | None,
    glob: str | None,
) -> Prepared:
    """Download, tokenize, vocab, subsample and pairs."""
    documents = call(download, corpus, text_field, glob)
    shards = list(range(documents.meta["documents"]))
    sentences = each(tokenize_task, documents, shards)
    vocab = call(vocab_task, sentences, params)
    subsampled = each(subsample_task, sentences, vocab, params, shards)
    pairs = each(pairs_task, subsampled, params, shards)
    return Prepared(documents, sentences, vocab, subsampled, pairs)


def _plainly(stage: StageTask, *args: Any) -> StageOutput:
    return stage(*args)


def _as_task(stage: StageTask, *args: Any) -> StageOutput:
    return stage.task(*args, return_state=True).result()


def _mapped(stage: StageTask, *args: Any) -> list[StageOutput]:
    from prefect import unmapped

    futures = stage.task.map(*(a if isinstance(a, list) else unmapped(a) for a in args))
    return [future.result() for future in futures]


def shard_rows(args: tuple[Any, ...]) -> list[list[Any]]:
    """The arguments of each shard's call: list arguments are per shard, the others shared."""
    shards = max(len(a) for a in args if isinstance(a, list))
    return [[a[i] if isinstance(a, list) else a for a in args] for i in range(shards)]


def in_workers(stage: StageTask, *args: Any) -> list[StageOutput]:
    """`stage` once per shard (see shard_rows), in forked worker processes, as many as cores
    and shards (see forked_map): the stages hold the GIL."""
    return forked_map(lambda row: stage(*row), shard_rows(args))


def forked(work: Callable[[], T]) -> Callable[[], T]:
    """Start `work()` in a forked child; the returned function waits for its result, or
    raises what it raised (an unexpected error's traceback is printed by the child)."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(reader)
        try:
            outcome: tuple[bool, Any] = (True, work())
        except BaseException as error:
            if not isinstance(error, QuijoteError | KeyboardInterrupt):
                traceback.print_exc()
            outcome = (False, error)
        try:
            with os.fdopen(writer, "wb") as pipe:
                pickle.dump(outcome, pipe)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
    os.close(writer)

    def result() -> T:
        with os.fdopen(reader, "rb") as pipe:
            try:
                succeeded, value = pickle.load(pipe)
            except EOFError:
                succeeded, value = False, QuijoteError("data preparation stopped (killed?)")
        os.waitpid(pid, 0)
        if not succeeded:
            raise value
        return value

    return result


def load_kernels() -> None:
    """Load the training kernels from numba's cache (the first compiled call of a process
    pays numba's set-up). That set-up imports SciPy's BLAS only to offer np.dot and np.linalg
    in compiled code, which the kernels do not use; it is hidden from numba meanwhile (a
    quarter of a second of imports, on the critical path of `quijote train`)."""
    import numpy as np

    from models.sgns_kernel import alias_table

    hidden = "scipy.linalg.cython_blas" not in sys.modules
    if hidden:
        sys.modules["scipy.linalg.cython_blas"] = None  # type: ignore[assignment]
    try:
        alias_table(np.ones(1))
    finally:
        if hidden:
            del sys.modules["scipy.linalg.cython_blas"]
