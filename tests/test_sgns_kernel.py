"""The compiled CPU kernel against the PyTorch reference step: same groups and negatives, same
learning rate schedule, same arithmetic; its in-kernel negatives follow count^0.75; it learns."""

import numpy as np
import pytest
import torch

from models.sgns_kernel import (
    MAX_GROUP,
    NEG_LOG_SIGMOID,
    SCORE_LIMIT,
    SIGMOID,
    KernelTrainer,
    _interpolate,
    alias_table,
    loss_sum,
    train_block,
)
from models.skipgram import MIN_LR, train_sgns
from models.skipgram_torch import mean_loss, sgns_step
from tasks.negatives import NegativeSampler, noise_distribution
from tests.data import heldout_problem, heldout_reference, resumes_identically, toy_epochs


def small_problem(vocab: int = 12, dim: int = 6, pairs: int = 40, seed: int = 0, k: int = 4):
    rng = np.random.default_rng(seed)
    w_in = rng.normal(0, 0.3, (vocab, dim)).astype(np.float32)
    w_out = rng.normal(0, 0.3, (vocab, dim)).astype(np.float32)
    center = rng.integers(0, vocab, pairs).astype(np.int32)
    context = rng.integers(0, vocab, pairs).astype(np.int32)
    sampler = NegativeSampler(noise_distribution(rng.integers(1, 50, vocab)), k=k, seed=3)
    return w_in, w_out, center, context, sampler


def runs(center: np.ndarray, longest: int) -> list[tuple[int, int]]:
    """(start, stop) of each run of one center, runs longer than `longest` cut."""
    bounds, start = [], 0
    for i in range(1, len(center) + 1):
        if i == len(center) or center[i] != center[start] or i - start == longest:
            bounds.append((start, i))
            start = i
    return bounds


@pytest.mark.parametrize("k", [1, 4, 5])  # targets 2, 5, 6: the step takes them 3 at a time
def test_kernel_step_is_the_reference_step_group_by_group(k: int) -> None:
    """Each run of one center is one reference step on its pairs, the context's input vector
    against the center's and the run's shared negatives' output vectors."""
    w_in, w_out, _, context, sampler = small_problem(pairs=120, k=k)
    lengths = [1, 3, 10, 2, MAX_GROUP + 5, 1, 7, 4, 1, 3, 6, 2, 3, 1, 6, 2, 10, 16]
    center = np.repeat(np.arange(len(lengths)) % 12, lengths).astype(np.int32)[:120]
    epoch, first, done, total, lr = 2, 7, 30, 300, 0.5
    groups = runs(center, MAX_GROUP)
    assert MAX_GROUP in {stop - start for start, stop in groups}  # a cut run
    shared = [sampler.draw(epoch, first + start, 1)[0] for start, _ in groups]
    skipped = [(row == center[start]).any() for row, (start, _) in zip(shared, groups, strict=True)]
    assert any(skipped)  # a negative equal to the center
    t_in, t_out = torch.tensor(w_in), torch.tensor(w_out)
    expected_loss = 0.0
    for (start, stop), negatives in zip(groups, shared, strict=True):
        step_lr = lr * max(MIN_LR, 1 - (done + start) / total)  # linear decay, floored
        expected_loss += float(
            sgns_step(
                t_in,
                t_out,
                torch.tensor(context[start:stop], dtype=torch.long),
                torch.tensor(center[start:stop], dtype=torch.long),
                torch.tensor(np.tile(negatives, (stop - start, 1)), dtype=torch.long),
                step_lr,
            )
        )
    loss = train_block(
        w_in, w_out, center, context, sampler.prob, sampler.alias, sampler.key(epoch),
        first, done, total, lr, sampler.k, 1,
    )  # fmt: skip
    assert np.isclose(loss, expected_loss, rtol=1e-5)
    assert np.allclose(w_in, t_in.numpy(), atol=1e-5)
    assert np.allclose(w_out, t_out.numpy(), atol=1e-5)


def test_kernel_loss_is_the_reference_loss() -> None:
    w_in, w_out, center, context, sampler = small_problem(pairs=500)
    negatives = sampler.heldout(len(center))
    batch = tuple(torch.tensor(a, dtype=torch.long) for a in (center, context, negatives))
    expected = mean_loss(torch.tensor(w_in), torch.tensor(w_out), batch)
    assert np.isclose(loss_sum(w_in, w_out, center, context, negatives) / 500, expected)


