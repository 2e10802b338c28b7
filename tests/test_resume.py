"""A run killed with SIGKILL: the same command again reuses every finished stage, resumes
training from its last checkpoint and ends with the uninterrupted run's vectors; a stage killed
while writing leaves no visible file and is built again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from storage.files import write_parquet
from storage.stages import run_stage
from tests.commands import cli_env
from tests.data import quijote_slice

pytestmark = pytest.mark.slow

QUIJOTE_BIN = Path(sys.executable).parent / "quijote"
SETTINGS = ["--dim", "16", "--epochs", "12", "--min-count", "3", "--device", "cpu"]


def train(home: Path, corpus: Path, out: Path, pairs: str = "files") -> list[str]:
    """The `quijote train` command line, on one thread (Hogwild on two is not reproducible)."""
    args = ["train", "--corpus", str(corpus), "--out", str(out), *SETTINGS, "--threads", "1"]
    return [str(QUIJOTE_BIN), *args, "--pairs", pairs]


def summary(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "slice.txt"
    path.write_text(quijote_slice(100_000), encoding="utf-8")
    return path


@pytest.mark.parametrize("pairs", ["files", "stream"])
def test_kill_9_in_training_then_the_same_command_resumes_to_the_same_vectors(
    tmp_path: Path, corpus: Path, pairs: str
) -> None:
    whole = tmp_path / "whole.txt"
    command = train(tmp_path / "a", corpus, whole, pairs)
    summary(subprocess.run(command, capture_output=True, text=True, env=cli_env(tmp_path / "a")))

    home, out = tmp_path / "b", tmp_path / "resumed.txt"
    command = train(home, corpus, out, pairs)
    process = subprocess.Popen(command, env=cli_env(home), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(home.glob("stages/train/.checkpoint-*/checkpoint.npz")):
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.01)
    assert process.poll() is None, "training ended before the kill"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not out.exists() and not list(home.glob("stages/train/*/stage.json"))

    again = summary(subprocess.run(command, capture_output=True, text=True, env=cli_env(home)))
    assert set(again["reused"]) == {
        "download", "tokenize", "vocab", "subsample", "pairs", "negatives"
    }  # fmt: skip
    (meta,) = [json.loads(p.read_text()) for p in home.glob("stages/train/*/stage.json")]
    assert meta["resumed_at"]["epoch"] >= 1
    assert out.read_bytes() == whole.read_bytes()
    assert not list(home.glob("stages/train/.checkpoint-*"))


def test_a_stage_killed_while_writing_leaves_nothing_visible_and_is_rebuilt(home: Path) -> None:
    code = (
        "import os, signal, pyarrow as pa\n"
        "from storage.files import write_parquet\n"
        "from storage.stages import run_stage\n"
        "schema = pa.schema([('x', pa.int64())])\n"
        "def batches():\n"
        "    yield pa.record_batch([pa.array(range(1000))], schema=schema)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "run_stage('demo', 1, {}, [], lambda out: {'rows': write_parquet("
        "out / 'x.parquet', schema, batches())})\n"
    )
    killed = subprocess.run([sys.executable, "-c", code], env=cli_env(home))
    assert killed.returncode == -signal.SIGKILL
    assert [p.name for p in home.glob("stages/demo/*/x.parquet")] == []
    visible = [p for p in home.rglob("*.parquet") if not any(".tmp" in q for q in p.parts)]
    assert visible == []

    schema = pa.schema([("x", pa.int64())])
    batch = pa.record_batch([pa.array(range(1000))], schema=schema)
    output = run_stage(
        "demo", 1, {}, [], lambda out: {"rows": write_parquet(out / "x.parquet", schema, [batch])}
    )
    assert not output.reused and output.meta["rows"] == 1000
