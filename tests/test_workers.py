"""forked_map: work in forked worker processes, results in job order, what the work closes
over inherited (never pickled), or in this process where there would be one worker."""

from __future__ import annotations

import multiprocessing
import os
import threading

import pytest

from tasks.workers import forked_map

several_cores = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: no workers")


@several_cores
def test_results_come_in_job_order_from_other_processes() -> None:
    lock = threading.Lock()  # unpicklable: reaches the workers through the fork

    results = forked_map(lambda n: (n * n, os.getpid(), lock.locked()), range(12))

    assert [n for n, _, _ in results] == [n * n for n in range(12)]
    assert os.getpid() not in {pid for _, pid, _ in results}
    assert not any(locked for _, _, locked in results)


@several_cores
def test_a_workers_exception_reaches_the_caller() -> None:
    def fail(n: int) -> int:
        if n == 3:
            raise ValueError(f"job {n} failed")
        return n

    with pytest.raises(ValueError, match="job 3 failed"):
        forked_map(fail, range(4))


@several_cores
def test_start_runs_in_each_worker_before_its_jobs_and_not_here() -> None:
    started: list[int] = []

    results = forked_map(lambda _: list(started), range(4), lambda: started.append(os.getpid()))

    assert started == []
    for ran_in in results:
        assert len(ran_in) == 1 and ran_in[0] != os.getpid()


def test_one_job_runs_here_and_without_start() -> None:
    started: list[int] = []

    assert forked_map(lambda n: (n, os.getpid()), [7], lambda: started.append(1)) == [
        (7, os.getpid())
    ]
    assert started == []


def test_a_daemon_runs_its_jobs_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(multiprocessing.current_process(), "daemon", True, raising=False)

    assert forked_map(lambda n: (n, os.getpid()), range(3)) == [(n, os.getpid()) for n in range(3)]
