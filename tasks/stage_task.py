"""`@stage_task`: a stage function that is also a Prefect task. Called directly it is the plain
function, and Prefect is never imported (`quijote train` starts sooner); `.task` is the
Prefect task around it, built on first use. A stage whose output was reused from the cache ends
its task run in a `Cached` state (a kind of Completed), so cache hits show as such in the UI and
the API; the caller still gets the StageOutput."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from storage.stages import StageOutput

if TYPE_CHECKING:
    from prefect import Task


class StageTask:
    """A stage function (call it as is) with its Prefect task (`.task`)."""

    def __init__(self, name: str, stage: Callable[..., StageOutput]) -> None:
        functools.update_wrapper(self, stage)
        self.name, self.stage = name, stage

    def __call__(self, *args: Any, **kwargs: Any) -> StageOutput:
        return self.stage(*args, **kwargs)

    @functools.cached_property
    def task(self) -> Task:
        from prefect import task
        from prefect.cache_policies import NONE
        from prefect.states import Completed

        stage = self.stage

        @functools.wraps(stage)
        def run(*args: Any, **kwargs: Any) -> Any:
            output = stage(*args, **kwargs)
            if output.reused:
                message = f"reused {output.stage}/{output.key}"
                return Completed(name="Cached", data=output, message=message)
            return output

        return task(name=self.name, cache_policy=NONE)(run)


def stage_task(name: str) -> Callable[[Callable[..., StageOutput]], StageTask]:
    """Make a stage function a StageTask named `name`."""
    return functools.partial(StageTask, name)
