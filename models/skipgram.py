"""Skip-gram with negative sampling (SGNS), trained by SGD as in word2vec, on the CPU or a GPU.

`train_sgns` runs the epochs and measures them; a `Trainer` does the arithmetic: on the CPU the
compiled Hogwild kernel (`models.sgns_kernel`), on CUDA (or with device `torch`, on the CPU)
the batched PyTorch trainer (`models.skipgram_torch`, which also holds the reference step the
kernel is tested against). This module does not import torch, so that the CPU path starts fast.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from quijote.errors import QuijoteError

Block = tuple[np.ndarray, ...]  # centers (B,), contexts (B,); PyTorch's: one (B, 2) tensor
Batch = tuple[np.ndarray, np.ndarray, np.ndarray]  # centers (B,), contexts (B,), negatives (B, K)
Progress = Callable[[int, int, int, float], None]  # epoch, pairs done, pairs total, mean loss
Save = Callable[[dict[str, Any], dict[str, np.ndarray]], None]  # position, trainer state
MIN_LR = 1e-4  # the learning rate decays linearly from lr to lr * MIN_LR over all pairs


@dataclass
class TrainResult:
    vectors: np.ndarray  # (vocab, dim) float32: the input embeddings, the word vectors
    loss_per_epoch: list[float]  # mean SGNS loss per training pair, during the epoch
    heldout_loss_per_epoch: list[float]  # mean loss on the held-out pairs after each epoch
    pairs: int
    seconds: float
    device: str


@dataclass
class Position:
    """Where training stands (what a checkpoint records besides the weights): the epoch under
    way, its pairs done and their summed loss, all pairs done, and the epochs' measurements."""

    epoch: int = 0
    first: int = 0
    done: int = 0
    loss_sum: float = 0.0
    losses: list[float] = field(default_factory=list)
    heldout_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0  # spent training before this process


class Trainer(Protocol):
    device: str

    def train(self, block: Block, epoch: int, first: int, done: int) -> float:
        """SGD on one block of an epoch's pairs (rows first.. of the epoch; `done` pairs of
        all epochs before it); returns the summed loss of its pairs."""
        ...

    def heldout_loss(self, batch: Batch) -> float:
        """Mean loss of held-out pairs, without training."""
        ...

    def vectors(self) -> np.ndarray: ...

    def state(self) -> dict[str, np.ndarray]:
        """The weights, to checkpoint."""
        ...

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Go on from checkpointed weights; ValueError when they do not fit."""
        ...


def saved_weights(state: dict[str, np.ndarray], name: str, shape: tuple[int, ...]) -> np.ndarray:
    """`state[name]` if it is float32 of `shape`, else ValueError (checkpoints of other runs)."""
    weights = state.get(name)
    if weights is None or weights.shape != shape or weights.dtype != np.float32:
        raise ValueError(f"checkpoint has no float32 {name} of shape {shape}")
    return weights


NVIDIA_DRIVER = Path("/proc/driver/nvidia/version")
NO_CUDA = "device=cuda, but there is no CUDA GPU here: use auto or cpu"


def check_device(device: str) -> None:
    """Before any work: `cuda` needs an NVIDIA driver (PyTorch, whose first CUDA call starts
    CUDA in the process, is asked only when training starts)."""
    if device == "cuda" and not NVIDIA_DRIVER.exists():
        raise QuijoteError(NO_CUDA)


def resolve_device(device: str) -> str:
    """`auto` is CUDA when present (torch is asked only where an NVIDIA driver is), else cpu;
    `cuda` where PyTorch sees no GPU is a QuijoteError."""
    if device not in ("auto", "cuda"):
        return device
    if NVIDIA_DRIVER.exists():
        import torch

        if torch.cuda.is_available():
            return "cuda"
    if device == "cuda":
        raise QuijoteError(NO_CUDA)
    return "cpu"


def read_ahead(blocks: Iterable[Block]) -> Iterator[Block]:
    """The blocks of `blocks`, each next one read by a background thread while the caller
    trains on the current one (reading Parquet and the kernel both release the GIL)."""
    with ThreadPoolExecutor(1, thread_name_prefix="read-ahead") as reader:
        iterator = iter(blocks)
        following = reader.submit(next, iterator, None)
        while (block := following.result()) is not None:
            following = reader.submit(next, iterator, None)
            yield block


def train_sgns(
    trainer: Trainer,
    epochs: Callable[[int, int], Iterable[Block]],
    n_epochs: int,
    total_pairs: int,
    on_progress: Progress | None = None,
    heldout: Batch | None = None,
    start: Position | None = None,
    save: Save | None = None,
    save_every: float = math.inf,
) -> TrainResult:
    """Train on `epochs(e, first)`'s blocks (epoch e from its pair `first` on) for e in
    range(n_epochs), from `start` (a checkpoint's position, the trainer's weights already
    loaded) or the beginning; measure the loss on the `heldout` pairs after each epoch.
    `save(position, weights)` runs after every epoch but the last and after any block that
    ends `save_every` seconds after the previous save. A loss that is not finite is a
    QuijoteError."""
    at = start or Position()
    started = last_save = time.perf_counter()

    def checkpoint() -> None:
        nonlocal last_save
        if save is not None:
            elapsed = at.seconds + time.perf_counter() - started
            save(asdict(at) | {"seconds": elapsed}, trainer.state())
            last_save = time.perf_counter()

    for epoch in range(at.epoch, n_epochs):
        for block in read_ahead(epochs(epoch, at.first)):
            at.loss_sum += trainer.train(block, epoch, at.first, at.done)
            at.first += len(block[0])
            at.done += len(block[0])
            if on_progress:
                on_progress(epoch, at.done, total_pairs, math.nan)
            if time.perf_counter() - last_save >= save_every:
                checkpoint()
        at.losses.append(at.loss_sum / max(at.first, 1))
        if not math.isfinite(at.losses[-1]):
            raise QuijoteError(
                f"training diverged in epoch {epoch + 1} (loss is not finite): lower lr "
                "(or batch_size on a GPU)"
            )
        if heldout is not None and len(heldout[0]):
            at.heldout_losses.append(trainer.heldout_loss(heldout))
        if on_progress:
            on_progress(epoch, at.done, total_pairs, at.losses[-1])
        at.epoch, at.first, at.loss_sum = epoch + 1, 0, 0.0
        if at.epoch < n_epochs:
            checkpoint()
    return TrainResult(
        vectors=trainer.vectors(),
        loss_per_epoch=at.losses,
        heldout_loss_per_epoch=at.heldout_losses,
        pairs=at.done,
        seconds=at.seconds + time.perf_counter() - started,
        device=trainer.device,
    )
