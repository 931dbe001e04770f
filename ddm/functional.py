"""Vectorized gradient machinery on ``torch.func``: per-cluster gradients and batched fine-tunes.

Parameters travel as dicts ``{name: tensor}`` (the form ``functional_call`` takes). "Stacked"
parameters carry one extra leading dimension, one row per model being fine-tuned at once.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

Params = dict[str, Tensor]


def model_params(model: nn.Module) -> Params:
    """The model's parameters as a detached dict (a snapshot, safe to stack or update)."""
    return {name: param.detach().clone() for name, param in model.named_parameters()}


def params_from_flat(model: nn.Module, vector: Tensor) -> Params:
    """A flat [P] vector (as stored in a trajectory) -> a parameter dict shaped like ``model``."""
    params, offset = {}, 0
    for name, param in model.named_parameters():
        params[name] = vector[offset:offset + param.numel()].view_as(param).to(param.device)
        offset += param.numel()
    return params


def _weighted_loss(model: nn.Module) -> Callable[[Params, Tensor, Tensor, Tensor], Tensor]:
    """loss(params, images [m, ...], labels [m], weights [m]) = sum_j w_j * CE_j."""

    def loss(params: Params, images: Tensor, labels: Tensor, weights: Tensor) -> Tensor:
        logits = functional_call(model, params, (images,))
        return (F.cross_entropy(logits, labels, reduction="none") * weights).sum()

    return loss


def _sample_loss(model: nn.Module) -> Callable[[Params, Tensor, Tensor], Tensor]:
    def loss(params: Params, image: Tensor, label: Tensor) -> Tensor:
        logits = functional_call(model, params, (image.unsqueeze(0),))
        return F.cross_entropy(logits, label.unsqueeze(0))

    return loss


def per_sample_gradients(model: nn.Module, params: Params, images: Tensor,
                         labels: Tensor) -> Params:
    """Gradient of each sample's loss: images [n, ...] -> {name: [n, *shape]}.

    Differentiable with respect to ``images`` (the synset update backpropagates through it).
    """
    return vmap(grad(_sample_loss(model)), in_dims=(None, 0, 0))(params, images, labels)


def per_cluster_gradients(model: nn.Module, params: Params, images: Tensor, labels: Tensor,
                          cluster_ids: Tensor, n_clusters: int, chunk: int = 64,
                          method: str = "auto") -> Params:
    """Gradient of every cluster's mean loss: {name: [K, *shape]} (zeros for an empty cluster).

    images [N, C, H, W], labels int64 [N], cluster_ids int64 [N] in [0, K). Two exact paths:
    - ``vmap``: per-sample gradients of ``chunk`` samples at a time, summed into their cluster by
      ``index_add_`` (a segment sum) and divided by the cluster sizes; no Python loop over clusters
      (the GPU path).
    - ``loop``: one autograd backward of each cluster's mean loss. On 2 CPU cores (ConvNet width 32,
      MNIST small, N = 2000, K = 100) it took 1.3 s against the vmap path's 3.0 s, which
      materializes and segment-sums N per-sample gradients.
    ``auto`` takes ``loop`` on the CPU and ``vmap`` elsewhere; the two agree to float tolerance.
    """
    if method == "auto":
        method = "loop" if images.device.type == "cpu" else "vmap"
    if method == "loop":
        return _per_cluster_loop(model, params, images, labels, cluster_ids, n_clusters)
    if method != "vmap":
        raise ValueError(f"unknown per-cluster gradient method {method!r}: auto | loop | vmap")
    totals = {name: torch.zeros(n_clusters, *p.shape, dtype=p.dtype, device=p.device)
              for name, p in params.items()}
    cluster_ids = cluster_ids.to(images.device)
    for start in range(0, len(labels), chunk):
        part = slice(start, start + chunk)
        sample_grads = per_sample_gradients(model, params, images[part], labels[part])
        for name, value in sample_grads.items():
            totals[name].index_add_(0, cluster_ids[part], value.detach())
    sizes = torch.bincount(cluster_ids, minlength=n_clusters).clamp_min(1).to(images.dtype)
    return {name: value / sizes.view(-1, *[1] * (value.dim() - 1)) for name, value in totals.items()}


