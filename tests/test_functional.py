"""Invariance tests of the vectorized gradient machinery against plain autograd loops."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ddm.functional import (
    finetune_batched,
    finetune_one,
    model_params,
    params_from_flat,
    per_cluster_gradients,
    per_sample_gradients,
    predict_batched,
    segment_mean,
)
from ddm.train import flat_params


def tiny_convnet(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.GroupNorm(4, 4), nn.ReLU(),
                         nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 3)).double()


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(20, 1, 6, 6, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 3, (20,), generator=generator)
    cluster_ids = torch.randint(0, 5, (20,), generator=generator)
    return images, labels, cluster_ids


@pytest.mark.parametrize("method", ["vmap", "loop"])
def test_per_cluster_gradients_equal_per_cluster_autograd(batch, method):
    images, labels, cluster_ids = batch
    model = tiny_convnet()
    cluster_ids = torch.where(cluster_ids == 3, 4, cluster_ids)  # cluster 3 empty: zero gradient
    vectorized = per_cluster_gradients(model, model_params(model), images, labels, cluster_ids, 5,
                                       chunk=7, method=method)  # chunks that cut across clusters
    for name in vectorized:
        assert not vectorized[name][3].any()
    for k in (0, 1, 2, 4):
        members = cluster_ids == k
        model.zero_grad()
        F.cross_entropy(model(images[members]), labels[members]).backward()
        for name, param in model.named_parameters():
            torch.testing.assert_close(vectorized[name][k], param.grad, rtol=1e-10, atol=1e-12)


def test_per_sample_gradients_are_differentiable_in_the_images(batch):
    images, labels, _ = batch
    model = tiny_convnet()
    images = images[:3].clone().requires_grad_(True)
    grads = per_sample_gradients(model, model_params(model), images, labels[:3])
    total = sum(g.pow(2).sum() for g in grads.values())
    (image_grad,) = torch.autograd.grad(total, images)
    assert image_grad.abs().sum() > 0


def test_segment_mean_by_hand():
    values = {"w": torch.tensor([[1.0], [3.0], [10.0]])}
    out = segment_mean(values, torch.tensor([0, 0, 2]), 3)["w"]
    assert out.flatten().tolist() == [2.0, 0.0, 10.0]


def test_batched_finetunes_equal_a_loop(batch):
    images, labels, _ = batch
    model = tiny_convnet()
    params = model_params(model)
    subsets = images[:12].reshape(4, 3, 1, 6, 6)
    subset_labels = labels[:12].reshape(4, 3)
    weights = torch.tensor([[1.0, 1, 1], [1, 1, 0], [1, 0, 0], [0.5, 2, 1]], dtype=torch.float64)
    batched = finetune_batched(model, params, subsets, subset_labels, weights, steps=4, lr=0.1)
    for b in range(4):
        looped = finetune_one(model, params, subsets[b], subset_labels[b], weights[b], steps=4, lr=0.1)
        for name in params:
            torch.testing.assert_close(batched[name][b], looped[name], rtol=1e-10, atol=1e-12)
    assert not torch.allclose(batched["5.weight"][0], params["5.weight"])


def test_finetune_with_zero_weights_changes_nothing(batch):
    images, labels, _ = batch
    model = tiny_convnet()
    params = model_params(model)
    out = finetune_batched(model, params, images[:4].reshape(2, 2, 1, 6, 6), labels[:4].reshape(2, 2),
                           torch.zeros(2, 2, dtype=torch.float64), steps=3, lr=1.0)
    for name in params:
        assert torch.equal(out[name][1], params[name])


def test_predict_batched_equals_plain_forward(batch):
    images, _, _ = batch
    model = tiny_convnet()
    stacked = {name: torch.stack([p, p * 0.5]) for name, p in model_params(model).items()}
    logits = predict_batched(model, stacked, images)
    torch.testing.assert_close(logits[0], model(images))
    assert logits.shape == (2, 20, 3)


def test_params_from_flat_round_trip():
    model = tiny_convnet()
    params = params_from_flat(model, flat_params(model).double())
    for name, value in model_params(model).items():
        torch.testing.assert_close(params[name], value)