def test_alias_table_is_exactly_the_distribution() -> None:
    p = noise_distribution(np.random.default_rng(1).zipf(1.5, 300))
    prob, alias = alias_table(p)
    rebuilt = prob.copy()
    np.add.at(rebuilt, alias, 1 - prob)
    assert np.allclose(rebuilt / len(p), p, rtol=1e-9, atol=1e-15)


def test_negatives_drawn_in_the_kernel_follow_count_to_the_three_quarters() -> None:
    counts = np.random.default_rng(2).zipf(1.3, 40)
    p = counts**0.75 / (counts**0.75).sum()
    sampler = NegativeSampler(noise_distribution(counts), k=5, seed=11)
    draws = sampler.draw(0, 0, 400_000)  # the kernel's own draw function, rows 0..
    observed = np.bincount(draws.ravel(), minlength=len(p)) / draws.size
    sigma = np.sqrt(p * (1 - p) / draws.size)
    assert np.all(np.abs(observed - p) < 5 * sigma + 1e-9), (observed, p)


def kernel_trainer(threads: int, vocab: int = 100) -> KernelTrainer:
    sampler = NegativeSampler(np.full(vocab, 1 / vocab), k=5, seed=1)
    return KernelTrainer(vocab, 16, 0.025, 120_000, sampler, np.random.default_rng(1), threads)


def test_kernel_learns_groups_and_one_thread_is_reproducible() -> None:
    held = next(toy_epochs(100, 8_192, 2_000)(99))
    heldout = (*held, NegativeSampler(np.full(100, 0.01), 5, 1).heldout(len(held[0])))
    result = train_sgns(kernel_trainer(1), toy_epochs(100, 8_192), 3, 120_000, heldout=heldout)
    assert result.loss_per_epoch[-1] < result.loss_per_epoch[0] - 0.5
    assert result.heldout_loss_per_epoch[-1] < result.heldout_loss_per_epoch[0]
    v = result.vectors / np.linalg.norm(result.vectors, axis=1, keepdims=True)
    similarity = v @ v.T
    assert similarity[0, 1:50].mean() > similarity[0, 50:].mean() + 0.5
    again = train_sgns(kernel_trainer(1), toy_epochs(100, 8_192), 3, 120_000)
    assert np.array_equal(result.vectors, again.vectors)


def test_kernel_learns_with_two_threads() -> None:
    result = train_sgns(kernel_trainer(2), toy_epochs(100, 8_192), 3, 120_000)
    assert result.loss_per_epoch[-1] < result.loss_per_epoch[0] - 0.5
    v = result.vectors / np.linalg.norm(result.vectors, axis=1, keepdims=True)
    assert (v @ v.T)[0, 1:50].mean() > (v @ v.T)[0, 50:].mean() + 0.5


def test_one_thread_resumed_from_any_checkpoint_ends_identical() -> None:
    resumes_identically(lambda: kernel_trainer(1), toy_epochs(100, 8_192), [0, 4, 5, 9])


def test_the_sigmoid_tables_are_exact_to_a_few_millionths() -> None:
    x = np.linspace(-SCORE_LIMIT + 1e-3, SCORE_LIMIT - 1e-3, 100_001).astype(np.float32)
    exact = x.astype(np.float64)
    for table, function in (
        (SIGMOID, 1 / (1 + np.exp(-exact))),
        (NEG_LOG_SIGMOID, np.logaddexp(0, -exact)),
    ):
        interpolated = np.array([_interpolate(table, v) for v in x])
        assert (np.abs(interpolated - function) / np.maximum(function, 1)).max() < 3e-6


def test_kernel_heldout_loss_is_the_loss_of_the_context_predicting_the_center() -> None:
    """KernelTrainer.heldout_loss against the loss computed from the weights in float64."""
    trainer = kernel_trainer(1, vocab=30)
    w_in, w_out, batch = heldout_problem(*trainer.w_in.shape)
    trainer.load_state({"w_in": w_in, "w_out": w_out})
    expected = heldout_reference(w_in, w_out, batch)
    assert trainer.heldout_loss(batch) == pytest.approx(expected, rel=1e-5)
    center, context, negatives = batch
    swapped = heldout_reference(w_in, w_out, (context, center, negatives))
    assert abs(swapped - expected) > 0.05  # the directions differ