def _per_cluster_loop(model: nn.Module, params: Params, images: Tensor, labels: Tensor,
                      cluster_ids: Tensor, n_clusters: int) -> Params:
    leaves = {name: value.detach().requires_grad_(True) for name, value in params.items()}
    totals = {name: torch.zeros(n_clusters, *p.shape, dtype=p.dtype, device=p.device)
              for name, p in params.items()}
    cluster_ids = cluster_ids.to(images.device)
    order = torch.argsort(cluster_ids, stable=True)
    sizes = torch.bincount(cluster_ids, minlength=n_clusters)
    starts = (torch.cumsum(sizes, 0) - sizes).tolist()
    with torch.enable_grad():
        for k, (start, size) in enumerate(zip(starts, sizes.tolist(), strict=True)):
            if size == 0:
                continue
            rows = order[start:start + size]
            loss = F.cross_entropy(functional_call(model, leaves, (images[rows],)), labels[rows])
            for name, value in zip(leaves, torch.autograd.grad(loss, list(leaves.values())), strict=True):
                totals[name][k] = value
    return totals


def segment_mean(values: Params, segment_ids: Tensor, n_segments: int) -> Params:
    """Mean of rows sharing a segment id: {name: [n, *shape]} -> {name: [n_segments, *shape]}.

    Differentiable (used on synthetic-image gradients when a cluster has several images)."""
    sizes = torch.bincount(segment_ids, minlength=n_segments).clamp_min(1)
    out = {}
    for name, value in values.items():
        total = value.new_zeros(n_segments, *value.shape[1:]).index_add(0, segment_ids, value)
        out[name] = total / sizes.to(value.dtype).view(-1, *[1] * (value.dim() - 1))
    return out


def flat_rows(params: Params) -> Tensor:
    """Every row of stacked parameters as one vector: {name: [K, ...]} -> [K, P] (parameter order)."""
    return torch.cat([value.flatten(1) for value in params.values()], 1)


def stack_params(params: Params, copies: int) -> Params:
    """``copies`` identical rows of every parameter: {name: [copies, *shape]}."""
    return {name: value.unsqueeze(0).expand(copies, *value.shape).clone()
            for name, value in params.items()}


def finetune_batched(model: nn.Module, params: Params, images: Tensor, labels: Tensor,
                     weights: Tensor, *, steps: int, lr: float) -> Params:
    """Fine-tune B copies of ``params`` at once, copy b on its own weighted image set.

    images [B, m, C, H, W], labels [B, m], weights [B, m] (0 = padding) -> stacked params [B, ...].
    Plain SGD: theta <- theta - lr * grad sum_j w_bj CE(theta; x_bj), ``steps`` times (paper Eq. 9).
    """
    stacked = stack_params(params, len(images))
    step_grad = vmap(grad(_weighted_loss(model)), in_dims=(0, 0, 0, 0))
    for _ in range(steps):
        grads = step_grad(stacked, images, labels, weights)
        stacked = {name: value - lr * grads[name] for name, value in stacked.items()}
    return stacked


def finetune_one(model: nn.Module, params: Params, images: Tensor, labels: Tensor,
                 weights: Tensor, *, steps: int, lr: float) -> Params:
    """The same update for one model, with plain autograd (the reference for the batched path)."""
    current = {name: value.clone().requires_grad_(True) for name, value in params.items()}
    loss_fn = _weighted_loss(model)
    for _ in range(steps):
        grads = torch.autograd.grad(loss_fn(current, images, labels, weights), list(current.values()))
        current = {name: (value - lr * g).detach().requires_grad_(True)
                   for (name, value), g in zip(current.items(), grads, strict=True)}
    return {name: value.detach() for name, value in current.items()}


def predict_batched(model: nn.Module, stacked: Params, queries: Tensor) -> Tensor:
    """Logits of every stacked model on the same queries: queries [n_q, ...] -> [B, n_q, classes].

    On CUDA one ``vmap`` call; on the CPU a loop over the models, which measured 3x faster there
    (vmap turns per-model convolution weights into one grouped convolution, slow on CPU kernels).
    """
    if queries.device.type == "cuda":
        return vmap(lambda params: functional_call(model, params, (queries,)))(stacked)
    count = len(next(iter(stacked.values())))
    return torch.stack([functional_call(model, {name: value[b] for name, value in stacked.items()},
                                        (queries,)) for b in range(count)])
