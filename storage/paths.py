"""Where things live: the data directory (QUIJOTE_HOME, default ./data) and the corpus mirror."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_home(create: bool = True) -> Path:
    """The directory holding everything a run makes (created on demand)."""
    home = Path(os.environ.get("QUIJOTE_HOME", "data")).expanduser().resolve()
    if create:
        home.mkdir(parents=True, exist_ok=True)
    return home


def mirror_dir() -> Path | None:
    """Local directory searched for corpora before the network: QUIJOTE_MIRROR, else the
    shared corpora beside the project when they exist."""
    configured = os.environ.get("QUIJOTE_MIRROR")
    if configured is not None:
        return Path(configured).expanduser().resolve() if configured else None
    shared = PROJECT_ROOT.parent / "shared" / "corpora"
    return shared if shared.is_dir() else None


def eval_dir() -> Path | None:
    """The benchmark files beside the corpus mirror (`../shared/eval`), when they exist."""
    mirror = mirror_dir()
    folder = mirror.parent / "eval" if mirror else None
    return folder if folder and folder.is_dir() else None


def raw_dir() -> Path:
    """Downloaded corpus files, named by their content hash."""
    path = data_home() / "raw"
    path.mkdir(exist_ok=True)
    return path


def stages_dir() -> Path:
    return data_home() / "stages"


def runs_dir() -> Path:
    return data_home() / "runs"


def warehouse_path() -> Path:
    """The warehouse file (looking for it creates nothing: a writer makes its folder)."""
    return data_home(create=False) / "warehouse.duckdb"


CLASSIFIER_MODEL = "model"  # the fine-tuned classifier inside the classify stage's directory
RUN_STAGES = "stages"  # a run directory's links to the stage outputs it used
RUN_VECTORS = "vectors.txt"  # a run directory's copy of its vectors (word2vec text)


def run_classifier_dir(run_id: str) -> Path:
    """Where a run's classifier is: its link to the classify stage, then the model folder."""
    return runs_dir() / run_id / RUN_STAGES / "classify" / CLASSIFIER_MODEL
