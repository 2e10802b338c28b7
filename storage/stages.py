"""Content-addressed stage outputs: `data/stages/<stage>/<key>/`.

A stage's key hashes its version, the parameters it depends on and the keys (content hashes)
of its inputs. An output directory is built under a temporary name and renamed into place
when complete, so a directory that exists is a finished, reusable result — also across runs.
Its `stage.json` records the size of every file, checked on reuse: a directory whose files
were since truncated, replaced or deleted is set aside and built again. `Stages` holds one run's
outputs, stage by stage. A run holds `stages_lock` shared while it uses stage outputs;
`prune_stages` removes those no kept run uses, holding it exclusively.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from storage.files import disk_bytes, remove_tree, temporary_directory, write_json
from storage.paths import stages_dir

META_FILE = "stage.json"
LOCK_FILE = ".lock"
SET_ASIDE = (".damaged-", ".pruned-")  # an output renamed `<prefix><key>-<random>`, then removed

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageOutput:
    """A finished stage: where its files are and what it recorded about them."""

    stage: str
    key: str
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)
    reused: bool = False

    def file(self, name: str) -> Path:
        return self.path / name


@dataclass(frozen=True)
class Prepared:
    """The data preparation's outputs, from download to pairs (the per-shard stages: a list,
    one output per corpus document)."""

    download: StageOutput
    tokenize: list[StageOutput]
    vocab: StageOutput
    subsample: list[StageOutput]
    pairs: list[StageOutput]


@dataclass(frozen=True)
class Stages(Prepared):
    """Every stage's output, in pipeline order; evaluate and classify are None when the run
    had no benchmark files or no labelled table (and in `quijote train`)."""

    negatives: StageOutput
    train: StageOutput
    evaluate: StageOutput | None = None
    classify: StageOutput | None = None

    def items(self) -> Iterator[tuple[str, StageOutput | list[StageOutput]]]:
        """(name, output) of each stage that ran, in pipeline order."""
        for stage in fields(self):
            output = getattr(self, stage.name)
            if output is not None:
                yield stage.name, output


def shards(output: StageOutput | list[StageOutput]) -> list[StageOutput]:
    """A stage's outputs as a list: one per corpus shard, or the stage's single output."""
    return output if isinstance(output, list) else [output]


def total(output: StageOutput | list[StageOutput], field: str) -> int:
    """A count summed over a stage's shards."""
    return sum(part.meta[field] for part in shards(output))


def stage_key(stage: str, version: int, params: Mapping[str, Any], inputs: list[str]) -> str:
    payload = json.dumps(
        {"stage": stage, "version": version, "params": dict(params), "inputs": inputs},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def run_stage(
    stage: str,
    version: int,
    params: Mapping[str, Any],
    inputs: list[str],
    build: Callable[[Path], Mapping[str, Any]],
) -> StageOutput:
    """Return the cached output of this stage for these inputs, or build it.

    `build(directory)` writes the stage's files into an empty directory and returns a small
    summary (row counts, metrics) kept in the stage's `stage.json`.
    """
    key = stage_key(stage, version, params, inputs)
    final = stages_dir() / stage / key
    if final.exists():
        meta = _intact_meta(final)
        if meta is not None:
            return StageOutput(stage, key, final, meta, reused=True)
        logger.warning(
            "%s/%s is damaged (a file changed since it was built): rebuilding it", stage, key
        )
        _set_aside(final, ".damaged-")
    with temporary_directory(final.parent, key) as tmp:
        started = time.perf_counter()
        summary = dict(build(tmp))
        meta = {
            "stage": stage,
            "key": key,
            "version": version,
            "params": dict(params),
            "inputs": inputs,
            "seconds": round(time.perf_counter() - started, 3),
            **summary,
            "file_sizes": _file_sizes(tmp),
        }
        write_json(tmp / META_FILE, meta)
        try:
            os.rename(tmp, final)
        except OSError:  # a concurrent run finished the same stage first: use its output
            if not (final / META_FILE).exists():
                raise
        return StageOutput(stage, key, final, _read_meta(final))


def _read_meta(path: Path) -> dict[str, Any]:
    return json.loads((path / META_FILE).read_text())


def _file_sizes(directory: Path) -> dict[str, int]:
    """Every file under `directory` (by relative path) and its size in bytes."""
    files = (p for p in sorted(directory.rglob("*")) if p.is_file() and p.name != META_FILE)
    return {str(p.relative_to(directory)): p.stat().st_size for p in files}


def _intact_meta(path: Path) -> dict[str, Any] | None:
    """The stage.json of a finished stage directory whose recorded files all still have their
    recorded sizes; None when it is unreadable or a file is missing or changed."""
    try:
        meta = _read_meta(path)
    except (OSError, ValueError):
        return None
    sizes = _file_sizes(path)
    recorded = meta.get("file_sizes", {})  # stages built before sizes were recorded: trusted
    return meta if all(sizes.get(name) == size for name, size in recorded.items()) else None


def _set_aside(path: Path, prefix: str) -> None:
    """Move a stage directory out of the way (atomically) under `prefix` (one of SET_ASIDE),
    then delete it; what a process killed meanwhile leaves, the next prune removes."""
    aside = path.parent / f"{prefix}{path.name}-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(path, aside)
    except FileNotFoundError:  # a concurrent run set it aside first
        return
    remove_tree(aside)


@contextmanager
def stages_lock(exclusive: bool = False) -> Iterator[bool]:
    """The stage cache's lock, held for the block (the system drops it when the process ends,
    however). Shared, by a run while it builds and reads stage outputs: it waits while a prune
    holds it. Exclusive, by a prune, which does not wait: the block gets False while a run
    holds it, True once it has it."""
    root = stages_dir()
    root.mkdir(parents=True, exist_ok=True)
    with (root / LOCK_FILE).open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB if exclusive else fcntl.LOCK_SH)
            held = True
        except BlockingIOError:
            held = False
        yield held


@dataclass(frozen=True)
class Swept:
    """What `prune_stages` removed: finished stage outputs, and bytes of disk freed (theirs
    and those of outputs set aside by killed processes)."""

    outputs: int
    freed: int


def prune_stages(kept: set[Path]) -> Swept:
    """Remove every finished stage output whose directory (resolved) is not in `kept`, and
    what processes killed while setting one aside left; directories being built and training
    checkpoints (`.tmp-…`, `.checkpoint-…`) stay. Only under `stages_lock(exclusive=True)`."""
    outputs = freed = 0
    for output in sorted(p for p in stages_dir().glob("[!.]*/*") if p.is_dir()):
        if output.name.startswith(SET_ASIDE):
            freed += disk_bytes(output)
            remove_tree(output)
        elif not output.name.startswith(".") and output.resolve() not in kept:
            freed += disk_bytes(output)
            outputs += 1
            _set_aside(output, ".pruned-")
    return Swept(outputs, freed)
