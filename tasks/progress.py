"""Progress of long work: a live bar on a terminal, a log line per epoch elsewhere."""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from models.skipgram import Progress as ProgressCallback


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("quijote")


@contextmanager
def progress_bar(label: str, total: int) -> Iterator[ProgressCallback]:
    """Yield a callback(epoch, done, total, loss) that draws the bar; a finite loss marks the
    end of an epoch and is logged."""
    logger = _logger()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeRemainingColumn(), disable=not sys.stderr.isatty()) as bar:
        task_id = bar.add_task(label, total=total)

        def report(epoch: int, done: int, total: int, loss: float) -> None:
            bar.update(task_id, completed=done, description=f"{label} epoch {epoch + 1}")
            if not math.isnan(loss):
                logger.info("%s epoch %d: mean loss %.4f", label, epoch + 1, loss)

        yield report
