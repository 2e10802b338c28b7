import numpy as np
import pytest
import torch

from models.skipgram import Batch, Block, train_sgns
from models.skipgram_torch import (
    TorchTrainer,
    draw_noise,
    host_blocks,
    init_embeddings,
    sgns_step,
    steps,
    tiled_step,
)
from quijote.errors import QuijoteError
from tasks.negatives import NegativeSampler
from tests.data import (
    heldout_problem,
    heldout_reference,
    resumes_identically,
    sgns_loss,
    toy_epochs,
)


def test_update_is_minus_lr_times_the_autograd_gradient() -> None:
    torch.manual_seed(0)
    w_in, w_out = torch.randn(7, 4) * 0.3, torch.randn(7, 4) * 0.3
    center = torch.tensor([0, 1, 1, 2, 6])  # repeated ids accumulate
    context = torch.tensor([3, 2, 4, 4, 5])
    negatives = torch.tensor([[4, 5], [2, 0], [6, 6], [4, 3], [1, 2]])  # some equal the context
    a_in, a_out = w_in.clone().requires_grad_(), w_out.clone().requires_grad_()
    expected_loss = sgns_loss(a_in, a_out, center, context, negatives)
    expected_loss.backward()
    lr = 0.5
    loss = sgns_step(w_in, w_out, center, context, negatives, lr)
    assert torch.allclose(loss, expected_loss.detach())
    assert torch.allclose(w_in, a_in.detach() - lr * a_in.grad, atol=1e-6)
    assert torch.allclose(w_out, a_out.detach() - lr * a_out.grad, atol=1e-6)


def test_tiled_step_is_minus_lr_times_the_autograd_gradient() -> None:
    """Tiles of 4 pairs sharing 3 negatives: the loss of each pair against its tile's
    negatives, and the step against autograd."""
    generator = torch.Generator().manual_seed(1)
    w_in, w_out = torch.randn(9, 5, generator=generator) * 0.3, torch.randn(9, 5) * 0.3
    center = torch.randint(9, (3, 4), generator=generator)  # ids repeat within and across tiles
    context = torch.randint(9, (3, 4), generator=generator)
    negatives = torch.randint(9, (3, 3), generator=generator)
    negatives[0, 1] = context[0, 2]  # a shared negative that is one pair's context
    a_in, a_out = w_in.clone().requires_grad_(), w_out.clone().requires_grad_()
    per_pair = negatives.repeat_interleave(4, dim=0)  # each pair meets its tile's negatives
    expected = sgns_loss(a_in, a_out, center.reshape(-1), context.reshape(-1), per_pair)
    expected.backward()
    lr = 0.3
    loss = tiled_step(w_in, w_out, center, context, negatives, torch.tensor(lr))
    assert torch.allclose(loss, expected.detach())
    assert torch.allclose(w_in, a_in.detach() - lr * a_in.grad, atol=1e-6)
    assert torch.allclose(w_out, a_out.detach() - lr * a_out.grad, atol=1e-6)


def test_a_tile_of_one_pair_is_the_reference_step() -> None:
    generator = torch.Generator().manual_seed(2)
    w_in, w_out = torch.randn(50, 8, generator=generator), torch.randn(50, 8, generator=generator)
    center, context = torch.randint(50, (2, 300), generator=generator)
    negatives = torch.randint(50, (300, 5), generator=generator)
    ref_in, ref_out = w_in.clone(), w_out.clone()
    expected = sgns_step(ref_in, ref_out, center, context, negatives, 0.05)
    loss = tiled_step(w_in, w_out, center.view(-1, 1), context.view(-1, 1), negatives, 0.05)
    assert torch.allclose(loss, expected)
    assert torch.allclose(w_in, ref_in, atol=1e-6) and torch.allclose(w_out, ref_out, atol=1e-6)


def test_steps_cover_a_block_in_batches_of_whole_tiles() -> None:
    assert steps(100, 16, 32) == [(0, 32), (32, 64), (64, 96), (96, 100)]
    assert steps(96, 16, 64) == [(0, 64), (64, 96)]
    assert steps(5, 16, 64) == [(0, 5)]


def test_device_negatives_are_seeded_and_follow_the_noise_distribution() -> None:
    counts = np.array([500, 200, 120, 80, 50, 30, 15, 5])
    sampler = NegativeSampler(counts / counts.sum(), k=5, seed=3)
    prob, alias = torch.from_numpy(sampler.prob).float(), torch.from_numpy(sampler.alias)

    def draws(seed: int) -> torch.Tensor:
        return draw_noise(prob, alias, (40_000, 5), torch.Generator().manual_seed(seed))

    seed = sampler.block_seed(epoch=2, first=4096)
    assert seed == sampler.block_seed(2, 4096) != sampler.block_seed(2, 8192)
    assert seed != sampler.block_seed(3, 4096)
    assert torch.equal(draws(seed), draws(seed))
    assert not torch.equal(draws(seed), draws(sampler.block_seed(2, 8192)))
    share = np.bincount(draws(seed).reshape(-1).numpy(), minlength=8) / 200_000
    assert np.abs(share - counts / counts.sum()).max() < 0.005  # 4+ standard errors


def noise(vocab: int) -> NegativeSampler:
    return NegativeSampler(np.full(vocab, 1 / vocab), k=5, seed=1)


