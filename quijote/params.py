"""Training parameters: every default in one place, unknown options rejected, values checked
before any work starts (the fastText way)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from quijote.errors import QuijoteError


@dataclass(frozen=True)
class Params:
    """Skip-gram pipeline parameters. Defaults follow the word2vec C tool and gensim."""

    dim: int = 100  # vector size
    window: int = 5  # max context distance; the effective window is drawn in [1, window]
    negative: int = 5  # negatives per (center, context) pair
    min_count: int = 5  # words seen fewer times are dropped
    max_vocab: int = 0  # keep at most this many words (0 = no limit)
    sample: float = 1e-3  # subsampling threshold t
    subsample_rule: str = "word2vec"  # "word2vec": (sqrt(f/t)+1)*t/f; "paper": 1-sqrt(t/f)
    epochs: int = 5
    heldout: float = 0.01  # share of sentences kept out of training for the validation loss
    lr: float = 0.025  # start learning rate, decays linearly to lr * 1e-4
    batch_size: int = 4096  # (center, context) pairs per SGD step
    seed: int = 1
    device: str = "auto"  # auto (CUDA when present), cpu or cuda
    threads: int = 0  # CPU threads for training (0 = all cores)

    def __post_init__(self) -> None:
        checks = {
            "dim": self.dim >= 1,
            "window": self.window >= 1,
            "negative": self.negative >= 1,
            "min_count": self.min_count >= 1,
            "max_vocab": self.max_vocab >= 0,
            "sample": self.sample > 0,
            "subsample_rule": self.subsample_rule in ("word2vec", "paper"),
            "epochs": self.epochs >= 1,
            "heldout": 0 <= self.heldout < 0.5,
            "lr": self.lr > 0,
            "batch_size": self.batch_size >= 1,
            "device": self.device in ("auto", "cpu", "cuda"),
            "threads": self.threads >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise QuijoteError(f"invalid {name}={getattr(self, name)!r}: {_RULES[name]}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Params:
        """Build from user input (`--set key=value` strings are converted); unknown keys fail."""
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise QuijoteError(f"unknown option {unknown[0]!r}; known options: {', '.join(known)}")
        converted = {k: _convert(k, v, _TYPES[known[k]]) for k, v in values.items()}
        return cls(**converted)

    def with_(self, **changes: Any) -> Params:
        """A copy with some values changed (checked like the original)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def subset(self, *names: str) -> dict[str, Any]:
        """The named values only: what one stage depends on (its cache key)."""
        return {n: getattr(self, n) for n in names}


_TYPES = {"int": int, "float": float, "str": str}

_RULES = {
    "dim": "must be an integer >= 1",
    "window": "must be an integer >= 1",
    "negative": "must be an integer >= 1",
    "min_count": "must be an integer >= 1",
    "max_vocab": "must be an integer >= 0 (0 = no limit)",
    "sample": "must be a number > 0 (1e-3 is the word2vec default)",
    "subsample_rule": "must be 'word2vec' or 'paper'",
    "epochs": "must be an integer >= 1",
    "heldout": "must be a share in [0, 0.5) (0 = no held-out loss)",
    "lr": "must be a number > 0",
    "batch_size": "must be an integer >= 1",
    "device": "must be auto, cpu or cuda",
    "threads": "must be an integer >= 0 (0 = all cores)",
}


def _convert(name: str, value: Any, kind: type) -> Any:
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return kind(value)
        except ValueError:
            pass
    raise QuijoteError(f"invalid {name}={value!r}: {_RULES[name]}")
