"""A local Prefect server, the `quijote-embeddings` deployment and a process worker:
what `make serve` starts and `make stop` stops.

    python -m cli.serve start [--port 4200]   # server + work pool + deploy + worker
    python -m cli.serve stop                  # stops exactly what `start` started
    python -m cli.serve status

Everything lives in `$QUIJOTE_HOME/prefect/` (default `data/prefect/`): the server's SQLite
database, `server.pid` and `worker.pid` (each process leads its own process group), their logs,
and `api_url`. The server listens on 127.0.0.1 only. Only the standard library is imported at
module level, so `stop` and `status` are quick; Prefect is imported where the API is used.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from storage.paths import PROJECT_ROOT, data_home

HOST = "127.0.0.1"
DEFAULT_PORT = 4200
POOL = "quijote-process"
DEPLOYMENT = "quijote-embeddings/quijote-embeddings"  # <flow name>/<deployment name>
STOP_GRACE_S = 30.0  # SIGTERM, then this long before SIGKILL


class ServeError(RuntimeError):
    """A step of start/stop failed; the message says what and where to look."""


@dataclass(frozen=True)
class Layout:
    """Where `serve` keeps its state, under the data directory."""

    home: Path

    @property
    def dir(self) -> Path:
        return self.home / "prefect"

    @property
    def database(self) -> Path:
        return self.dir / "prefect.db"

    @property
    def server_pid(self) -> Path:
        return self.dir / "server.pid"

    @property
    def worker_pid(self) -> Path:
        return self.dir / "worker.pid"

    @property
    def server_log(self) -> Path:
        return self.dir / "server.log"

    @property
    def worker_log(self) -> Path:
        return self.dir / "worker.log"

    @property
    def api_url_file(self) -> Path:
        return self.dir / "api_url"


def api_url(port: int) -> str:
    return f"http://{HOST}:{port}/api"


def recorded_api_url(home: Path) -> str | None:
    """The API URL of the server `start` launched in `home`, if it recorded one."""
    path = Layout(home).api_url_file
    return path.read_text().strip() if path.exists() else None


def prefect_env(home: Path, url: str, **extra: str) -> dict[str, str]:
    """The environment of every process `serve` starts: this API, a PREFECT_HOME inside the
    data directory (no profile of the user's is read or written), the data directory and the
    project directory the deployment's pull step changes into."""
    env = dict(os.environ)
    env.update(
        PREFECT_API_URL=url,
        PREFECT_HOME=str(Layout(home).dir),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        QUIJOTE_HOME=str(home),
        QUIJOTE_PROJECT_DIR=str(PROJECT_ROOT),
    )
    # A server behind basic auth: its clients (deploy, worker, flow runs) need the same string.
    if env.get("PREFECT_SERVER_API_AUTH_STRING") and not env.get("PREFECT_API_AUTH_STRING"):
        env["PREFECT_API_AUTH_STRING"] = env["PREFECT_SERVER_API_AUTH_STRING"]
    env.update(extra)
    return env


def _prefect(*args: str) -> list[str]:
    return [sys.executable, "-m", "prefect", *args]


# --- processes -------------------------------------------------------------------------------


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def _reap(pid: int) -> None:
    """Collect `pid` if it is an exited child of this process (tests start servers in-process)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _is_ours(pid: int) -> bool:
    """A live process that leads its own group (as `start` launches them) and runs Prefect;
    a pid file left by a reboot or a crash may name some other process by now."""
    _reap(pid)
    try:
        if os.getpgid(pid) != pid:
            return False
    except ProcessLookupError:
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.parent.exists():  # Linux; elsewhere the group check has to do
        try:
            return b"prefect" in cmdline.read_bytes()  # empty for a zombie
        except OSError:
            return False
    return True


def running(pidfile: Path) -> int | None:
    """The pid recorded in `pidfile` when that process is still ours and alive."""
    pid = _read_pid(pidfile)
    return pid if pid is not None and _is_ours(pid) else None


def _proc_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, process group, state) from /proc (Linux; empty elsewhere)."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            table[int(stat.parent.name)] = (int(fields[1]), int(fields[2]), fields[0])
        except (OSError, IndexError, ValueError):
            continue
    return table


def _descendants(pid: int) -> list[int]:
    """Every process below `pid`. The worker starts each flow run in a new session, so its
    flow runs are not in the worker's process group."""
    children: dict[int, list[int]] = {}
    for child, (parent, _, _) in _proc_table().items():
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _group_alive(pgid: int) -> bool:
    """Whether any process of group `pgid` still runs (zombies do not count)."""
    _reap(pgid)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    members = {p: state for p, (_, g, state) in _proc_table().items() if g == pgid}
    for p, state in members.items():
        if state == "Z":
            _reap(p)
    return any(state != "Z" for state in members.values()) if members else True


def _alive(pid: int) -> bool:
    _reap(pid)
    if Path("/proc/self").exists():
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def _terminate(pid: int, grace: float = STOP_GRACE_S) -> list[int]:
    """Stop the process group `pid` leads and its descendants in other groups: SIGTERM, then
    SIGKILL what is left after `grace` seconds. The descendants go first: they are the
    worker's flow runs, and a flow run stopped by SIGTERM while the server still runs reports
    itself Crashed instead of staying Running in the UI."""
    table = _proc_table()
    others = [p for p in _descendants(pid) if table[p][1] != pid]
    for other in others:
        with contextlib.suppress(ProcessLookupError):
            os.kill(other, signal.SIGTERM)
    for other in others:
        if not _wait(lambda p=other: not _alive(p), grace):
            with contextlib.suppress(ProcessLookupError):
                os.kill(other, signal.SIGKILL)
        _reap(other)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    if not _wait(lambda: not _group_alive(pid), grace):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        _wait(lambda: not _group_alive(pid), 5.0)
    return others


def _spawn(cmd: list[str], env: dict[str, str], log: Path, pidfile: Path) -> int:
    """Start `cmd` in a new session (its own process group), output appended to `log`, and
    record its pid in `pidfile` (written to a temporary name, then renamed)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            cmd,
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    tmp = pidfile.with_suffix(".pid.tmp")
    tmp.write_text(f"{process.pid}\n")
    tmp.replace(pidfile)
    # /proc/<pid>/cmdline reads empty for a moment after the exec; `running` needs it.
    _wait(lambda: _is_ours(process.pid) or process.poll() is not None, 5.0)
    return process.pid


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


# --- the server ------------------------------------------------------------------------------


def _auth_string() -> str | None:
    """The basic-auth 'user:password' of a server started with PREFECT_SERVER_API_AUTH_STRING."""
    return os.environ.get("PREFECT_API_AUTH_STRING") or os.environ.get(
        "PREFECT_SERVER_API_AUTH_STRING"
    )


def _auth_header() -> dict[str, str]:
    auth = _auth_string()
    if not auth:
        return {}
    return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}


def healthy(url: str, timeout: float = 2.0) -> bool:
    """Whether the API at `url` answers its health endpoint (`GET /api/health` -> true)."""
    request = urllib.request.Request(f"{url}/health", headers=_auth_header())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status == 200 and response.read().strip() == b"true"
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As uvicorn binds: connections closed a moment ago (TIME_WAIT) do not hold the port.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def start_server(home: Path, port: int = DEFAULT_PORT, timeout: float = 180.0) -> str:
    """Start `prefect server start` on 127.0.0.1:`port` with its database in the data
    directory, unless `start` already did; wait until it is healthy. Returns the API URL."""
    layout = Layout(home)
    layout.dir.mkdir(parents=True, exist_ok=True)
    pid = running(layout.server_pid)
    if pid is not None:
        url = recorded_api_url(home) or api_url(port)
        print(f"prefect server already running (pid {pid}) at {url.removesuffix('/api')}")
    else:
        if not _port_free(port):
            raise ServeError(f"port {port} on {HOST} is in use; choose another with PORT=")
        url = api_url(port)
        env = prefect_env(
            home,
            url,
            PREFECT_SERVER_API_HOST=HOST,
            PREFECT_SERVER_API_PORT=str(port),
            PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{layout.database}",
        )
        env.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)  # the same setting, older name
        cmd = _prefect("server", "start", "--host", HOST, "--port", str(port))
        pid = _spawn(cmd, env, layout.server_log, layout.server_pid)
        layout.api_url_file.write_text(url + "\n")
        print(f"prefect server starting (pid {pid}), database {layout.database}")
    deadline = time.monotonic() + timeout
    while not healthy(url):
        if running(layout.server_pid) is None:
            raise ServeError(
                f"prefect server exited; the end of {layout.server_log}:\n"
                + _tail(layout.server_log)
            )
        if time.monotonic() > deadline:
            raise ServeError(
                f"prefect server not healthy after {timeout:.0f} s: see {layout.server_log}"
            )
        time.sleep(0.5)
    print(f"prefect server healthy: UI {url.removesuffix('/api')}, API {url}")
    return url


# --- work pool, deployment, worker -----------------------------------------------------------


@contextlib.contextmanager
def client(url: str) -> Iterator[Any]:
    """A synchronous Prefect client for the API at `url`."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    updates: dict[Any, Any] = {PREFECT_API_URL: url}
    if auth := _auth_string():
        updates[PREFECT_API_AUTH_STRING] = auth
    with temporary_settings(updates), get_client(sync_client=True) as c:
        yield c


def ensure_work_pool(url: str, name: str = POOL) -> bool:
    """Create the `process` work pool unless it exists; True when it was created."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with client(url) as c:
        try:
            c.read_work_pool(name)
        except ObjectNotFound:
            template = ProcessWorker.get_default_base_job_template()
            c.create_work_pool(
                WorkPoolCreate(name=name, type="process", base_job_template=template)
            )
            print(f"work pool {name} created (type process)")
            return True
    print(f"work pool {name} exists")
    return False


def deploy(home: Path, url: str, timeout: float = 300.0) -> None:
    """`prefect deploy --all` from the project's prefect.yaml, without prompts."""
    cmd = _prefect(
        "--no-prompt", "deploy", "--all", "--prefect-file", str(PROJECT_ROOT / "prefect.yaml")
    )
    try:
        result = subprocess.run(
            cmd,
            cwd=PROJECT_ROOT,
            env=prefect_env(home, url),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        raise ServeError(f"prefect deploy did not finish in {timeout:.0f} s") from e
    if result.returncode != 0:
        output = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
        raise ServeError(f"prefect deploy failed (exit {result.returncode}):\n{output}")
    print(f"deployed {DEPLOYMENT} from prefect.yaml")


def _worker_heartbeat_since(url: str, pool: str, name: str, since: datetime) -> bool:
    """Whether the worker `name` has reported to `pool` since `since` (it is polling)."""
    with client(url) as c:
        workers = c.read_workers_for_work_pool(pool)
    return any(
        w.name == name and w.last_heartbeat_time is not None and w.last_heartbeat_time >= since
        for w in workers
    )


def start_worker(
    home: Path,
    url: str,
    pool: str = POOL,
    poll_seconds: float | None = None,
    timeout: float = 120.0,
) -> int:
    """Start a process worker on `pool` (one flow run at a time) unless `start` already did,
    and wait until the pool reports it ready. Its environment (QUIJOTE_HOME included) is
    what its flow runs inherit. Returns its pid."""
    layout = Layout(home)
    pid = running(layout.worker_pid)
    if pid is not None:
        print(f"worker already running (pid {pid})")
        return pid
    name = f"quijote-{socket.gethostname()}"
    extra = {"PREFECT_WORKER_QUERY_SECONDS": str(poll_seconds)} if poll_seconds else {}
    cmd = _prefect(
        "worker", "start", "--pool", pool, "--type", "process", "--name", name,
        "--limit", "1", "--install-policy", "never",
    )  # fmt: skip
    started = datetime.now(UTC) - timedelta(seconds=1)
    pid = _spawn(cmd, prefect_env(home, url, **extra), layout.worker_log, layout.worker_pid)
    deadline = time.monotonic() + timeout
    while not _worker_heartbeat_since(url, pool, name, started):
        if running(layout.worker_pid) is None:
            raise ServeError(
                f"worker exited; the end of {layout.worker_log}:\n" + _tail(layout.worker_log)
            )
        if time.monotonic() > deadline:
            raise ServeError(f"worker not ready after {timeout:.0f} s: see {layout.worker_log}")
        time.sleep(0.5)
    print(f"worker started (pid {pid}) on pool {pool}, log {layout.worker_log}")
    return pid


def start(home: Path, port: int = DEFAULT_PORT, poll_seconds: float | None = None) -> str:
    """Server, work pool, deployment, worker: what `make serve` does. Returns the API URL."""
    url = start_server(home, port)
    ensure_work_pool(url)
    deploy(home, url)
    start_worker(home, url, poll_seconds=poll_seconds)
    print(f"export PREFECT_API_URL={url}  # then: prefect deployment run {DEPLOYMENT}")
    return url


def stop(home: Path) -> None:
    """Stop the worker, then the server, by their pid files (process groups); remove the
    files. Processes not started by `start` are never touched."""
    layout = Layout(home)
    for name, pidfile in (("worker", layout.worker_pid), ("prefect server", layout.server_pid)):
        pid = _read_pid(pidfile)
        if pid is None:
            print(f"{name} not running")
        elif not _is_ours(pid):
            print(f"{name} not running (removed stale {pidfile})")
        else:
            others = _terminate(pid)
            also = f", and {len(others)} process(es) it had started" if others else ""
            print(f"{name} stopped (pid {pid}){also}")
        pidfile.unlink(missing_ok=True)
    layout.api_url_file.unlink(missing_ok=True)


def status(home: Path) -> bool:
    """One line per process; True when both run."""
    layout = Layout(home)
    url = recorded_api_url(home)
    up = True
    for name, pidfile in (("prefect server", layout.server_pid), ("worker", layout.worker_pid)):
        pid = running(pidfile)
        up = up and pid is not None
        where = f" at {url.removesuffix('/api')}" if name == "prefect server" and url else ""
        print(f"{name} running (pid {pid}){where}" if pid else f"{name} not running")
    return up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cli.serve", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    start_cmd = commands.add_parser("start", help="server, work pool, deployment and worker")
    start_cmd.add_argument("--port", type=int, default=int(os.environ.get("PORT") or DEFAULT_PORT))
    commands.add_parser("stop", help="stop what start started")
    commands.add_parser("status", help="whether the server and the worker run")
    args = parser.parse_args(argv)
    home = data_home()
    try:
        if args.command == "start":
            start(home, args.port)
        elif args.command == "stop":
            stop(home)
        else:
            return 0 if status(home) else 1
    except Exception as e:  # one line for the user, not a traceback
        if not isinstance(e, ServeError):
            e = ServeError(f"{type(e).__name__}: {e}")
        print(f"error: {e}", file=sys.stderr)
        layout = Layout(home)
        if args.command == "start" and (running(layout.server_pid) or running(layout.worker_pid)):
            print("error: what was started keeps running; `make stop` stops it", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
