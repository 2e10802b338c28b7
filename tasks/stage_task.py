"""`@stage_task`: the Prefect task around a stage function. A stage whose output was reused
from the cache ends its task run in a `Cached` state (a kind of Completed), so cache hits show
as such in the UI and the API; the caller still gets the StageOutput."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from prefect import Task, task
from prefect.cache_policies import NONE
from prefect.states import Completed, State

from storage.stages import StageOutput


def stage_task(name: str) -> Callable[[Callable[..., StageOutput]], Task]:
    """Wrap a stage function as a task named `name`; `plain(the_task)` gives the function back
    for callers without Prefect (`quijote train`)."""

    def decorate(stage: Callable[..., StageOutput]) -> Task:
        @functools.wraps(stage)
        def run(*args: Any, **kwargs: Any) -> StageOutput | State:
            output = stage(*args, **kwargs)
            if output.reused:
                message = f"reused {output.stage}/{output.key}"
                return Completed(name="Cached", data=output, message=message)
            return output

        return task(name=name, cache_policy=NONE)(run)

    return decorate


def plain(stage: Task) -> Callable[..., StageOutput]:
    """The stage function behind a `@stage_task`, to call without Prefect."""
    return stage.fn.__wrapped__
