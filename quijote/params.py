"""Parameters: every default in one place, unknown options rejected, values checked before any
work starts (the fastText way). `Settings` is the machinery; `Params` are the skip-gram
pipeline's (the classifier's are in tasks/classify.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar, Self

from quijote.errors import QuijoteError


@dataclass(frozen=True)
class Settings:
    """A frozen set of typed values. A subclass declares its fields with defaults, `RULES`
    (what each field must be, in words) and `checks()` (whether each field is valid)."""

    RULES: ClassVar[dict[str, str]] = {}

    def checks(self) -> dict[str, bool]:
        return {}

    def __post_init__(self) -> None:
        for name, ok in self.checks().items():
            if not ok:
                raise QuijoteError(f"invalid {name}={getattr(self, name)!r}: {self.RULES[name]}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Self:
        """Build from user input (`--set key=value` strings are converted); unknown keys fail."""
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise QuijoteError(f"unknown option {unknown[0]!r}; known options: {', '.join(known)}")
        return cls(**{k: cls._convert(k, v, _TYPES[known[k]]) for k, v in values.items()})

    @classmethod
    def _convert(cls, name: str, value: Any, kind: type) -> Any:
        if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return kind(value)
            except ValueError:
                pass
        raise QuijoteError(f"invalid {name}={value!r}: {cls.RULES[name]}")

    def with_(self, **changes: Any) -> Self:
        """A copy with some values changed (checked like the original)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def subset(self, *names: str) -> dict[str, Any]:
        """The named values only: what one stage depends on (its cache key)."""
        return {n: getattr(self, n) for n in names}


_TYPES = {"int": int, "float": float, "str": str}


@dataclass(frozen=True)
class Params(Settings):
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
    device: str = "auto"  # auto (CUDA when present), cpu, cuda or torch (the GPU code on the CPU)
    threads: int = 0  # CPU threads for training (0 = all cores)
    checkpoint_seconds: float = 120.0  # training checkpoints: every epoch and this often
    restrict_vocab: int = 0  # benchmarks search only this many most frequent words (0 = all)
    pairs: str = "files"  # files: every epoch's pairs on disk; stream: drawn again in training

    RULES: ClassVar[dict[str, str]] = {
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
        "seed": "must be an integer >= 0",
        "device": "must be auto, cpu, cuda or torch (the GPU code on the CPU)",
        "threads": "must be an integer >= 0 (0 = all cores)",
        "checkpoint_seconds": "must be a number >= 0 (0 = after every block of pairs)",
        "restrict_vocab": "must be an integer >= 0 (0 = every word)",
        "pairs": "must be files (every epoch's pairs written before training, kept for reruns) "
        "or stream (drawn again from the subsampled sentences while training: none on disk)",
    }

    def checks(self) -> dict[str, bool]:
        return {
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
            "seed": self.seed >= 0,
            "device": self.device in ("auto", "cpu", "cuda", "torch"),
            "threads": self.threads >= 0,
            "checkpoint_seconds": self.checkpoint_seconds >= 0,
            "restrict_vocab": self.restrict_vocab >= 0,
            "pairs": self.pairs in ("files", "stream"),
        }
