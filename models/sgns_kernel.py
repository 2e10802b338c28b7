"""The CPU trainer: SGNS as compiled Hogwild SGD (numba), the way word2vec.c and gensim train.

Pairs are processed in file order, one at a time: a pair's K negatives are drawn inside the
kernel from the noise distribution (an alias table: exact, O(1) a draw), its K+1 scores are
computed from the current vectors, and the exact SGD step of that one pair is applied (the
reference `sgns_step` on a batch of one pair). A block of pairs is cut into contiguous slices;
each thread takes the next free slice and updates the shared matrices without locks
(Hogwild). The learning rate decays linearly with the pair's position among all pairs of all
epochs.

Negatives are counter-based: draw j of pair r of an epoch is `splitmix64(key + (r*K + j + 1) *
GOLDEN)`, with `key` from the run's seed and the epoch, so they do not depend on threads or
block sizes, and `draw_negatives` reproduces them outside the kernel. With one thread the
result is exactly reproducible; with more, the order of the racing updates is not.
"""

from __future__ import annotations

import threading
from typing import Protocol

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from models.skipgram import MIN_LR, Batch, Block, saved_weights

# numba's own thread pool: OpenMP's spinning barriers stall when another process holds a core
# (2-5x slower on a busy 2-core machine). It runs one parallel call at a time: `_LOCK`.
numba.config.THREADING_LAYER = "workqueue"
_LOCK = threading.Lock()
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
CHUNKS_PER_THREAD = 8  # a block is cut in threads x 8 slices, so a slow thread holds no one up


@njit(inline="always")
def _mix(z: np.uint64) -> np.uint64:
    """splitmix64's output function: a 64-bit hash with full avalanche."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(inline="always")
def _draw(prob: np.ndarray, alias: np.ndarray, key: np.uint64, counter: np.int64) -> np.int32:
    """Word of draw number `counter`: the high 32 bits of the hash pick a column of the alias
    table, the low 32 bits accept it (probability `prob`) or take its alias."""
    z = _mix(key + np.uint64(counter + 1) * GOLDEN)
    column = np.int64(((z >> np.uint64(32)) * np.uint64(len(prob))) >> np.uint64(32))
    if np.float64(z & np.uint64(0xFFFFFFFF)) < prob[column] * 4294967296.0:
        return np.int32(column)
    return alias[column]


@njit(cache=True)
def alias_table(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker's alias table of a distribution: column i is word i with probability prob[i],
    else alias[i]; columns are drawn uniformly."""
    n = len(probabilities)
    scaled = probabilities * (n / probabilities.sum())
    prob, alias = np.ones(n), np.arange(n).astype(np.int32)
    small, large = np.empty(n, np.int64), np.empty(n, np.int64)
    n_small = n_large = 0
    for i in range(n):
        if scaled[i] < 1.0:
            small[n_small] = i
            n_small += 1
        else:
            large[n_large] = i
            n_large += 1
    while n_small and n_large:
        n_small -= 1
        n_large -= 1
        s, g = small[n_small], large[n_large]
        prob[s], alias[s] = scaled[s], g
        scaled[g] -= 1.0 - scaled[s]
        if scaled[g] < 1.0:
            small[n_small] = g
            n_small += 1
        else:
            large[n_large] = g
            n_large += 1
    return prob, alias


@njit(cache=True)
def draw_negatives(
    prob: np.ndarray, alias: np.ndarray, key: np.uint64, first: np.int64, n: int, k: int
) -> np.ndarray:
    """The (n, k) negatives of pairs first .. first+n-1, exactly as the kernel draws them."""
    out = np.empty((n, k), dtype=np.int32)
    for r in range(n):
        for j in range(k):
            out[r, j] = _draw(prob, alias, key, (first + r) * k + j)
    return out


@njit(inline="always")
def _dot(a: np.ndarray, b: np.ndarray) -> np.float32:
    f = np.float32(0.0)
    for d in range(len(a)):
        f += a[d] * b[d]
    return f


@njit(inline="always")
def _targets(
    out: np.ndarray,
    context: np.int32,
    prob: np.ndarray,
    alias: np.ndarray,
    key: np.uint64,
    row: np.int64,
    k: int,
) -> None:
    """A pair's context, then its K negatives (-1 where a negative equals the context)."""
    out[0] = context
    for j in range(k):
        negative = _draw(prob, alias, key, row * k + j)
        out[j + 1] = -1 if negative == context else negative


@intrinsic
def _prefetch(typingctx, array, row, column):
    """Ask the CPU to bring array[row, column]'s cache line in (LLVM's prefetch, for write)."""

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, signature.args[0], ary, args[1:])
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(1), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(array, types.intp, types.intp), codegen


@njit(inline="always")
def _prefetch_row(array: np.ndarray, row: np.int32) -> None:
    for column in range(0, array.shape[1], 16):  # 16 float32 = a 64-byte cache line
        _prefetch(array, row, column)


@njit(inline="always")
def _softplus(x: np.float32) -> np.float32:
    """log(1 + exp(x)), without overflow."""
    return max(x, np.float32(0.0)) + np.log1p(np.exp(-abs(x)))


