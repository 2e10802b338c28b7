"""Training checkpoints: `data/stages/<stage>/.checkpoint-<key>/checkpoint.npz`, the arrays of a
stage still being built and a small JSON position, replaced atomically on every save. A run
killed mid-stage (even by `kill -9`) finds it under the same key and goes on from there; the
stage removes it once its output is in place."""

from __future__ import annotations

import json
import logging
import zipfile
from typing import Any

import numpy as np

from storage.files import atomic_path, remove_tree
from storage.paths import stages_dir

FILE = "checkpoint.npz"
_POSITION = "__position__"

log = logging.getLogger("quijote")


class Checkpoint:
    """The checkpoint of one stage output (`stage`, `key`)."""

    def __init__(self, stage: str, key: str) -> None:
        self.directory = stages_dir() / stage / f".checkpoint-{key}"

    def save(self, position: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        with atomic_path(self.directory / FILE) as tmp, tmp.open("wb") as f:
            np.savez(f, **{_POSITION: np.array(json.dumps(position))}, **arrays)

    def load(self) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        """The saved position and arrays; None when there is none or it cannot be read."""
        path = self.directory / FILE
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as saved:
                arrays = {name: saved[name] for name in saved.files}
            return json.loads(str(arrays.pop(_POSITION))), arrays
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            log.warning("ignoring an unreadable checkpoint %s (%s): starting over", path, error)
            return None

    def clear(self) -> None:
        remove_tree(self.directory)
