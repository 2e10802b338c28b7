"""Progress of long work: a live bar on a terminal, a log line per epoch, and inside a Prefect
run a progress artifact that the UI shows while training."""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from models.skipgram import Progress as ProgressCallback


@contextmanager
def progress_bar(label: str, total: int) -> Iterator[ProgressCallback]:
    """Yield a callback(epoch, done, total, loss) that draws the bar and, at most once per
    percent, updates the run's progress artifact; a finite loss marks the end of an epoch."""
    in_run = _in_task_run()
    if in_run:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact
        from prefect.logging import get_run_logger
    logger = get_run_logger() if in_run else logging.getLogger("quijote")
    artifact = create_progress_artifact(0.0, description=f"{label}: progress") if in_run else None
    shown = 0
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeRemainingColumn(), disable=not sys.stderr.isatty()) as bar:
        task_id = bar.add_task(label, total=total)

        def report(epoch: int, done: int, total: int, loss: float) -> None:
            nonlocal shown
            bar.update(task_id, completed=done, description=f"{label} epoch {epoch + 1}")
            percent = int(100 * done / max(total, 1))
            if artifact is not None and percent > shown:
                update_progress_artifact(artifact, float(percent))
                shown = percent
            if not math.isnan(loss):
                logger.info("%s epoch %d: mean loss %.4f", label, epoch + 1, loss)

        yield report


def _in_task_run() -> bool:
    """Inside a Prefect task run; a process that never imported Prefect is not."""
    if "prefect" not in sys.modules:
        return False
    from prefect.context import TaskRunContext

    return TaskRunContext.get() is not None
