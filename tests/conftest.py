import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# As the CLI does: the first start creates the database, which a loaded CI machine can take
# well over Prefect's test-harness default of 30 s to do.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "browser: loads the Prefect UI in headless Chromium (skipped without it)"
    )
    config.addinivalue_line(
        "markers", "slow: end to end (a whole flow, a server, kill -9): -m 'not slow' skips them"
    )


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh data directory (QUIJOTE_HOME) for one test."""
    path = tmp_path / "data"
    monkeypatch.setenv("QUIJOTE_HOME", str(path))
    return path


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """One temporary Prefect API for the whole session (each start costs seconds)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=None):  # None: the setting above
        yield
