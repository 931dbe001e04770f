"""Offline stage: distil every cluster into synthetic images (paper §3.2, Eq. 5-6, Alg. 1).

Reverse gradient matching (``mode="reverse"``, DDM): for a sampled checkpoint pair (a, b) the real
gradient ``g_r = grad L(theta_a; D_k)`` and the synthetic gradient ``g_s = grad L(theta_b; S_k)``
are matched as ``Dist(g_r, -g_s)``, so that fine-tuning the trained network on ``S_k`` walks it
back along the direction ``D_k`` pushed it (unlearning). Pairings: ``alg1`` (a = t, b = t + s) and
``eq6`` (a = t, b = tau - t).

Gradient matching (``mode="match"``, the paper's DDM-match baseline, Zhao et al. 2021) uses the
same machinery with the forward pairing a = b = t and ``Dist(g_r, +g_s)``.

All K real gradients at a checkpoint come from one vectorized per-sample pass plus a segment sum
(cached per checkpoint); all K synthetic gradients from one ``vmap`` call.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ddm.cluster import Clustering
from ddm.config import DISTILL_MODES, DistillConfig
from ddm.data import DataSplits
from ddm.errors import ConfigError, DivergedError
from ddm.functional import Params, params_from_flat, per_cluster_gradients, per_sample_gradients, segment_mean
from ddm.registry import Registry
from ddm.target import Target

MODES = DISTILL_MODES
COS_EPS = 1e-6  # as in the dataset-condensation code: keeps the cosine finite for a zero gradient
CONVERGE_WINDOW = 25  # steps between two convergence checks (converge_tol). A check evaluates the
# matching loss over every admissible pair (deterministic); one step's loss is that of one randomly
# drawn pair, too noisy to compare (on digits small a 25-step window of them stopped at step 50)
CHECK_PAIRS = 8  # pairs a convergence check evaluates (evenly spaced): all 37 of a dense MNIST-small
# trajectory cost more than the distillation steps between two checks

Distance = Callable[[Params, Params], Tensor]  # ({name: [K, ...]}, {name: [K, ...]}) -> [K]
DISTANCES: Registry[Distance] = Registry("gradient distance")


@DISTANCES.register("layerwise")
def layerwise_cosine(real: Params, synthetic: Params) -> Tensor:
    """Dataset condensation's distance: sum over layers and output channels of (1 - cosine).

    Each weight tensor is viewed as [K, out_channels, -1]; 1-D parameters (biases, norm affine) are
    skipped, as in the DC code.
    """
    total = None
    for name, real_grad in real.items():
        if real_grad.dim() <= 2:  # [K, n]: a bias or norm parameter
            continue
        flat_real = real_grad.flatten(2)
        flat_syn = synthetic[name].flatten(2)
        cosine = (flat_real * flat_syn).sum(-1) / (flat_real.norm(dim=-1) * flat_syn.norm(dim=-1) + COS_EPS)
        term = (1 - cosine).sum(-1)
        total = term if total is None else total + term
    if total is None:
        raise ConfigError("layerwise distance needs at least one weight matrix")
    return total


@DISTANCES.register("cosine")
def cosine(real: Params, synthetic: Params) -> Tensor:
    """1 - cosine between the whole flattened gradients of each cluster."""
    flat_real = torch.cat([g.flatten(1) for g in real.values()], 1)
    flat_syn = torch.cat([synthetic[name].flatten(1) for name in real], 1)
    return 1 - (flat_real * flat_syn).sum(1) / (flat_real.norm(dim=1) * flat_syn.norm(dim=1) + COS_EPS)


@DISTANCES.register("mse")
def mse(real: Params, synthetic: Params) -> Tensor:
    """Sum of squared differences (the paper's choice for the Simple ViT)."""
    return sum(((real[name] - synthetic[name]) ** 2).flatten(1).sum(1) for name in real)


@dataclass(frozen=True)
class Synset:
    """Synthetic images: images [K * ipc, C, H, W], labels int64 [K * ipc] (the cluster's class),
    cluster_ids int64 [K * ipc]; ``losses`` is the matching loss per distillation step.
    ``soft_labels`` [K * ipc, L] (probabilities) when the labels were learned (``synset_labels=soft``)."""

    images: Tensor
    labels: Tensor
    cluster_ids: Tensor
    n_clusters: int
    losses: list[float]
    mode: str
    seconds: float
    soft_labels: Tensor | None = None
    # matching loss over the check pairs at step 0 and every CONVERGE_WINDOW steps (converge_tol set)
    checks: list[float] | None = None

    @property
    def targets(self) -> Tensor:
        """What the fine-tune's cross-entropy is taken against: the soft labels [K * ipc, L] when
        learned, else the hard labels int64 [K * ipc]."""
        return self.labels if self.soft_labels is None else self.soft_labels


def checkpoint_pair(mode: str, pairing: str, n_checkpoints: int, step_length: int,
                    generator: torch.Generator) -> tuple[int, int]:
    """(a, b): the checkpoint of the real gradient and of the synthetic one for one step."""
    pairs = all_pairs(mode, pairing, n_checkpoints, step_length)
    return pairs[int(torch.randint(0, len(pairs), (1,), generator=generator))]


def init_synset(images: Tensor, labels: Tensor, clustering: Clustering, ipc: int,
                generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """``ipc`` random real images of each cluster (drawn with replacement if a cluster is smaller)."""
    rows = []
    for cluster in range(clustering.n_clusters):
        members = clustering.members(cluster)
        if len(members) == 0:
            raise ConfigError(f"cluster {cluster} is empty; cannot initialize its synthetic image")
        pick = torch.randperm(len(members), generator=generator)[:ipc]
        if len(pick) < ipc:
            pick = torch.randint(0, len(members), (ipc,), generator=generator)
        rows.append(members[pick])
    rows = torch.cat(rows)
    cluster_ids = torch.arange(clustering.n_clusters).repeat_interleave(ipc)
    return images[rows].clone(), labels[rows].clone(), cluster_ids


# Per-cluster real gradients can be shared within a process by (target weights, clustering, checkpoint
# step, device): the default synset, the DDM-match synset, the paper-schedule synset (its per-epoch
# checkpoints are steps of the dense trajectory) and the fine-tune's cluster weights all need them,
# and they were most of a cold MNIST-small Table 1's distillation time. The memo (a bounded mapping)
# and the prefix naming those weights and clusters in it come from the caller (``ddm.stages``).
SharedGradients = tuple[MutableMapping[tuple, Params], tuple]


class RealGradients:
    """Per-cluster real gradients at trajectory checkpoints, each computed once per process.

    With ``real_batch`` set, each call draws that many real images per cluster instead (no caching).
    ``shared``: a memo shared with other users of the same weights and clusters, and their prefix in it.
    """

    def __init__(self, target: Target, images: Tensor, labels: Tensor, clustering: Clustering,
                 real_batch: int | None, generator: torch.Generator,
                 shared: SharedGradients | None = None) -> None:
        self.model, self.trajectory, self.steps = target.model, target.trajectory, target.checkpoint_steps
        self.images, self.labels, self.clustering = images, labels, clustering
        self.real_batch, self.generator = real_batch, generator
        self.memo, self.prefix = shared if shared is not None else (None, None)
        self.cached: dict[int, Params] = {}

    def __call__(self, checkpoint: int) -> Params:
        if self.real_batch is not None:
            return self._compute(checkpoint)
        key = None if self.memo is None else (*self.prefix, self.steps[checkpoint])
        if key is not None and key in self.memo:
            return self.memo[key]
        if checkpoint not in self.cached:
            self.cached[checkpoint] = self._compute(checkpoint)
            if key is not None:
                self.memo[key] = self.cached[checkpoint]
        return self.cached[checkpoint]

    def _compute(self, checkpoint: int) -> Params:
        params = params_from_flat(self.model, self.trajectory[checkpoint].to(self.images.device))
        rows = self._rows()
        return per_cluster_gradients(self.model, params, self.images[rows], self.labels[rows],
                                     self.clustering.cluster_ids[rows], self.clustering.n_clusters)

    def _rows(self) -> Tensor:
        if self.real_batch is None:
            return torch.arange(len(self.labels))
        picks = [members[torch.randperm(len(members), generator=self.generator)[: self.real_batch]]
                 for members in map(self.clustering.members, range(self.clustering.n_clusters))]
        return torch.cat(picks)


def initial_label_logits(labels: Tensor, n_classes: int, own_probability: float) -> Tensor:
    """Logits [n, L] whose softmax gives ``own_probability`` to each image's class and spreads the
    rest uniformly over the other classes (0 -> the complementary label, up to a 1e-3 floor)."""
    own = min(max(own_probability, 1e-3), 1 - 1e-6)
    logits = torch.zeros(len(labels), n_classes)
    own_logit = float(torch.tensor(own * (n_classes - 1) / (1 - own)).log())
    logits[torch.arange(len(labels)), labels.cpu()] = own_logit
    return logits


def distill(target: Target, data: DataSplits, clustering: Clustering, cfg: DistillConfig, *,
            mode: str = "reverse", progress: bool | None = None,
            shared: SharedGradients | None = None) -> Synset:
    """Run up to ``cfg.distill_steps`` synset updates (fewer when ``converge_tol`` stops it early);
    returns the synset (on the CPU). ``shared``: the real gradients' memo (see :class:`RealGradients`)."""
    _validate(cfg, mode, len(target.trajectory))
    device = next(target.model.parameters()).device
    generator = torch.Generator().manual_seed(cfg.distill_seed)
    images, labels, cluster_ids = init_synset(data.train_x, data.train_y, clustering, cfg.ipc, generator)
    synthetic = images.to(device).requires_grad_(True)
    labels, cluster_ids = labels.to(device), cluster_ids.to(device)
    real_grads = RealGradients(target, data.train_x.to(device), data.train_y.to(device),
                               _on(clustering, device), cfg.real_batch, generator, shared)
    lr = cfg.lr_img if mode == "reverse" else cfg.lr_img_match
    groups = [{"params": [synthetic], "lr": lr}]
    label_logits = None
    if cfg.synset_labels == "soft":
        label_logits = initial_label_logits(labels, data.info.num_classes, cfg.soft_label_init)
        label_logits = label_logits.to(images.dtype)
        label_logits = label_logits.to(device).requires_grad_(True)
        groups.append({"params": [label_logits], "lr": cfg.lr_label})
    optimizer = torch.optim.SGD(groups, lr=lr, momentum=cfg.img_momentum)
    distance, sign = DISTANCES[cfg.distance], (-1.0 if mode == "reverse" else 1.0)
    pairs = check_pairs(all_pairs(mode, cfg.pairing, len(target.trajectory), cfg.step_length))

    def current_targets() -> Tensor:
        return labels if label_logits is None else label_logits.softmax(-1)

    def check_loss() -> float:
        with torch.no_grad():
            targets = current_targets()
        return sum(float(matching_loss(target, synthetic.detach(), targets, cluster_ids, real_grads(a), b,
                                       distance, sign).detach()) for a, b in pairs) / len(pairs)

    losses, start = [], time.perf_counter()
    checks = [check_loss()] if cfg.converge_tol is not None else None
    for step in tqdm(range(cfg.distill_steps), desc=f"distill ({mode})", disable=None if progress is None
                     else not progress, leave=False):
        a, b = checkpoint_pair(mode, cfg.pairing, len(target.trajectory), cfg.step_length, generator)
        loss = matching_loss(target, synthetic, current_targets(), cluster_ids, real_grads(a), b, distance,
                             sign)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if not torch.isfinite(loss.detach()):
            raise DivergedError(f"synset distillation diverged at step {len(losses)} (matching loss "
                                     f"is not finite); lower lr_img ({lr}) or lr_label ({cfg.lr_label})")
        if checks is not None and (step + 1) % CONVERGE_WINDOW == 0:
            checks.append(check_loss())
            if converged(checks, cfg.converge_tol):
                break
    soft = None if label_logits is None else label_logits.detach().softmax(-1).cpu()
    return Synset(synthetic.detach().cpu(), labels.cpu(), cluster_ids.cpu(), clustering.n_clusters,
                  losses, mode, time.perf_counter() - start, soft, checks)


def check_pairs(pairs: list[tuple[int, int]], most: int = CHECK_PAIRS) -> list[tuple[int, int]]:
    """At most ``most`` evenly spaced pairs of ``pairs`` (all of them when there are fewer)."""
    if len(pairs) <= most:
        return pairs
    return [pairs[round(i * (len(pairs) - 1) / (most - 1))] for i in range(most)]


def converged(checks: list[float], tol: float | None) -> bool:
    """True once the last all-pairs matching loss improved on the one before by less than ``tol``
    (a fraction of it); never when ``tol`` is None."""
    if tol is None or len(checks) < 2:
        return False
    return checks[-2] - checks[-1] < tol * abs(checks[-2])


def matching_loss(target: Target, synthetic: Tensor, labels: Tensor, cluster_ids: Tensor,
                  real_grads: Params, checkpoint: int, distance: Distance, sign: float) -> Tensor:
    """sum_k Dist(g_r_k, sign * g_s_k) with g_s_k the synthetic gradient at ``checkpoint``.

    ``labels``: hard int64 [K * ipc] or soft probabilities [K * ipc, L] (differentiable)."""
    params = params_from_flat(target.model, target.trajectory[checkpoint].to(synthetic.device))
    sample_grads = per_sample_gradients(target.model, params, synthetic, labels)
    synthetic_grads = segment_mean(sample_grads, cluster_ids, len(next(iter(real_grads.values()))))
    return distance(real_grads, {name: sign * g for name, g in synthetic_grads.items()}).sum()


def all_pairs(mode: str, pairing: str, n_checkpoints: int, step_length: int) -> list[tuple[int, int]]:
    """Every (a, b) checkpoint pair the sampler can draw."""
    tau = n_checkpoints - 1
    if mode == "match":
        return [(t, t) for t in range(tau)]
    if pairing == "alg1":
        return [(t, t + step_length) for t in range(tau - step_length + 1)]
    return [(t, tau - t) for t in range(tau + 1)]


def evaluate_matching(target: Target, data: DataSplits, clustering: Clustering, images: Tensor,
                      cfg: DistillConfig, mode: str, targets: Tensor | None = None) -> float:
    """Matching loss of synthetic ``images`` [K * ipc, ...] averaged over every admissible checkpoint
    pair (deterministic, unlike the sampled training loss): the number to watch fall. ``targets``:
    the synset's labels (soft [K * ipc, L] or hard); None takes the clusters' hard labels."""
    _validate(cfg, mode, len(target.trajectory))
    device = next(target.model.parameters()).device
    generator = torch.Generator().manual_seed(cfg.distill_seed)
    _, labels, cluster_ids = init_synset(data.train_x, data.train_y, clustering, cfg.ipc, generator)
    real_grads = RealGradients(target, data.train_x.to(device),
                               data.train_y.to(device), _on(clustering, device), None, generator)
    distance, sign = DISTANCES[cfg.distance], (-1.0 if mode == "reverse" else 1.0)
    pairs = all_pairs(mode, cfg.pairing, len(target.trajectory), cfg.step_length)
    labels = labels if targets is None else targets
    total = sum(float(matching_loss(target, images.to(device), labels.to(device), cluster_ids.to(device),
                                    real_grads(a), b, distance, sign).detach()) for a, b in pairs)
    return total / len(pairs)


def _on(clustering: Clustering, device: torch.device) -> Clustering:
    return dataclasses.replace(clustering, cluster_ids=clustering.cluster_ids.to(device))


def _validate(cfg: DistillConfig, mode: str, n_checkpoints: int) -> None:
    if mode not in MODES:
        raise ConfigError(f"unknown distillation mode {mode!r}; choose one of: {', '.join(MODES)}")
    if mode == "reverse" and cfg.pairing == "alg1" and not 1 <= cfg.step_length < n_checkpoints:
        raise ConfigError(f"step_length {cfg.step_length} needs a trajectory of more than "
                          f"{cfg.step_length} checkpoints; this one has {n_checkpoints}. Record more "
                          f"checkpoints (checkpoint_every) or lower step_length")
