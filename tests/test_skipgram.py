import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.skipgram import train_sgns
from models.skipgram_torch import TorchTrainer, init_embeddings, sgns_step
from quijote.errors import QuijoteError
from tests.data import resumes_identically, toy_epochs


def sgns_loss(w_in, w_out, center, context, negatives):
    v = w_in[center]
    positive = F.logsigmoid((w_out[context] * v).sum(1))
    scores = torch.bmm(w_out[negatives], v.unsqueeze(2)).squeeze(2)
    keep = (negatives != context.unsqueeze(1)).float()
    return -(positive + (F.logsigmoid(-scores) * keep).sum(1)).sum()


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


def test_word2vec_initialisation() -> None:
    w_in, w_out = init_embeddings(50, 10, seed=3)
    assert w_in.abs().max() <= 0.5 / 10 and w_out.abs().max() == 0
    assert torch.equal(w_in, init_embeddings(50, 10, seed=3)[0])


def torch_trainer(vocab: int) -> TorchTrainer:
    return TorchTrainer(vocab, 16, 0.025, 120_000, seed=1, device="cpu", threads=1)


def test_training_learns_groups_and_is_reproducible() -> None:
    epochs = toy_epochs(100, 1024, negatives=True)
    result = train_sgns(torch_trainer(100), epochs, 3, 120_000)
    assert result.loss_per_epoch[-1] < result.loss_per_epoch[0] - 0.5
    v = result.vectors / np.linalg.norm(result.vectors, axis=1, keepdims=True)
    similarity = v @ v.T
    assert similarity[0, 1:50].mean() > similarity[0, 50:].mean() + 0.5
    again = train_sgns(torch_trainer(100), epochs, 3, 120_000)
    assert np.array_equal(result.vectors, again.vectors)


def test_divergence_is_a_clear_error() -> None:
    with pytest.raises(QuijoteError, match="training diverged in epoch 2"):
        train_sgns(torch_trainer(10), toy_epochs(10, 4096, negatives=True), 2, 80_000)


def test_resumed_from_any_checkpoint_ends_identical() -> None:
    epochs = toy_epochs(100, 1024, negatives=True)
    resumes_identically(lambda: torch_trainer(100), epochs, [0, 39, 40, 60])
