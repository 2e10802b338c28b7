"""The run report: which words the word map shows and how it places them, the report's pictures
(relative links on disk, data URLs in the artifact), and the artifact in a real browser."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prefect import flow

from cli import serve
from storage import warehouse
from storage.vectors import read_vectors
from tasks.publish import ClassifierRun, RunSummary, StageRun
from tasks.report import (
    FUNCTION_WORDS,
    PROBE_WORDS,
    content_words,
    gate_outcome,
    kmeans,
    map_selection,
    plot_loss,
    plot_word_map,
    probe_neighbours,
    render_report,
    report_task,
    tsne_2d,
)
from tests.data import free_port, make_run, summary_for

PNG = b"\x89PNG\r\n\x1a\n"
CONTENT = ["molino", "gigante", "ínsula", "escudero", "venta", "yelmo", "batán", "cabrero"]
WORDS = ["de", "que", "y", "la", *PROBE_WORDS, *CONTENT, "1605", "había", "aquel"]


def groups(per_group: int = 20, dim: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Vectors in two well separated groups, and each one's group."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2, dim)) * 4
    group = np.repeat([0, 1], per_group)
    return centres[group] + rng.normal(size=(2 * per_group, dim)), group


def test_content_words_leave_out_function_words_and_numbers() -> None:
    chosen = [WORDS[i] for i in content_words(WORDS)]
    assert chosen == [*PROBE_WORDS, *CONTENT]
    assert {"de", "que", "había", "aquel", "del", "estaba"} <= FUNCTION_WORDS


def test_map_selection_puts_the_probes_and_their_neighbours_first() -> None:
    neighbours = {"sancho": ["de", "ínsula"], "rocinante": ["batán"], "nadie": ["molino"]}
    chosen = [WORDS[i] for i in map_selection(WORDS, neighbours, 8)]
    marked = ["sancho", "de", "ínsula", "rocinante", "batán"]
    assert chosen == [*marked, "quijote", "dulcinea", "caballero"]


def test_tsne_and_kmeans_keep_the_groups_apart() -> None:
    vectors, group = groups()
    points = tsne_2d(vectors)
    distances = ((points[:, None] - points[None]) ** 2).sum(axis=-1)
    np.fill_diagonal(distances, np.inf)
    assert (group[distances.argmin(axis=1)] == group).all()
    labels = kmeans(vectors, 2)
    assert len(set(labels[group == 0])) == len(set(labels[group == 1])) == 1
    assert labels[0] != labels[-1]
    np.testing.assert_array_equal(tsne_2d(vectors), points)  # no randomness


def run_summary(home: Path, loss: list[float]) -> RunSummary:
    """A registered run of WORDS in `home` and the summary the report stage gets."""
    vectors = np.random.default_rng(0).normal(size=(len(WORDS), 8)).astype(np.float32)
    record = make_run(home / "runs", "r1", WORDS, vectors)
    warehouse.register_run(record)
    return summary_for(
        home / "runs" / "r1",
        record.vectors_path,
        {"train": StageRun(key="k", reused=False, seconds=1.0)},
        vocab_size=len(WORDS),
        loss_per_epoch=loss,
        heldout_loss_per_epoch=[x + 0.1 for x in loss],
    )


def test_report_links_its_plots_on_disk_and_embeds_them_in_the_artifact(home: Path) -> None:
    summary = run_summary(home, [2.5, 2.0])
    run_dir = summary.run_dir
    plot_loss([2.5, 2.0], [2.6, 2.1], run_dir / "loss.png")
    words, vectors = read_vectors(summary.vectors_path)
    plot_word_map(words, vectors, {"sancho": ["ínsula"]}, run_dir / "map.png")
    on_disk = render_report(summary, {"sancho": ["ínsula"]})
    assert "![Loss per epoch](loss.png)" in on_disk and "![Word map](map.png)" in on_disk
    embedded = render_report(summary, {"sancho": ["ínsula"]}, embed=True)
    for name in ("loss.png", "map.png"):
        data = (run_dir / name).read_bytes()
        assert data.startswith(PNG)
        assert f"(data:image/png;base64,{base64.b64encode(data).decode()})" in embedded
    assert embedded.replace("data:image/png;base64,", "").count("(") == on_disk.count("(")


def test_the_report_says_what_the_run_did(home: Path) -> None:
    row = {
        "mode": "finetune", "accuracy": 0.7, "accuracy_std": 0.01, "macro_f1": 0.5,
        "macro_f1_std": 0.02, "seeds": 5, "n_train": 540, "n_validation": 136,
    }  # fmt: skip
    summary = replace(
        summary_for(
            home / "runs" / "r1",
            home / "runs" / "r1" / "vectors.parquet",
            {
                "download": StageRun(key="d", reused=True, seconds=3.5),
                "train": StageRun(key="t", reused=False, seconds=12.0),
            },
            loss_per_epoch=[2.5, 2.0, 1.8],
            heldout_loss_per_epoch=[2.6, 2.1],
        ),
        classifier=ClassifierRun([row], "news.csv", "Topic", home / "model"),
    )
    lines = render_report(summary, {}).splitlines()
    assert "| 2 | 2.0000 | 2.1000 |" in lines
    assert "| 3 | 1.8000 | |" in lines  # no held-out loss after the last epoch
    assert "| download | yes |  |" in lines and "| train | no | 12.0 |" in lines
    assert any(line.startswith("Validation split: 136 of 676 items") for line in lines)
    assert "## Quality gate: passed: the run is current" in lines


def test_the_gate_outcome_says_whether_the_run_passed_and_who_made_it_current() -> None:
    assert gate_outcome(True, False) == "passed: the run is current"
    assert gate_outcome(False, False) == "rejected: the run is stored, not current"
    assert gate_outcome(True, True) == "passed, and the run was made current by hand"
    assert gate_outcome(False, True) == "failed, and the run was made current by hand"


def test_probe_neighbours_come_from_the_reported_run_and_skip_missing_probes(home: Path) -> None:
    words = ["sancho", "ínsula", "escudero", "molino", "gigante"]  # no "quijote": skipped
    vectors = np.array(
        [[1, 0, 0], [0.9, 0.1, 0], [0.8, 0.3, 0], [0, 0, 1], [0, 0.1, 0.9]], dtype=np.float32
    )
    warehouse.register_run(make_run(home / "runs", "r1", words, vectors))
    warehouse.register_run(make_run(home / "runs", "r2", words, vectors[[3, 0, 1, 4, 2]]))
    assert probe_neighbours("r1", k=2) == {"sancho": ["ínsula", "escudero"]}  # not r2, current


# --- the artifact in a browser -------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The report's embedded pictures as the page shows them.
IMAGES = """Array.from(document.images).filter(i => i.src.startsWith('data:image/png'))
  .map(i => ({alt: i.alt, complete: i.complete, natural: i.naturalWidth,
              drawn: i.getBoundingClientRect().width}))"""


def browse(url: str, screenshot: Path, timeout: float = 60.0) -> list[dict[str, Any]]:
    """Load `url` in headless Chromium until the page shows two decoded PNG data-URL images
    (or `timeout`), save a screenshot of the whole page and return those images."""
    from websockets.sync.client import connect  # a Prefect dependency

    with tempfile.TemporaryDirectory() as profile:
        chrome = subprocess.Popen(
            [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--window-size=1400,3200",
             f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + timeout
            active = Path(profile) / "DevToolsActivePort"  # the port, once it listens
            while not (active.exists() and len(active.read_text().split()) == 2):
                assert time.monotonic() < deadline, "chromium did not open its DevTools port"
                time.sleep(0.1)
            port = active.read_text().split()[0]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as answer:
                page = next(t for t in json.load(answer) if t["type"] == "page")
            with connect(page["webSocketDebuggerUrl"], max_size=None) as socket:
                calls = iter(range(1, 1_000_000))

                def call(method: str, **params: Any) -> dict[str, Any]:
                    number = next(calls)
                    socket.send(json.dumps({"id": number, "method": method, "params": params}))
                    while (message := json.loads(socket.recv())).get("id") != number:
                        pass
                    return message["result"]

                call("Page.navigate", url=url)
                while time.monotonic() < deadline:
                    shown = call("Runtime.evaluate", expression=IMAGES, returnByValue=True)
                    images = shown["result"].get("value") or []
                    if len(images) == 2 and all(i["complete"] and i["natural"] for i in images):
                        break
                    time.sleep(0.5)
                shot = call("Page.captureScreenshot")  # the window: tall enough for the report
                screenshot.write_bytes(base64.b64decode(shot["data"]))
                return images
        finally:
            os.killpg(chrome.pid, signal.SIGTERM)
            chrome.wait()


@flow(name="report-check")
def report_flow(summary: RunSummary) -> RunSummary:
    return report_task(summary)


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium: the browser check needs it")
def test_the_ui_shows_the_reports_pictures(tmp_path: Path, home: Path) -> None:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.settings import PREFECT_API_URL, temporary_settings

    summary = run_summary(home, [2.5, 2.0, 1.8])
    server_home = tmp_path / "server"
    try:
        url = serve.start_server(server_home, free_port(), timeout=120)
        with temporary_settings({PREFECT_API_URL: url}):
            report_flow(summary)
        with serve.client(url) as client:
            key = ArtifactFilter(key=ArtifactFilterKey(any_=["quijote-report"]))
            (artifact,) = client.read_artifacts(artifact_filter=key)
        ui = url.removesuffix("/api")
        for version, route in (("v1", ""), ("v2", "/v2")):
            screenshot = tmp_path / f"report-{version}.png"
            images = browse(f"{ui}{route}/artifacts/artifact/{artifact.id}", screenshot)
            assert [i["alt"] for i in images] == ["Loss per epoch", "Word map"], screenshot
            run_dir = summary.run_dir
            for image, name in zip(images, ("loss.png", "map.png"), strict=True):
                width = int.from_bytes((run_dir / name).read_bytes()[16:20], "big")
                assert image["complete"] and image["natural"] == width, (image, screenshot)
                assert image["drawn"] >= 400, (image, screenshot)
    finally:
        serve.stop(server_home)
