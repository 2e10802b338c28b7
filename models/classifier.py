"""EmbeddingBag text classifier: the mean of a text's word vectors, then a linear layer (an
optional hidden layer before it) to label scores. The embedding starts from skip-gram vectors,
trained further (`finetune`) or not (`frozen`), or at random (`random`, the baseline).

A saved model is a directory: `weights.pt` (the state_dict, loaded with weights_only=True),
`vocab.json`, `labels.json` and `settings.json`. Words outside the vocabulary are skipped; a
text without a known word gets the empty bag's zero vector.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from quijote.errors import QuijoteError, first_line
from storage.files import remove_tree, space_for

MODES = ("finetune", "frozen", "random")
FILES = ("weights.pt", "vocab.json", "labels.json", "settings.json")
MISSING_WORD_SCALE = 0.1  # a word without a vector: normal, this share of the vectors' std


class BagClassifier(nn.Module):
    """EmbeddingBag(mean) -> dropout -> [Linear -> ReLU -> dropout] -> Linear."""

    def __init__(
        self, vocab_size: int, n_labels: int, dim: int, hidden: int = 0, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.embedding = nn.EmbeddingBag(vocab_size, dim, mode="mean", sparse=True)
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        if hidden:
            layers += [nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout)]
        layers.append(nn.Linear(hidden or dim, n_labels))
        self.head = nn.Sequential(*layers)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Label scores (logits) of the bags `ids[offsets[i]:offsets[i + 1]]`."""
        return self.head(self.embedding(ids, offsets))


@dataclass
class TextClassifier:
    """A BagClassifier with its vocabulary, label names and settings (mode, dim, hidden,
    dropout and whatever the trainer records)."""

    module: BagClassifier
    vocab: list[str]
    labels: list[str]
    settings: dict[str, Any]
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.index = {word: i for i, word in enumerate(self.vocab)}

    def ids(self, tokens: Sequence[str]) -> torch.Tensor:
        """The vocabulary ids of a text's known words."""
        index = self.index
        return torch.tensor([index[t] for t in tokens if t in index], dtype=torch.long)

    def probabilities(self, texts: Sequence[Sequence[str]]) -> np.ndarray:
        """(texts, labels) softmax probabilities of tokenized texts."""
        self.module.eval()
        with torch.no_grad():
            ids, offsets = bags([self.ids(tokens) for tokens in texts])
            return torch.softmax(self.module(ids, offsets), dim=1).numpy()

    def predict(self, texts: Sequence[Sequence[str]]) -> tuple[list[str], np.ndarray]:
        """The most probable label of each text and its probability."""
        probabilities = self.probabilities(texts)
        best = probabilities.argmax(axis=1)
        return [self.labels[i] for i in best], probabilities[np.arange(len(best)), best]

    def save(self, directory: Path) -> None:
        """Write the model directory, built beside it under a temporary name and renamed into
        place; an existing model there is replaced, any other existing directory is refused."""
        if directory.exists() and not _replaceable(directory):
            raise QuijoteError(f"{directory} exists and is not a classifier directory")
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = directory.parent / f".{directory.name}.{uuid.uuid4().hex[:8]}.tmp"
        old = tmp.with_suffix(".old")
        tmp.mkdir()
        try:
            with space_for(directory):
                torch.save(self.module.state_dict(), tmp / "weights.pt")
                for name, value in (
                    ("vocab.json", self.vocab),
                    ("labels.json", self.labels),
                    ("settings.json", self.settings),
                ):
                    text = json.dumps(value, ensure_ascii=False, indent=1) + "\n"
                    (tmp / name).write_text(text)
            if directory.exists():
                os.rename(directory, old)
            os.rename(tmp, directory)
        finally:
            remove_tree(tmp)
            remove_tree(old)

    @classmethod
    def load(cls, directory: Path) -> TextClassifier:
        """Read a model directory written by `save`."""
        if not directory.is_dir():
            raise QuijoteError(
                f"no classifier at {directory}: train one with `quijote classify train`"
            )
        missing = [name for name in FILES if not (directory / name).is_file()]
        if missing:
            raise QuijoteError(f"{directory} is not a classifier directory (no {missing[0]})")
        try:
            vocab = json.loads((directory / "vocab.json").read_text())
            labels = json.loads((directory / "labels.json").read_text())
            settings = json.loads((directory / "settings.json").read_text())
            module = BagClassifier(
                len(vocab), len(labels), settings["dim"], settings["hidden"], settings["dropout"]
            )
            state = torch.load(directory / "weights.pt", weights_only=True)
            module.load_state_dict(state)
        except (ValueError, KeyError, RuntimeError, OSError) as error:
            raise QuijoteError(
                f"cannot read the classifier in {directory}: {first_line(error)}"
            ) from None
        return cls(module, vocab, labels, settings)


def build(
    vocab: list[str],
    labels: list[str],
    mode: str,
    dim: int,
    vectors: tuple[list[str], np.ndarray] | None = None,
    hidden: int = 0,
    dropout: float = 0.0,
    seed: int = 1,
    settings: dict[str, Any] | None = None,
) -> TextClassifier:
    """A new classifier. `finetune` and `frozen` copy the rows of `vectors` (words, matrix)
    for the words they have, and draw the other words small (normal, MISSING_WORD_SCALE times
    the vectors' std); `random` draws every word normal(0, 1), PyTorch's default."""
    if mode not in MODES:
        raise QuijoteError(f"unknown mode {mode!r}: use {', '.join(MODES)}")
    if mode != "random" and vectors is None:
        raise QuijoteError(f"mode {mode} needs vectors: give a vectors file, or use random")
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # the linear layers' default init
        module = BagClassifier(len(vocab), len(labels), dim, hidden, dropout)
    weight = torch.randn(len(vocab), dim, generator=generator)
    if mode != "random":
        assert vectors is not None
        words, matrix = vectors
        if matrix.shape[1] != dim:
            raise QuijoteError(f"the vectors have dim {matrix.shape[1]}, the classifier {dim}")
        position = {word: i for i, word in enumerate(words)}
        weight *= MISSING_WORD_SCALE * float(matrix.std())
        rows = [(i, position[word]) for i, word in enumerate(vocab) if word in position]
        if rows:
            mine, theirs = (list(column) for column in zip(*rows, strict=True))
            weight[mine] = torch.from_numpy(np.asarray(matrix, dtype=np.float32)[theirs])
    module.embedding.weight.data.copy_(weight)
    module.embedding.weight.requires_grad_(mode != "frozen")
    settings = {**(settings or {}), "mode": mode, "dim": dim, "hidden": hidden, "dropout": dropout}
    return TextClassifier(module, vocab, labels, settings)


def bags(texts: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """EmbeddingBag's input: all ids in one tensor, and where each text starts."""
    if not texts:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    starts = torch.tensor([0, *(len(t) for t in texts[:-1])], dtype=torch.long).cumsum(0)
    return torch.cat(list(texts)), starts


def _replaceable(directory: Path) -> bool:
    """An empty directory, or one holding a saved classifier (only its files)."""
    names = {p.name for p in directory.iterdir()} if directory.is_dir() else {"?"}
    return names <= set(FILES)