def torch_trainer(vocab: int, batch_size: int = 256) -> TorchTrainer:
    return TorchTrainer(
        vocab, 16, 0.025, 120_000, noise(vocab), 1, "cpu", threads=1, batch_size=batch_size
    )


def staged(epochs, rows: int = 1024):
    """`epochs` as the trainer takes them: `host_blocks` of `rows` pairs."""
    return lambda epoch, start=0: host_blocks(epochs(epoch, start), rows, pin=False)


def test_training_learns_groups_and_is_reproducible() -> None:
    epochs = staged(toy_epochs(100, 1024))
    result = train_sgns(torch_trainer(100), epochs, 3, 120_000)
    assert result.device == "torch"
    assert result.loss_per_epoch[-1] < result.loss_per_epoch[0] - 0.5
    v = result.vectors / np.linalg.norm(result.vectors, axis=1, keepdims=True)
    similarity = v @ v.T
    assert similarity[0, 1:50].mean() > similarity[0, 50:].mean() + 0.5
    again = train_sgns(torch_trainer(100), epochs, 3, 120_000)
    assert np.array_equal(result.vectors, again.vectors)


def test_the_loss_is_read_once_a_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every way a tensor's value reaches the host is counted: one a block of 16 batches."""
    reads = []
    for name in ("__float__", "__int__", "__bool__", "item", "tolist"):
        method = getattr(torch.Tensor, name)
        counted = lambda self, *a, _m=method, _n=name: reads.append(_n) or _m(self, *a)  # noqa: E731
        monkeypatch.setattr(torch.Tensor, name, counted)
    trainer = torch_trainer(100)
    blocks = list(staged(toy_epochs(100, 1024), rows=4096)(0))
    for first, (rows,) in zip(range(0, 16_384, 4096), blocks[:4], strict=True):
        trainer.train((rows,), 0, first, first)
    assert reads == ["__float__"] * 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_block_replayed_as_a_cuda_graph_trains_as_the_eager_loop() -> None:
    """On CUDA a whole block is a captured graph, replayed with each block's inputs: the same
    SGD as the eager loop, to rounding (index_add_ adds atomically, in no fixed order)."""
    graphed, eager = (
        TorchTrainer(100, 16, 0.025, 120_000, noise(100), 1, "cuda", batch_size=256, block_rows=r)
        for r in (4096, 1)
    )
    blocks = list(host_blocks(toy_epochs(100, 1024)(0), 4096, pin=True))[:3]
    for first, block in zip(range(0, 12_288, 4096), blocks, strict=True):
        losses = [trainer.train(block, 0, first, first) for trainer in (graphed, eager)]
        assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    assert graphed.graph is not None and eager.graph is None
    np.testing.assert_allclose(graphed.vectors(), eager.vectors(), atol=1e-5)
    assert graphed.measurements()["peak_gpu_mib"] >= 0


def test_divergence_is_a_clear_error() -> None:
    with pytest.raises(QuijoteError, match="training diverged in epoch 2"):
        train_sgns(torch_trainer(10, 4096), staged(toy_epochs(10, 4096), 4096), 2, 80_000)


def test_resumed_from_any_checkpoint_ends_identical() -> None:
    epochs = staged(toy_epochs(100, 1024))
    resumes_identically(lambda: torch_trainer(100), epochs, [0, 39, 40, 60])


def test_word2vec_initialisation() -> None:
    """Input vectors uniform in [-0.5/dim, 0.5/dim] (word2vec's), output vectors zero."""
    w_in, w_out = init_embeddings(50, 10, seed=3)
    assert w_in.abs().max() <= 0.5 / 10 and w_out.abs().max() == 0
    assert w_in.min() < -0.45 / 10 and w_in.max() > 0.45 / 10  # spread over the whole range
    assert abs(float(w_in.mean())) < 0.05 / 10
    assert torch.equal(w_in, init_embeddings(50, 10, seed=3)[0])
    assert not torch.equal(w_in, init_embeddings(50, 10, seed=4)[0])


class ConstantLoss:
    """A trainer whose pairs of epoch e each have loss e + 1."""

    device = "fake"

    def train(self, block: Block, epoch: int, first: int, done: int) -> float:
        return float(epoch + 1) * len(block[0])

    def heldout_loss(self, batch: Batch) -> float:
        return 0.0

    def vectors(self) -> np.ndarray:
        return np.zeros((1, 1), dtype=np.float32)

    def state(self) -> dict[str, np.ndarray]:
        return {}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        pass


def test_the_loss_of_an_epoch_is_the_mean_over_its_own_pairs() -> None:
    """Each epoch's loss divides its summed loss by that epoch's pairs, not all pairs so far."""
    result = train_sgns(ConstantLoss(), toy_epochs(10, 3_000, 10_000), 3, 30_000)
    assert result.loss_per_epoch == [1.0, 2.0, 3.0]
    assert result.pairs == 30_000


def test_heldout_loss_is_the_loss_of_the_context_predicting_the_center() -> None:
    w_in, w_out, batch = heldout_problem(30, 16)
    trainer = torch_trainer(30)
    trainer.load_state({"w_in": w_in, "w_out": w_out})
    expected = heldout_reference(w_in, w_out, batch)
    assert trainer.heldout_loss(batch) == pytest.approx(expected, rel=1e-5)
    center, context, negatives = batch
    swapped = heldout_reference(w_in, w_out, (context, center, negatives))
    assert abs(swapped - expected) > 0.05  # the check tells the two directions apart
