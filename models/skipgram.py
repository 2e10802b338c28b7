"""Skip-gram with negative sampling (SGNS), trained by SGD as in word2vec, on the CPU or a GPU.

`train_sgns` runs the epochs and measures them; a `Trainer` does the arithmetic: on the CPU the
compiled Hogwild kernel (`models.sgns_kernel`), on CUDA the batched PyTorch step
(`models.skipgram_torch`, also the reference the kernel is tested against). This module does
not import torch, so that the CPU path starts fast.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from quijote.errors import QuijoteError

Block = tuple[np.ndarray, ...]  # centers (B,), contexts (B,) [, negatives (B, K)]
Batch = tuple[np.ndarray, np.ndarray, np.ndarray]  # centers (B,), contexts (B,), negatives (B, K)
Progress = Callable[[int, int, int, float], None]  # epoch, pairs done, pairs total, mean loss
MIN_LR = 1e-4  # the learning rate decays linearly from lr to lr * MIN_LR over all pairs


@dataclass
class TrainResult:
    vectors: np.ndarray  # (vocab, dim) float32: the input embeddings, the word vectors
    loss_per_epoch: list[float]  # mean SGNS loss per training pair, during the epoch
    heldout_loss_per_epoch: list[float]  # mean loss on the held-out pairs after each epoch
    pairs: int
    seconds: float
    device: str


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


def resolve_device(device: str) -> str:
    """`auto` is CUDA when present (torch is asked only where an NVIDIA driver is), else cpu."""
    if device != "auto":
        return device
    if not Path("/proc/driver/nvidia/version").exists():
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def train_sgns(
    trainer: Trainer,
    epochs: Callable[[int], Iterable[Block]],
    n_epochs: int,
    total_pairs: int,
    on_progress: Progress | None = None,
    heldout: Batch | None = None,
) -> TrainResult:
    """Train on `epochs(e)`'s blocks for e in range(n_epochs); measure the loss on the
    `heldout` pairs after each epoch. A loss that is not finite is a QuijoteError."""
    done, losses, heldout_losses = 0, [], []
    started = time.perf_counter()
    for epoch in range(n_epochs):
        loss_sum, first = 0.0, 0
        for block in epochs(epoch):
            loss_sum += trainer.train(block, epoch, first, done)
            first += len(block[0])
            done += len(block[0])
            if on_progress:
                on_progress(epoch, done, total_pairs, math.nan)
        losses.append(loss_sum / max(first, 1))
        if not math.isfinite(losses[-1]):
            raise QuijoteError(
                f"training diverged in epoch {epoch + 1} (loss is not finite): lower lr "
                "(or batch_size on a GPU)"
            )
        if heldout is not None and len(heldout[0]):
            heldout_losses.append(trainer.heldout_loss(heldout))
        if on_progress:
            on_progress(epoch, done, total_pairs, losses[-1])
    return TrainResult(
        vectors=trainer.vectors(),
        loss_per_epoch=losses,
        heldout_loss_per_epoch=heldout_losses,
        pairs=done,
        seconds=time.perf_counter() - started,
        device=trainer.device,
    )
