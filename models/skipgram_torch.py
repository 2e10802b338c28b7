"""SGNS in PyTorch: the reference step, and the batched trainer of CUDA (and of `device=torch`,
the same code on the CPU).

`sgns_step` is the reference: a batch of (center, context, K negatives), scores u·v through a
sigmoid, g = (label - sigmoid) * lr, both embedding matrices moved by g times the other side
(`index_add_`). No autograd: the gradient is written out (tests check it against autograd, and
the CPU kernel against this step).

`TorchTrainer` keeps the host out of the device's way. A block of (center, context) pairs goes
to the device in one copy; there a generator seeded with the block (seed, epoch, first row)
shuffles it and draws its negatives from the alias table. As in word2vec.c and the CPU kernel,
a pair's context is the input word and its center the output word; each tile of `tile`
consecutive pairs shares K negatives, so that their scores and gradients are batched matrix
products (`tiled_step`; a tile of one pair is `sgns_step`). The batches' learning rates come
from counters on the host, one small copy a block; the loss is summed on the device and read
once a block. On CUDA a block's batches are one captured CUDA graph, replayed, so that the host
launches no kernel per batch.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from models.skipgram import MIN_LR, Batch, Block, saved_weights

TILE = 16  # pairs sharing K negatives
BLOCK_ROWS = 1 << 20  # pairs a block: one copy to the device, one wait for it


class DeviceNoise(Protocol):
    """The noise distribution as the device draws from it (tasks.negatives.NegativeSampler)."""

    prob: np.ndarray
    alias: np.ndarray
    k: int

    def block_seed(self, epoch: int, first: int) -> int: ...


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


def tiled_step(
    w_in: torch.Tensor,
    w_out: torch.Tensor,
    inputs: torch.Tensor,
    outputs: torch.Tensor,
    negatives: torch.Tensor,
    lr: float | torch.Tensor,
) -> torch.Tensor:
    """One SGD step, in place, on tiles of pairs: the input words' vectors (w_in) predict the
    output words' (w_out) against K negatives; `inputs` and `outputs` are (n, T), the T pairs
    of a tile sharing its K `negatives` (n, K). Returns the summed loss (before the step).
    With T = 1 it is `sgns_step` (center = input, context = output)."""
    dim = w_in.shape[1]
    v = w_in[inputs]  # (n, T, d)
    u = w_out[outputs]  # (n, T, d)
    noise = w_out[negatives]  # (n, K, d)
    positive = torch.linalg.vecdot(u, v)  # (n, T)
    scores = torch.bmm(v, noise.transpose(1, 2))  # (n, T, K)
    keep = (negatives.unsqueeze(1) != outputs.unsqueeze(2)).to(v.dtype)  # (n, T, K)
    loss = -(F.logsigmoid(positive).sum() + (F.logsigmoid(-scores) * keep).sum())
    g = torch.sigmoid(-positive).mul_(lr).unsqueeze(2)  # (label 1 - sigmoid) * lr: (n, T, 1)
    g_noise = torch.sigmoid(scores).mul_(keep).mul_(lr).neg_()  # (0 - sigmoid) * lr: (n, T, K)
    grad_v = torch.baddbmm(g * u, g_noise, noise)  # (n, T, d)
    w_out.index_add_(0, outputs.reshape(-1), (g * v).view(-1, dim))
    w_out.index_add_(0, negatives.reshape(-1), torch.bmm(g_noise.transpose(1, 2), v).view(-1, dim))
    w_in.index_add_(0, inputs.reshape(-1), grad_v.view(-1, dim))
    return loss


def steps(n: int, tile: int, batch: int) -> list[tuple[int, int]]:
    """The SGD steps of a block of n pairs, as row ranges: batches of `batch` pairs (whole
    tiles), then the pairs left over, fewer than a tile, as one tile."""
    whole = n // tile * tile
    ranges = [(begin, min(begin + batch, whole)) for begin in range(0, whole, batch)]
    return [*ranges, (whole, n)] if whole < n else ranges


def train_rows(
    w_in: torch.Tensor,
    w_out: torch.Tensor,
    pairs: torch.Tensor,
    negatives: torch.Tensor,
    lrs: torch.Tensor,
    tile: int,
    batch: int,
) -> torch.Tensor:
    """SGD on one block's shuffled pairs (2, n): input words, output words; step after step
    (`steps`): step i with the learning rate lrs[i], tile j of the block with negatives[j].
    Returns the summed loss, on the device."""
    inputs, outputs = pairs
    loss = torch.zeros((), device=w_in.device)
    for i, (begin, end) in enumerate(steps(len(inputs), tile, batch)):
        width = min(tile, end - begin)
        rows = slice(begin, end)
        tiles = negatives[begin // tile : begin // tile + (end - begin) // width]
        step = inputs[rows].view(-1, width), outputs[rows].view(-1, width), tiles, lrs[i]
        loss += tiled_step(w_in, w_out, *step)
    return loss


def draw_noise(
    prob: torch.Tensor, alias: torch.Tensor, shape: tuple[int, ...], generator: torch.Generator
) -> torch.Tensor:
    """Words drawn from a Walker alias table (`prob`, `alias`) on its device: a uniform
    column, kept with its probability, else its alias."""
    column = torch.randint(
        len(prob), shape, generator=generator, device=prob.device, dtype=torch.int32
    )
    keep = torch.rand(shape, generator=generator, device=prob.device) < prob[column]
    return torch.where(keep, column, alias[column])


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


def host_blocks(blocks: Iterable[Block], rows: int, pin: bool) -> Iterator[Block]:
    """The pairs of `blocks` (centers, contexts) regrouped in blocks of `rows` pairs (the last
    one shorter), each one (n, 2) int32 tensor of rows (center, context), in pinned memory
    when `pin`: what `TorchTrainer.train` takes and copies to the device at once."""
    staged, filled = torch.empty((rows, 2), dtype=torch.int32, pin_memory=pin), 0
    for center, context in blocks:
        start = 0
        while start < len(center):
            take = min(rows - filled, len(center) - start)
            view = staged.numpy()[filled : filled + take]
            view[:, 0], view[:, 1] = center[start : start + take], context[start : start + take]
            filled, start = filled + take, start + take
            if filled == rows:
                yield (staged,)
                staged, filled = torch.empty((rows, 2), dtype=torch.int32, pin_memory=pin), 0
    if filled:
        yield (staged[:filled],)


class TorchTrainer:
    """Batched SGD on `device` (a CUDA device, or "cpu"): blocks are `host_blocks` of
    `block_rows` pairs in file order, shuffled on the device and cut into batches of
    `batch_size` pairs (whole tiles of `tile` pairs); as in word2vec.c and the CPU kernel, a
    pair's context is the input word and its center the output word. The learning rate decays
    linearly from `lr` to `lr * MIN_LR` over `total` pairs, per batch. On CUDA, index_add_'s
    atomic additions make two runs differ in their last bits."""

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        lr: float,
        total: int,
        noise: DeviceNoise,
        seed: int,
        device: str,
        threads: int = 0,
        batch_size: int = 4096,
        tile: int = TILE,
        block_rows: int = BLOCK_ROWS,
    ) -> None:
        if device == "cpu" and threads:
            torch.set_num_threads(threads)
        self.device = "torch" if device == "cpu" else device  # the trainer's name in reports
        self.on = torch.device(device)
        self.lr, self.total = lr, max(total, 1)
        self.w_in, self.w_out = (w.to(self.on) for w in init_embeddings(vocab_size, dim, seed))
        self.noise = noise
        self.prob = torch.from_numpy(noise.prob).to(self.on, torch.float32)
        self.alias = torch.from_numpy(noise.alias).to(self.on, torch.int32)
        self.generator = torch.Generator(self.on)
        self.tile = min(tile, batch_size)
        self.batch = batch_size // self.tile * self.tile
        self.block_rows = block_rows
        self.cuda = self.on.type == "cuda"
        self.graph: tuple[torch.cuda.CUDAGraph, tuple[torch.Tensor, ...], torch.Tensor] | None
        self.graph = None
        self.seconds = {"waiting": 0.0, "queueing": 0.0, "device": 0.0}
        self.idle_since: float | None = None

    def train(self, block: Block, epoch: int, first: int, done: int) -> float:
        started = time.perf_counter()
        if self.idle_since is not None:
            self.seconds["waiting"] += started - self.idle_since
        rows = block[0].to(self.on, non_blocking=True)
        n = len(rows)
        starts = np.array([begin for begin, _ in steps(n, self.tile, self.batch)])
        lrs = torch.from_numpy(
            (self.lr * np.maximum(MIN_LR, 1 - (done + starts) / self.total)).astype(np.float32)
        )
        lrs = (lrs.pin_memory() if self.cuda else lrs).to(self.on, non_blocking=True)
        generator = self.generator.manual_seed(self.noise.block_seed(epoch, first))
        order = torch.randperm(n, generator=generator, device=self.on)
        pairs = rows[order].T.flip(0).contiguous()  # the context predicts the center
        shape = (-(-n // self.tile), self.noise.k)
        negatives = draw_noise(self.prob, self.alias, shape, generator)
        if self.cuda and n == self.block_rows:
            graph, inputs, loss = self.graph = self.graph or self._capture(n)
            for static, value in zip(inputs, (pairs, negatives, lrs), strict=True):
                static.copy_(value)
            graph.replay()
        else:
            loss = train_rows(self.w_in, self.w_out, pairs, negatives, lrs, self.tile, self.batch)
        queued = time.perf_counter()
        total = float(loss)  # the block's one wait for the device
        self.idle_since = time.perf_counter()
        self.seconds["queueing"] += queued - started
        self.seconds["device"] += self.idle_since - started
        return total

    def _capture(
        self, n: int
    ) -> tuple[torch.cuda.CUDAGraph, tuple[torch.Tensor, ...], torch.Tensor]:
        """`train_rows` on blocks of n pairs as a CUDA graph, its inputs (pairs, negatives,
        learning rates, to be filled before each replay) and its loss."""
        vocab = len(self.w_in)
        inputs = (
            (torch.arange(2 * n, device=self.on) % vocab).to(torch.int32).view(2, n),
            torch.zeros((-(-n // self.tile), self.noise.k), dtype=torch.int32, device=self.on),
            torch.zeros(len(steps(n, self.tile, self.batch)), device=self.on),
        )
        side = torch.cuda.Stream(self.on)
        side.wait_stream(torch.cuda.current_stream(self.on))
        with torch.cuda.stream(side):  # warm-up (libraries, allocator) on copies of the weights
            train_rows(self.w_in.clone(), self.w_out.clone(), *inputs, self.tile, self.batch)
        torch.cuda.current_stream(self.on).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            loss = train_rows(self.w_in, self.w_out, *inputs, self.tile, self.batch)
        return graph, inputs, loss

    def heldout_loss(self, batch: Batch) -> float:
        """Mean loss of (center, context, negatives) rows as trained: context predicts center."""
        started = time.perf_counter()
        center, context, negatives = (
            torch.tensor(a, dtype=torch.long, device=self.on) for a in batch
        )
        loss = mean_loss(self.w_in, self.w_out, (context, center, negatives))
        self.idle_since = time.perf_counter()
        self.seconds["device"] += self.idle_since - started
        return loss

    def measurements(self) -> dict[str, float]:
        """Seconds waiting between blocks (for the next one from the host; checkpoints),
        queueing the device's work, and from a block's start to its loss read (the device's
        work, or the queueing when the host is slower); on CUDA the peak memory allocated
        (MiB)."""
        measured = {f"{name}_seconds": round(s, 3) for name, s in self.seconds.items()}
        if self.cuda:
            measured["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(self.on) / 2**20)
        return measured

    def vectors(self) -> np.ndarray:
        return self.w_in.cpu().numpy()

    def state(self) -> dict[str, np.ndarray]:
        return {"w_in": self.w_in.cpu().numpy(), "w_out": self.w_out.cpu().numpy()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        for name, weights in (("w_in", self.w_in), ("w_out", self.w_out)):
            weights.copy_(torch.from_numpy(saved_weights(state, name, tuple(weights.shape))))
