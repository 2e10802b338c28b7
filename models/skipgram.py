"""Skip-gram with negative sampling (SGNS), trained by plain SGD as in word2vec.

The update is the reference one, batched: for a batch of (center, context, K negatives) the
scores u·v go through a sigmoid, g = (label - sigmoid) * lr, and the rows of both embedding
matrices are moved by g times the other side, accumulated with `index_add_`. No autograd:
the gradient is written out (tests check it against autograd).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from quijote.errors import QuijoteError

Batch = tuple[np.ndarray, np.ndarray, np.ndarray]  # centers (B,), contexts (B,), negatives (B, K)
Progress = Callable[[int, int, int, float], None]  # epoch, pairs done, pairs total, mean loss


@dataclass
class TrainResult:
    vectors: np.ndarray  # (vocab, dim) float32: the input embeddings, the word vectors
    loss_per_epoch: list[float]  # mean SGNS loss per training pair, during the epoch
    heldout_loss_per_epoch: list[float]  # mean loss on the held-out pairs after each epoch
    pairs: int
    seconds: float
    device: str


def pick_device(device: str) -> torch.device:
    """`auto` is CUDA when present, else the CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def init_embeddings(vocab_size: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """word2vec's start: input vectors uniform in ±0.5/dim, output vectors zero."""
    generator = torch.Generator().manual_seed(seed)
    w_in = (torch.rand(vocab_size, dim, generator=generator) - 0.5) / dim
    return w_in, torch.zeros(vocab_size, dim)


def _forward(
    w_in: torch.Tensor,
    w_out: torch.Tensor,
    center: torch.Tensor,
    context: torch.Tensor,
    negatives: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """Targets (context then negatives), the vectors involved, scores u·v, the label of each
    score and its weight (0 for a negative that equals the pair's context, as in word2vec)."""
    targets = torch.cat([context.unsqueeze(1), negatives], dim=1)  # (B, 1+K)
    v = w_in[center]  # (B, d)
    u = w_out[targets]  # (B, 1+K, d)
    scores = torch.bmm(u, v.unsqueeze(2)).squeeze(2)  # (B, 1+K)
    labels = torch.zeros_like(scores)
    labels[:, 0] = 1
    weight = torch.ones_like(scores)
    weight[:, 1:] = (negatives != context.unsqueeze(1)).to(scores.dtype)
    return targets, v, u, scores, labels, weight


def _loss(scores: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Summed SGNS loss: -log sigmoid(u_o·v) - sum over k of log sigmoid(-u_k·v)."""
    signed = torch.where(labels.bool(), scores, -scores)
    return -(F.logsigmoid(signed) * weight).sum()


def sgns_step(
    w_in: torch.Tensor,
    w_out: torch.Tensor,
    center: torch.Tensor,
    context: torch.Tensor,
    negatives: torch.Tensor,
    lr: float,
) -> torch.Tensor:
    """One SGD step on a batch, in place; returns the summed loss of the batch (before it)."""
    targets, v, u, scores, labels, weight = _forward(w_in, w_out, center, context, negatives)
    loss = _loss(scores, labels, weight)
    g = (labels - torch.sigmoid(scores)) * weight * lr  # (B, 1+K)
    grad_v = torch.bmm(g.unsqueeze(1), u).squeeze(1)  # (B, d)
    grad_u = g.unsqueeze(2) * v.unsqueeze(1)  # (B, 1+K, d)
    w_out.index_add_(0, targets.reshape(-1), grad_u.reshape(-1, w_out.shape[1]))
    w_in.index_add_(0, center, grad_v)
    return loss


@torch.no_grad()
def mean_loss(
    w_in: torch.Tensor, w_out: torch.Tensor, pairs: tuple[torch.Tensor, ...], chunk: int = 1 << 16
) -> float:
    """Mean SGNS loss per pair of (centers, contexts, negatives), without updating anything."""
    center, context, negatives = pairs
    total = torch.zeros((), device=w_in.device)
    for start in range(0, len(center), chunk):
        part = slice(start, start + chunk)
        _, _, _, scores, labels, weight = _forward(
            w_in, w_out, center[part], context[part], negatives[part]
        )
        total += _loss(scores, labels, weight)
    return float(total) / max(len(center), 1)


def train_sgns(
    epochs: Callable[[int], Iterable[Batch]],
    n_epochs: int,
    total_pairs: int,
    vocab_size: int,
    dim: int,
    lr: float,
    seed: int,
    device: str = "auto",
    threads: int = 0,
    on_progress: Progress | None = None,
    heldout: Batch | None = None,
) -> TrainResult:
    """Train on `epochs(e)`'s batches for e in range(n_epochs); measure the loss on the
    `heldout` pairs after each epoch.

    The learning rate decays linearly from `lr` to `lr * 1e-4` over all `total_pairs`.
    """
    torch.set_num_threads(threads or os.cpu_count() or 1)
    target = pick_device(device)
    w_in, w_out = (w.to(target) for w in init_embeddings(vocab_size, dim, seed))
    held = tuple(_tensor(a, target) for a in heldout) if heldout and len(heldout[0]) else None
    done, losses, heldout_losses = 0, [], []
    started = time.perf_counter()
    for epoch in range(n_epochs):
        loss_sum, pairs = torch.zeros((), device=target), 0
        for center, context, negatives in epochs(epoch):
            step_lr = lr * max(1e-4, 1 - done / max(total_pairs, 1))
            loss_sum += sgns_step(
                w_in,
                w_out,
                _tensor(center, target),
                _tensor(context, target),
                _tensor(negatives, target),
                step_lr,
            )
            pairs += len(center)
            done += len(center)
            if on_progress:
                on_progress(epoch, done, total_pairs, math.nan)
        losses.append(float(loss_sum) / max(pairs, 1))
        if not math.isfinite(losses[-1]):
            raise QuijoteError(
                f"training diverged in epoch {epoch + 1} (loss is not finite): lower lr or "
                f"batch_size (a vocabulary of {vocab_size} words is small for batches this large)"
            )
        if held:
            heldout_losses.append(mean_loss(w_in, w_out, held))
        if on_progress:
            on_progress(epoch, done, total_pairs, losses[-1])
    return TrainResult(
        vectors=w_in.cpu().numpy(),
        loss_per_epoch=losses,
        heldout_loss_per_epoch=heldout_losses,
        pairs=done,
        seconds=time.perf_counter() - started,
        device=str(target),
    )


def _tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.tensor(array, dtype=torch.long, device=device)
