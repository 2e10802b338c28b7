"""The server path end to end, as `make serve` runs it (cli/serve.py): a real Prefect server
on a free loopback port with its database in tmp, the process work pool, `prefect deploy` from
prefect.yaml, a worker, and the deployment run twice through `prefect deployment run`.
Every process started here is stopped by the module fixture, whatever happens."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

import duckdb
import pytest

from cli import serve
from storage.paths import PROJECT_ROOT
from tests.data import free_port, quijote_slice

pytestmark = pytest.mark.slow

RUN_TIMEOUT_S = 120
SMALL = {"epochs": 3, "dim": 16, "min_count": 3, "lr": 0.2}  # sane vectors: the gate passes
CLASSIFIER = {"epochs": 3, "seeds": 1}  # on the default labelled news, from the corpus mirror


@dataclass(frozen=True)
class Server:
    home: Path
    url: str


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module (a start costs ~15 s); stopped even when a start step fails."""
    home = tmp_path_factory.mktemp("server") / "data"
    try:
        url = serve.start_server(home, free_port(), timeout=120)
        yield Server(home, url)
    finally:
        serve.stop(home)
        layout = serve.Layout(home)
        assert not layout.server_pid.exists() and not layout.worker_pid.exists()


@pytest.fixture(scope="module")
def deployed(server: Server) -> Server:
    """Work pool, deployment and worker, the rest of what `make serve` does."""
    serve.ensure_work_pool(server.url)
    serve.deploy(server.home, server.url)
    serve.start_worker(server.home, server.url, poll_seconds=1)
    return server


def test_pinned_server_starts_and_answers_health(server: Server) -> None:
    with urllib.request.urlopen(f"{server.url}/health", timeout=5) as response:
        assert response.read().strip() == b"true"
    with urllib.request.urlopen(f"{server.url}/admin/version", timeout=5) as response:
        assert json.loads(response.read()) == "3.8.8"
    pid = serve.running(serve.Layout(server.home).server_pid)
    assert pid is not None
    assert (server.home / "prefect" / "prefect.db").exists()
    port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    if Path("/proc/net/tcp").exists():  # Linux: the listening sockets on that port
        assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1 only


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp{,6} print them) listening on `port`."""
    found = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        lines = table.read_text().splitlines()[1:] if table.exists() else []
        for line in lines:
            local, _, state = line.split()[1:4]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
                found.add(address)
    return found


def run_deployment(server: Server, corpus: str, params: dict) -> str:
    """`prefect deployment run` exactly as the README shows it; returns the flow run id."""
    result = subprocess.run(
        [sys.executable, "-m", "prefect", "deployment", "run", serve.DEPLOYMENT,
         "--param", f"params={json.dumps(params)}",
         "--param", f"corpus={json.dumps([corpus])}",
         "--param", f"classifier={json.dumps(CLASSIFIER)}"],
        env=serve.prefect_env(server.home, server.url),
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    match = re.search(r"UUID: ([0-9a-f-]{36})", result.stdout)
    assert match, result.stdout + result.stderr
    return match.group(1)


def wait_for_flow_run(server: Server, flow_run_id: str) -> str:
    """Poll the flow run until it reaches a final state; its state type's name."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        with serve.client(server.url) as c:
            state = c.read_flow_run(flow_run_id).state
        if state is not None and state.is_final():
            return state.type.value
        if time.monotonic() > deadline:
            log = serve.Layout(server.home).worker_log.read_text()[-3000:]
            pytest.fail(f"flow run {flow_run_id} still {state} after {RUN_TIMEOUT_S} s\n{log}")
        time.sleep(1)


def newest_manifest(home: Path) -> dict:
    manifests = sorted((home / "runs").glob("*/manifest.json"))  # run ids sort by time
    return json.loads(manifests[-1].read_text())


def test_deployment_runs_on_the_worker_and_a_second_run_reuses_every_stage(
    deployed: Server, tmp_path: Path
) -> None:
    corpus = tmp_path / "quijote_slice.txt"
    corpus.write_text(quijote_slice(20_000), encoding="utf-8")
    log = serve.Layout(deployed.home).worker_log

    first_id = run_deployment(deployed, str(corpus), SMALL)
    assert wait_for_flow_run(deployed, first_id) == "COMPLETED", log.read_text()[-3000:]
    first = newest_manifest(deployed.home)
    assert first["params"]["dim"] == 16 and first["corpus"] == [str(corpus)]
    assert not any(stage["reused"] for stage in first["stages"].values())
    assert [row["mode"] for row in first["metrics"]["classifier"]] == [
        "finetune", "frozen", "random"
    ]  # fmt: skip
    with duckdb.connect(str(deployed.home / "warehouse.duckdb"), read_only=True) as con:
        current = con.execute("SELECT run_id FROM runs WHERE is_current").fetchall()
    assert current == [(first["run_id"],)]

    second_id = run_deployment(deployed, str(corpus), SMALL)
    assert wait_for_flow_run(deployed, second_id) == "COMPLETED", log.read_text()[-3000:]
    second = newest_manifest(deployed.home)
    assert second["run_id"] != first["run_id"]
    assert set(second["stages"]) == set(first["stages"])
    assert all(stage["reused"] for stage in second["stages"].values()), second["stages"]
    with duckdb.connect(str(deployed.home / "warehouse.duckdb"), read_only=True) as con:
        runs = con.execute("SELECT run_id, is_current FROM runs ORDER BY started_at").fetchall()
    assert runs == [(first["run_id"], False), (second["run_id"], True)]


def test_deployment_has_the_weekly_schedule(deployed: Server) -> None:
    with serve.client(deployed.url) as c:
        deployment = c.read_deployment_by_name(serve.DEPLOYMENT)
    assert deployment.work_pool_name == serve.POOL
    assert deployment.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(PROJECT_ROOT)}}
    ]
    (schedule,) = deployment.schedules
    assert schedule.active and schedule.schedule.cron == "0 3 * * 1"


def test_scheduler_creates_the_weekly_runs(deployed: Server) -> None:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    server_log = serve.Layout(deployed.home).server_log
    by_name = DeploymentFilter(name=DeploymentFilterName(any_=["quijote-embeddings"]))
    deadline = time.monotonic() + 60
    while True:
        with serve.client(deployed.url) as c:
            runs = [r for r in c.read_flow_runs(deployment_filter=by_name) if r.auto_scheduled]
        if runs:
            break
        assert "Can't evaluate bulk DML statement" not in server_log.read_text(), (
            "the server's scheduler failed, see " + str(server_log)
        )
        if time.monotonic() > deadline:
            pytest.fail("no scheduled run after 60 s")
        time.sleep(1)
    for run in runs:
        start = run.expected_start_time.astimezone(UTC)
        assert (start.weekday(), start.hour, start.minute) == (0, 3, 0)  # Mondays 03:00 UTC
        assert run.state is not None and run.state.is_scheduled()
