"""The CPU trainer: SGNS as compiled Hogwild SGD (numba), with the pairs of one center trained
as one small batch against shared negatives (pWord2Vec's "HogBatch", Ji et al. 2016).

The pairs files hold each center's contexts in a run; such a run (a *group*, cut at MAX_GROUP
pairs) takes one exact SGD step: the input vectors of its contexts against the output vectors
of the center and of K negatives drawn once for the group, every score from the vectors before
the step (the reference `sgns_step` on that batch). As in word2vec.c, the context's input
vector predicts the center; each pair still meets its K negatives, and the center's and the
negatives' output rows are loaded once a group instead of once a pair. A block of pairs is cut
into contiguous slices; each thread takes the next free slice and updates the shared matrices
without locks (Hogwild). The learning rate decays linearly with the group's first pair's
position among all pairs of all epochs.

Negatives are counter-based: draw j of pair r of an epoch is `splitmix64(key + (r*K + j + 1) *
GOLDEN)`, with `key` from the run's seed and the epoch; a group takes its first pair's draws.
They do not depend on threads, and `draw_negatives` reproduces them outside the kernel. With
one thread the result is exactly reproducible; with more, the order of the racing updates is not.
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

# numba's own thread pool: OpenMP's spinning barriers stall when another process holds a
# core. It runs one parallel call at a time: `_LOCK`.
numba.config.THREADING_LAYER = "workqueue"
_LOCK = threading.Lock()
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
CHUNKS_PER_THREAD = 8  # a block is cut in threads x 8 slices, so a slow thread holds no one up
MAX_GROUP = 32  # a longer run of one center is cut into several groups
# sigmoid(x) and softplus(-x) = -log sigmoid(x) as tables, linearly interpolated; beyond ±16
# the sigmoid is 0 or 1 to float32 precision
SCORE_LIMIT, TABLE_STEPS = 16.0, 4096
_GRID = np.linspace(-SCORE_LIMIT, SCORE_LIMIT, TABLE_STEPS + 1)
SIGMOID = (1 / (1 + np.exp(-_GRID))).astype(np.float32)
NEG_LOG_SIGMOID = np.logaddexp(0, -_GRID).astype(np.float32)


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
def _dot(a: np.ndarray, i: np.int32, b: np.ndarray, j: np.int32) -> np.float32:
    """a[i] · b[j], indexed in place (a row view costs a reference count each time)."""
    f = np.float32(0.0)
    for d in range(a.shape[1]):
        f += a[i, d] * b[j, d]
    return f


@njit(inline="always")
def _interpolate(table: np.ndarray, x: np.float32) -> np.float32:
    """`table` (on the grid of SCORE_LIMIT, TABLE_STEPS) at x in (-SCORE_LIMIT, SCORE_LIMIT)."""
    at = (x + np.float32(SCORE_LIMIT)) * np.float32(TABLE_STEPS / (2 * SCORE_LIMIT))
    n = np.int64(at)
    return table[n] + (at - np.float32(n)) * (table[n + 1] - table[n])


@njit(inline="always")
def _group_end(center: np.ndarray, start: int, end: int) -> int:
    """The end of the group that starts at `start`: the run of pairs with its center, at most
    MAX_GROUP long and within [start, end)."""
    stop = min(end, start + MAX_GROUP)
    i = start + 1
    while i < stop and center[i] == center[start]:
        i += 1
    return i


@njit(inline="always")
def _targets(
    out: np.ndarray,
    center: np.int32,
    prob: np.ndarray,
    alias: np.ndarray,
    key: np.uint64,
    row: np.int64,
    k: int,
) -> None:
    """A group's center, then its K shared negatives: the draws of the group's first pair
    `row` (a negative equal to the center is skipped by the step)."""
    out[0] = center
    for j in range(k):
        out[j + 1] = _draw(prob, alias, key, row * k + j)


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
def _scores(
    w_in: np.ndarray, c: np.int32, w_out: np.ndarray, targets: np.ndarray, g: np.ndarray, i: int
) -> None:
    """g[i, j] = w_in[c] · w_out[targets[j]] for every j, three targets a pass over w_in[c]
    (a pass per target would load w_in[c] each time)."""
    dim, k1 = w_in.shape[1], len(targets)
    j = 0
    while j + 2 < k1:
        t0, t1, t2 = targets[j], targets[j + 1], targets[j + 2]
        s0 = s1 = s2 = np.float32(0.0)
        for d in range(dim):
            x = w_in[c, d]
            s0 += x * w_out[t0, d]
            s1 += x * w_out[t1, d]
            s2 += x * w_out[t2, d]
        g[i, j], g[i, j + 1], g[i, j + 2] = s0, s1, s2
        j += 3
    while j < k1:
        g[i, j] = _dot(w_in, c, w_out, targets[j])
        j += 1


@njit(inline="always")
def _scores_two(
    w_in: np.ndarray,
    c0: np.int32,
    c1: np.int32,
    w_out: np.ndarray,
    targets: np.ndarray,
    g: np.ndarray,
    i: int,
) -> None:
    """_scores of two contexts (rows i and i + 1 of g) in one pass: each output row is
    loaded once for both."""
    dim, k1 = w_in.shape[1], len(targets)
    j = 0
    while j + 2 < k1:
        t0, t1, t2 = targets[j], targets[j + 1], targets[j + 2]
        s00 = s01 = s02 = s10 = s11 = s12 = np.float32(0.0)
        for d in range(dim):
            x0, x1 = w_in[c0, d], w_in[c1, d]
            y0, y1, y2 = w_out[t0, d], w_out[t1, d], w_out[t2, d]
            s00 += x0 * y0
            s01 += x0 * y1
            s02 += x0 * y2
            s10 += x1 * y0
            s11 += x1 * y1
            s12 += x1 * y2
        g[i, j], g[i, j + 1], g[i, j + 2] = s00, s01, s02
        g[i + 1, j], g[i + 1, j + 1], g[i + 1, j + 2] = s10, s11, s12
        j += 3
    while j < k1:
        g[i, j] = _dot(w_in, c0, w_out, targets[j])
        g[i + 1, j] = _dot(w_in, c1, w_out, targets[j])
        j += 1


@njit(inline="always")
def _add_targets(
    w_in: np.ndarray, c: np.int32, w_out: np.ndarray, targets: np.ndarray, g: np.ndarray, i: int
) -> None:
    """w_in[c] += Σ_j g[i, j] w_out[targets[j]], three targets a pass (one load and one store
    of w_in[c] for three rows added)."""
    dim, k1 = w_in.shape[1], len(targets)
    j = 0
    while j + 2 < k1:
        t0, t1, t2 = targets[j], targets[j + 1], targets[j + 2]
        a0, a1, a2 = g[i, j], g[i, j + 1], g[i, j + 2]
        for d in range(dim):
            w_in[c, d] += a0 * w_out[t0, d] + a1 * w_out[t1, d] + a2 * w_out[t2, d]
        j += 3
    while j < k1:
        t0, a0 = targets[j], g[i, j]
        for d in range(dim):
            w_in[c, d] += a0 * w_out[t0, d]
        j += 1


@njit(inline="always")
def _gather_contexts(
    d_out: np.ndarray, j: int, w_in: np.ndarray, contexts: np.ndarray, g: np.ndarray
) -> None:
    """d_out[j] = Σ_i g[i, j] w_in[contexts[i]], four contexts a pass over d_out[j]."""
    dim, n = w_in.shape[1], len(contexts)
    for d in range(dim):
        d_out[j, d] = 0.0
    i = 0
    while i + 3 < n:
        c0, c1, c2, c3 = contexts[i], contexts[i + 1], contexts[i + 2], contexts[i + 3]
        a0, a1, a2, a3 = g[i, j], g[i + 1, j], g[i + 2, j], g[i + 3, j]
        for d in range(dim):
            d_out[j, d] += a0 * w_in[c0, d] + a1 * w_in[c1, d] + a2 * w_in[c2, d] + a3 * w_in[c3, d]
        i += 4
    while i < n:
        c0, a0 = contexts[i], g[i, j]
        for d in range(dim):
            d_out[j, d] += a0 * w_in[c0, d]
        i += 1


@njit(inline="always")
def _group_step(
    w_in: np.ndarray,
    w_out: np.ndarray,
    contexts: np.ndarray,
    targets: np.ndarray,
    g: np.ndarray,
    d_out: np.ndarray,
    lr: np.float32,
) -> np.float32:
    """The exact SGD step of one group, in place: every context's input vector against the
    output vectors of `targets` (the center, then the shared negatives; a negative equal to
    the center is skipped), all scores from the vectors before the step. Returns the group's
    summed loss. The rows are combined a few at a time (register tiling: two contexts by three
    targets for the scores): each pass over a vector loads and stores it once for several
    rows, as the loads and stores bound the step."""
    n, k1 = len(contexts), len(targets)
    limit = np.float32(SCORE_LIMIT)
    loss = np.float32(0.0)
    for i in range(0, n - 1, 2):
        _scores_two(w_in, contexts[i], contexts[i + 1], w_out, targets, g, i)
    if n % 2:
        _scores(w_in, contexts[n - 1], w_out, targets, g, n - 1)
    for i in range(n):
        for j in range(k1):
            x = g[i, j] if j == 0 else -g[i, j]  # the label's side: log sigmoid(x) is the fit
            g[i, j] = 0.0
            if j > 0 and targets[j] == targets[0]:
                continue
            if x <= -limit:
                g[i, j], loss = (lr if j == 0 else -lr), loss - x
            elif x < limit:
                miss = (np.float32(1.0) - _interpolate(SIGMOID, x)) * lr
                g[i, j] = miss if j == 0 else -miss
                loss += _interpolate(NEG_LOG_SIGMOID, x)
    for j in range(k1):
        _gather_contexts(d_out, j, w_in, contexts, g)
    for i in range(n):
        _add_targets(w_in, contexts[i], w_out, targets, g, i)
    for j in range(k1):
        t = targets[j]  # read once: a row index read in the loop would block its vectorizing
        if j == 0 or t != targets[0]:
            for d in range(w_in.shape[1]):
                w_out[t, d] += d_out[j, d]
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
        targets = np.empty((2, k + 1), dtype=np.int32)  # this group's and the next one's
        g = np.empty((MAX_GROUP, k + 1), dtype=np.float32)
        d_out = np.empty((k + 1, w_in.shape[1]), dtype=np.float32)
        loss = 0.0
        start, end = n * t // chunks, n * (t + 1) // chunks
        i = start
        following = _group_end(center, i, end) if i < end else end
        if start < end:
            _targets(targets[0], center[start], prob, alias, key, first + start, k)
        slot = 0
        while i < end:
            stop = following
            if stop < end:  # draw the next group's targets and start loading their rows
                following = _group_end(center, stop, end)
                _targets(targets[1 - slot], center[stop], prob, alias, key, first + stop, k)
                for j in range(k + 1):
                    _prefetch_row(w_out, targets[1 - slot, j])
                for c in range(stop, following):
                    _prefetch_row(w_in, context[c])
            step_lr = np.float32(lr * max(MIN_LR, 1.0 - (done + i) / total))
            loss += _group_step(w_in, w_out, context[i:stop], targets[slot], g, d_out, step_lr)
            i, slot = stop, 1 - slot
        losses[t] = loss
    return losses.sum()


@njit(parallel=True, fastmath=True, cache=True)
def loss_sum(
    w_in: np.ndarray,
    w_out: np.ndarray,
    inputs: np.ndarray,
    outputs: np.ndarray,
    negatives: np.ndarray,
) -> float:
    """Summed SGNS loss of rows (input word, output word, negatives), without updating
    anything; a negative equal to the output word is skipped."""
    total = 0.0
    for i in prange(len(inputs)):
        o = outputs[i]
        pair = _softplus(-_dot(w_in, inputs[i], w_out, o))
        for j in range(negatives.shape[1]):
            if negatives[i, j] != o:
                pair += _softplus(_dot(w_in, inputs[i], w_out, negatives[i, j]))
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
        """Mean loss of (center, context, negatives) rows as trained: context predicts center."""
        center, context, negatives = batch
        with _LOCK:
            return loss_sum(self.w_in, self.w_out, context, center, negatives) / max(len(center), 1)

    def vectors(self) -> np.ndarray:
        return self.w_in

    def state(self) -> dict[str, np.ndarray]:
        return {"w_in": self.w_in, "w_out": self.w_out}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.w_in[:] = saved_weights(state, "w_in", self.w_in.shape)
        self.w_out[:] = saved_weights(state, "w_out", self.w_out.shape)
