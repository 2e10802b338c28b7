"""SGNS in PyTorch: the batched reference step, and the trainer used on CUDA.

The update is the reference one, batched: for a batch of (center, context, K negatives) the
scores u·v go through a sigmoid, g = (label - sigmoid) * lr, and the rows of both embedding
matrices are moved by g times the other side, accumulated with `index_add_`. No autograd:
the gradient is written out (tests check it against autograd).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from models.skipgram import MIN_LR, Batch, Block, saved_weights


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


class TorchTrainer:
    """Batched SGD on `device`: each block is (centers, contexts, negatives), already
    shuffled and cut into batches (tasks.train.pair_batches). The learning rate decays
    linearly from `lr` to `lr * MIN_LR` over `total` pairs, per batch."""

    def __init__(
        self, vocab_size: int, dim: int, lr: float, total: int, seed: int, device: str, threads: int
    ) -> None:
        if device == "cpu" and threads:
            torch.set_num_threads(threads)
        self.device = device
        self.lr, self.total = lr, max(total, 1)
        self.w_in, self.w_out = (w.to(device) for w in init_embeddings(vocab_size, dim, seed))

    def train(self, block: Block, epoch: int, first: int, done: int) -> float:
        lr = self.lr * max(MIN_LR, 1 - done / self.total)
        batch = (_tensor(a, self.device) for a in block)
        return float(sgns_step(self.w_in, self.w_out, *batch, lr))

    def heldout_loss(self, batch: Batch) -> float:
        return mean_loss(self.w_in, self.w_out, tuple(_tensor(a, self.device) for a in batch))

    def vectors(self) -> np.ndarray:
        return self.w_in.cpu().numpy()

    def state(self) -> dict[str, np.ndarray]:
        return {"w_in": self.w_in.cpu().numpy(), "w_out": self.w_out.cpu().numpy()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        for name, weights in (("w_in", self.w_in), ("w_out", self.w_out)):
            weights.copy_(torch.from_numpy(saved_weights(state, name, tuple(weights.shape))))


def _tensor(array: np.ndarray, device: str) -> torch.Tensor:
    return torch.tensor(array, dtype=torch.long, device=device)
