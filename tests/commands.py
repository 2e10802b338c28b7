"""Running the `quijote` command in a test as a user runs it, and checking what it leaves."""

import os
import subprocess
import sys
from pathlib import Path

QUIJOTE_BIN = Path(sys.executable).parent / "quijote"


def cli_env(home: Path) -> dict[str, str]:
    """The environment of a `quijote` process on the data directory `home`."""
    return {**os.environ, "QUIJOTE_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def quijote(home: Path, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """`quijote *args` on the data directory `home`, its output captured."""
    return subprocess.run(
        [str(QUIJOTE_BIN), *args],
        capture_output=True,
        text=True,
        env=cli_env(home),
        timeout=timeout,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, message: str) -> None:
    """Exit status 2, one `error:` line holding `message`, no traceback."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2, result.stderr
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def no_leftovers(home: Path) -> bool:
    """No temporary file or directory left anywhere in the data directory."""
    return not [p for p in home.rglob("*") if ".tmp" in p.name]
