"""Where things live: the corpus mirror (QUIJOTE_MIRROR, else the shared corpora beside the
project) and the benchmark files beside it."""

from __future__ import annotations

from pathlib import Path

import pytest

import storage.paths
from storage.paths import eval_dir, mirror_dir


@pytest.fixture
def shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project whose shared corpora exist beside it (`../shared/corpora`), with benchmarks."""
    corpora = tmp_path / "shared" / "corpora"
    corpora.mkdir(parents=True)
    (tmp_path / "shared" / "eval").mkdir()
    monkeypatch.setattr(storage.paths, "PROJECT_ROOT", tmp_path / "project")
    monkeypatch.delenv("QUIJOTE_MIRROR", raising=False)
    return corpora


def test_the_mirror_is_quijote_mirror_else_the_shared_corpora(
    shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert mirror_dir() == shared
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("QUIJOTE_MIRROR", "~/elsewhere/../mirror")
    assert mirror_dir() == tmp_path / "mirror"  # expanded and resolved, existing or not


def test_an_empty_quijote_mirror_means_no_mirror(
    shared: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Set but empty: no mirror at all, not the shared corpora nor the current directory."""
    monkeypatch.setenv("QUIJOTE_MIRROR", "")
    assert mirror_dir() is None
    assert eval_dir() is None


def test_no_shared_corpora_means_no_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage.paths, "PROJECT_ROOT", tmp_path / "project")
    monkeypatch.delenv("QUIJOTE_MIRROR", raising=False)
    assert mirror_dir() is None
    assert eval_dir() is None


def test_the_benchmarks_are_beside_the_mirror_only_when_that_folder_exists(
    shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert eval_dir() == shared.parent / "eval"
    mirror = tmp_path / "other" / "corpora"
    mirror.mkdir(parents=True)
    monkeypatch.setenv("QUIJOTE_MIRROR", str(mirror))
    assert eval_dir() is None  # no `other/eval`
    (tmp_path / "other" / "eval").write_text("not a folder\n", encoding="utf-8")
    assert eval_dir() is None
