"""Work mapped over forked worker processes: the per-shard stages of `quijote train` and the
classifier's fits share it."""

from __future__ import annotations

import multiprocessing
import os
import pickle
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

J = TypeVar("J")
R = TypeVar("R")

_work: Callable[[Any], Any] | None = None  # in a worker process: the work it was started with


def forked_map(
    work: Callable[[J], R], jobs: Sequence[J], start: Callable[[], None] | None = None
) -> list[R]:
    """`work(job)` for every job, in job order, in forked worker processes (as many as cores
    and jobs), or one after another in this process where there would be one worker or the
    process may not have children (a daemon: a pool's worker, a Dask worker).

    `work`, and anything it closes over, reaches the workers through the fork, never pickled;
    `start`, if given, runs once in each worker (never in this process) before its first job.
    A job's exception is raised here."""
    workers = min(len(jobs), os.cpu_count() or 1)
    if workers < 2 or multiprocessing.current_process().daemon:
        return [work(job) for job in jobs]
    # With fork, the pool starts all its workers at the first submit, and the initializer's
    # arguments are inherited, not pickled.
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, context, _start_worker, (work, start)) as pool:
        return [pickle.loads(result) for result in pool.map(_run_inherited, jobs)]


def _start_worker(work: Callable[[Any], Any], start: Callable[[], None] | None) -> None:
    global _work
    if start is not None:
        start()
    _work = work


def _run_inherited(job: Any) -> bytes:
    """The result pickled by value (a pool would pass tensors through shared memory, of which
    a container may have little)."""
    assert _work is not None
    return pickle.dumps(_work(job))