@njit(inline="always")
def _pair_step(
    w_in: np.ndarray,
    w_out: np.ndarray,
    c: np.int32,
    targets: np.ndarray,
    g: np.ndarray,
    neu1e: np.ndarray,
    lr: np.float32,
) -> np.float32:
    """The exact SGD step of one pair, in place; `targets[0]` is the context, the rest its
    negatives (-1 = skipped, as a negative equal to the context is). Returns the pair's loss."""
    dim = w_in.shape[1]
    v = w_in[c]
    loss = np.float32(0.0)
    for j in range(len(targets)):
        t = targets[j]
        if t < 0:
            g[j] = 0.0
            continue
        f = _dot(v, w_out[t])
        e = np.exp(-abs(f))  # sigmoid and log-sigmoid from one exp
        sigmoid = np.float32(1.0) / (np.float32(1.0) + e) if f >= 0 else e / (np.float32(1.0) + e)
        label = np.float32(1.0) if j == 0 else np.float32(0.0)
        g[j] = (label - sigmoid) * lr
        loss += max(-f if j == 0 else f, np.float32(0.0)) + np.log1p(e)
    for d in range(dim):
        neu1e[d] = 0.0
    for j in range(len(targets)):
        if targets[j] >= 0:
            u = w_out[targets[j]]
            for d in range(dim):
                neu1e[d] += g[j] * u[d]
    for j in range(len(targets)):
        if targets[j] >= 0:
            u = w_out[targets[j]]
            for d in range(dim):
                u[d] += g[j] * v[d]
    for d in range(dim):
        v[d] += neu1e[d]
    return loss


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def train_block(
    w_in: np.ndarray,
    w_out: np.ndarray,
    center: np.ndarray,
    context: np.ndarray,
    prob: np.ndarray,
    alias: np.ndarray,
    key: np.uint64,
    first: np.int64,
    done: np.int64,
    total: np.int64,
    lr: float,
    k: int,
    chunks: int,
) -> float:
    """Train on one block of pairs in place, in `chunks` contiguous slices that the threads
    take in turn; `first` is the block's first pair in its epoch (for the negatives), `done`
    among all pairs of all epochs (for the learning rate). Returns the summed loss."""
    n = len(center)
    losses = np.zeros(chunks)
    for t in prange(chunks):
        targets = np.empty((2, k + 1), dtype=np.int32)  # this pair's and the next one's
        g = np.empty(k + 1, dtype=np.float32)
        neu1e = np.empty(w_in.shape[1], dtype=np.float32)
        loss = 0.0
        start, end = n * t // chunks, n * (t + 1) // chunks
        if start < end:
            _targets(targets[0], context[start], prob, alias, key, first + start, k)
        for i in range(start, end):
            if i + 1 < end:  # draw the next pair's targets and start loading their rows
                following = targets[(i + 1 - start) % 2]
                _targets(following, context[i + 1], prob, alias, key, first + i + 1, k)
                _prefetch_row(w_in, center[i + 1])
                for j in range(k + 1):
                    if following[j] >= 0:
                        _prefetch_row(w_out, following[j])
            step_lr = np.float32(lr * max(MIN_LR, 1.0 - (done + i) / total))
            current = targets[(i - start) % 2]
            loss += _pair_step(w_in, w_out, center[i], current, g, neu1e, step_lr)
        losses[t] = loss
    return losses.sum()


@njit(parallel=True, fastmath=True, cache=True)
def loss_sum(
    w_in: np.ndarray,
    w_out: np.ndarray,
    center: np.ndarray,
    context: np.ndarray,
    negatives: np.ndarray,
) -> float:
    """Summed SGNS loss of (center, context, negatives) rows, without updating anything."""
    total = 0.0
    for i in prange(len(center)):
        v, o = w_in[center[i]], context[i]
        pair = _softplus(-_dot(v, w_out[o]))
        for j in range(negatives.shape[1]):
            if negatives[i, j] != o:
                pair += _softplus(_dot(v, w_out[negatives[i, j]]))
        total += pair
    return total


class Noise(Protocol):
    """The noise distribution as the kernel draws from it (tasks.negatives.NegativeSampler)."""

    prob: np.ndarray
    alias: np.ndarray
    k: int

    def key(self, epoch: int) -> np.uint64: ...


class KernelTrainer:
    """Hogwild SGD on the CPU with `threads` threads (0 = all cores); blocks are (centers,
    contexts) in file order. Input vectors start uniform in ±0.5/dim (drawn by `rng`), output
    vectors at zero, as in word2vec."""

    device = "cpu"

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        lr: float,
        total: int,
        noise: Noise,
        rng: np.random.Generator,
        threads: int = 0,
    ) -> None:
        self.w_in = (rng.random((vocab_size, dim), dtype=np.float32) - 0.5) / np.float32(dim)
        self.w_out = np.zeros((vocab_size, dim), dtype=np.float32)
        self.lr, self.total, self.noise = lr, max(total, 1), noise
        self.threads = min(
            threads or numba.config.NUMBA_NUM_THREADS, numba.config.NUMBA_NUM_THREADS
        )

    def train(self, block: Block, epoch: int, first: int, done: int) -> float:
        center, context = block
        numba.set_num_threads(self.threads)
        chunks = 1 if self.threads == 1 else self.threads * CHUNKS_PER_THREAD
        noise = self.noise
        with _LOCK, numba.parallel_chunksize(1):  # a free thread takes the next chunk
            return train_block(
                self.w_in, self.w_out, center, context, noise.prob, noise.alias,
                noise.key(epoch), first, done, self.total, self.lr, noise.k, chunks,
            )  # fmt: skip

    def heldout_loss(self, batch: Batch) -> float:
        with _LOCK:
            return loss_sum(self.w_in, self.w_out, *batch) / max(len(batch[0]), 1)

    def vectors(self) -> np.ndarray:
        return self.w_in

    def state(self) -> dict[str, np.ndarray]:
        return {"w_in": self.w_in, "w_out": self.w_out}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.w_in[:] = saved_weights(state, "w_in", self.w_in.shape)
        self.w_out[:] = saved_weights(state, "w_out", self.w_out.shape)
