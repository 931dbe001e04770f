"""Online stage of DDM (paper §3.3, §6.2): delete clusters by fine-tuning on their synset, fit W.

``SynsetUnlearner`` turns keep-masks over clusters into fine-tuned models: for a mask p, theta_tau is
fine-tuned (plain SGD, T steps, lr eta, Eq. 9) on the synthetic images of the removed clusters, the
loss summed over removed clusters (each cluster's ipc images averaged), so deletions add up the way a
cluster's contribution to the training gradient does. Every mask of a chunk is fine-tuned in one
``vmap`` call. ``DDMAttributor`` fits the linear datamodel on those outputs; ``hierarchical_search``
locates a cluster with L + C single deletions.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ddm.attributor import METHODS, Queries, RemovalPredictor
from ddm.cluster import Clustering
from ddm.config import ExperimentConfig
from ddm.data import DataSplits
from ddm.datamodel import Datamodel, fit_datamodel, perturbation_weights, sample_perturbations
from ddm.distill import RealGradients, SharedGradients, Synset
from ddm.functional import (
    finetune_batched,
    finetune_one,
    flat_rows,
    model_params,
    per_sample_gradients,
    predict_batched,
    segment_mean,
)
from ddm.objectives import GLOBAL, Objective, get_objective, to_probabilities
from ddm.stages import get_synset, shared_gradients
from ddm.target import Target

# On the CPU, masks whose synthetic images hold at least this many pixel values in all are fine-tuned
# one model at a time (plain autograd, padding dropped); smaller ones in vmap calls, whose per-model
# weights become grouped convolutions. Per model on 2 cores (10 steps): MNIST small, 1 / 4 / 8 / 16 /
# 32 images: vmap 7 / 34 / 63 / 87 / 260 ms, one at a time 18 / 41 / 44 / 71 / 120 ms; digits smoke
# (8x8), 16 images: vmap 11 ms, one at a time 38 ms. The two paths agree to float tolerance
# (tests/test_attribute.py).
LOOP_MIN_PIXELS = 4096
IMAGES_PER_CALL = 256  # synthetic images fine-tuned per vectorized call (see chunk_size)
Evaluator = Callable[[Tensor], Tensor]  # keep-masks bool [B, K] -> probabilities [B, n_q, classes]


def auto_finetune_lr(config: ExperimentConfig, mean_cluster_size: float) -> float:
    """eta with eta * T = budget * lr * epochs * |D_k| / B.

    Over tau epochs each sample is visited ``epochs`` times in batches of B, each visit moving theta
    by lr / B times its gradient: lr * epochs * |D_k| / B is the step size a cluster contributed to
    training; the fine-tune spends the configured fraction ``finetune_budget`` of it.
    """
    train, spec = config.train, config.attribute
    budget = spec.finetune_budget * train.lr * train.epochs * mean_cluster_size / train.batch_size
    return budget / spec.finetune_steps


def finetune_lr(config: ExperimentConfig, clustering: Clustering) -> float:
    """The configured eta, or the automatic one for this clustering's mean cluster size; the
    target's own lr under the paper's schedule."""
    if config.attribute.schedule == "paper":
        return config.train.lr
    mean_size = float(clustering.sizes().double().mean())
    return config.attribute.finetune_lr or auto_finetune_lr(config, mean_size)


def finetune_steps(config: ExperimentConfig, target: Target) -> int:
    """T: the configured steps, or tau (one per trajectory interval) under the paper's schedule."""
    if config.attribute.schedule == "paper":
        return len(target.trajectory) - 1
    return config.attribute.finetune_steps


def cluster_weights(target: Target, data: DataSplits, clustering: Clustering, synset: Synset,
                    scale: str, shared: SharedGradients | None = None) -> Tensor | None:
    """Per-cluster loss weights [K] of the fine-tune (``cluster_scale``), None for uniform.

    ``real_norm``: w_k = |D_k| ||g_real_k|| / (mean |D| ||g_syn_k||), both gradients at theta_tau
    (g_real_k of the cluster's mean loss, g_syn_k of its synthetic images' mean loss). With the auto
    eta (scaled by the mean cluster size), the first fine-tune step on cluster k alone then has the
    norm ``finetune_budget / T`` times that of k's undo step lr * epochs * |D_k| / B * g_real_k."""
    if scale == "none":
        return None
    device = next(target.model.parameters()).device
    params = model_params(target.model)
    on_device = dataclasses.replace(clustering, cluster_ids=clustering.cluster_ids.to(device))
    real = RealGradients(target, data.train_x.to(device), data.train_y.to(device), on_device, None,
                         torch.Generator(), shared)(len(target.trajectory) - 1)  # theta_tau, as distill's
    synthetic = synthetic_gradients(target.model, params, synset)
    sizes = clustering.sizes().to(device=device, dtype=data.train_x.dtype)
    ratio = flat_rows(real).norm(dim=1) / flat_rows(synthetic).norm(dim=1).clamp_min(1e-12)
    return (sizes / sizes.mean() * ratio).cpu()


def synthetic_gradients(model: nn.Module, params: dict[str, Tensor], synset: Synset) -> dict[str, Tensor]:
    """Gradient of each cluster's mean synthetic loss at ``params`` (detached): {name: [K, ...]}."""
    device = next(iter(params.values())).device
    per_image = per_sample_gradients(model, params, synset.images.to(device), synset.targets.to(device))
    return segment_mean({name: g.detach() for name, g in per_image.items()},
                        synset.cluster_ids.to(device), synset.n_clusters)


class SynsetUnlearner:
    """Approximate retraining-without-clusters by fine-tuning theta_tau on their synthetic images."""

    def __init__(self, model: nn.Module, synset: Synset, *, steps: int, lr: float,
                 chunk: int = 128, weights: Tensor | None = None) -> None:
        self.model, self.steps, self.lr, self.chunk = model, steps, lr, chunk
        parameter = next(model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype  # synsets follow the network's dtype
        self.params = model_params(model)
        self.images = synset.images.to(self.device, self.dtype)
        targets = synset.targets  # hard int64 [K * ipc] or soft [K * ipc, L]
        self.labels = targets.to(self.device, self.dtype if targets.is_floating_point() else None)
        self.n_clusters = synset.n_clusters
        self.ipc = len(synset.labels) // synset.n_clusters
        # per-cluster loss weights [K] (cluster_scale); 1 for every cluster when None
        weights = torch.ones(self.n_clusters) if weights is None else weights
        self.weights = weights.to(self.device, self.dtype)
        self.finetunes = 0  # how many masks were fine-tuned (the cost the paper counts)

    def _batch(self, keep: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Synthetic images of each mask's removed clusters, padded to one length with weight 0.

        keep bool [B, K] -> images [B, m, C, H, W], labels [B, m], weights [B, m]."""
        removed = ~keep.to(self.device)
        per_row = removed.sum(1)
        width = max(int(per_row.max()) if len(keep) else 0, 1)
        order = torch.argsort(removed.to(torch.int8), dim=1, descending=True, stable=True)[:, :width]
        valid = torch.arange(width, device=self.device)[None, :] < per_row[:, None]
        offsets = torch.arange(self.ipc, device=self.device)
        rows = (order[:, :, None] * self.ipc + offsets).flatten(1)  # [B, width * ipc]
        per_cluster = valid.to(self.images.dtype) * self.weights[order]
        weights = per_cluster.repeat_interleave(self.ipc, 1) / self.ipc
        return self.images[rows], self.labels[rows], weights

    def finetuned(self, keep: Tensor) -> dict[str, Tensor]:
        """Stacked parameters [B, ...] of theta_tau fine-tuned for every mask of ``keep`` [B, K]."""
        images, labels, weights = self._batch(keep)
        self.finetunes += len(keep)
        if self.device.type == "cpu" and images[0].numel() >= LOOP_MIN_PIXELS:
            used = weights > 0  # a mask that removes nothing keeps theta_tau (zero gradient)
            rows = [finetune_one(self.model, self.params, images[b][used[b]], labels[b][used[b]],
                                 weights[b][used[b]], steps=self.steps, lr=self.lr) if used[b].any()
                    else self.params for b in range(len(keep))]
            return {name: torch.stack([row[name] for row in rows]) for name in self.params}
        return finetune_batched(self.model, self.params, images, labels, weights, steps=self.steps,
                                lr=self.lr)

    def chunk_size(self, keep: Tensor) -> int:
        """Models per vectorized call: at most ``chunk``, and at most ``IMAGES_PER_CALL`` synthetic
        images in flight (on 2 CPU cores, 101 models x 20 removed clusters ran 3.7x faster in
        chunks of 8 than all at once: smaller working sets stay in cache)."""
        largest = max(int((~keep).sum(1).max()) if len(keep) else 1, 1) * self.ipc
        return max(1, min(self.chunk, IMAGES_PER_CALL // largest))

    def __call__(self, keep: Tensor, queries: Tensor) -> Tensor:
        """Probabilities [B, n_q, classes] of every fine-tuned model on queries [n_q, ...]."""
        outputs = []
        queries = queries.to(self.device, self.dtype)
        chunk = self.chunk_size(keep)
        for start in range(0, len(keep), chunk):
            stacked = self.finetuned(keep[start:start + chunk])
            with torch.no_grad():
                outputs.append(to_probabilities(predict_batched(self.model, stacked, queries)).cpu())
        return torch.cat(outputs)


@METHODS.register("ddm")
class DDMAttributor(RemovalPredictor):
    """Distilled Datamodel: reverse-gradient-matched synset + linear datamodel over perturbations."""

    name = "ddm"
    mode = "reverse"
    direction = "descent"  # the online fine-tune: gradient descent on the synset's loss (paper Eq. 9)

    def fit(self, target: Target, data: DataSplits, clustering: Clustering) -> None:
        super().fit(target, data, clustering)
        self.data = data
        self.forget()
        self.synset = get_synset(self.config, target, data, clustering, mode=self.mode,
                                 resolver=self.resolver, progress=self.progress)
        self.unlearner = self._unlearner(self.synset, clustering)
        self.resolver.forget("unlearner", owner=self)

    def _unlearner(self, synset: Synset, clustering: Clustering) -> SynsetUnlearner:
        spec = self.config.attribute
        device = next(self.target.model.parameters()).device
        shared = shared_gradients(self.resolver, self.target, clustering, device)
        weights = cluster_weights(self.target, self.data, clustering, synset, spec.cluster_scale, shared)
        if self.direction == "ascent":  # every cluster's loss weight negated: theta climbs its synset's loss
            weights = -(torch.ones(clustering.n_clusters) if weights is None else weights)
        return SynsetUnlearner(self.target.model, synset, steps=finetune_steps(self.config, self.target),
                               lr=finetune_lr(self.config, clustering), chunk=spec.finetune_chunk,
                               weights=weights)

    def scores(self, queries: Queries, objective: str) -> Tensor:
        """The datamodel's scores, or the hierarchical search's (``hierarchical``, per-query
        objectives only: a global objective has no per-query class to search)."""
        if self.config.attribute.hierarchical and objective not in GLOBAL:
            return self.hierarchical(queries, objective).scores
        return super().scores(queries, objective)

    def perturbations(self) -> Tensor:
        """The perturbation set P: keep-masks bool [|P|, K] (row 0 keeps everything)."""
        spec, n_clusters = self.config.attribute, self.clustering.n_clusters
        return sample_perturbations(n_clusters, spec.n_perturbations or n_clusters,
                                    removal_rate=spec.removal_rate, seed=spec.attribute_seed,
                                    include_singles=spec.include_singles)

    def datamodel(self, queries: Queries) -> Datamodel:
        """W [n_q, K, classes] and b fitted on fine-tuned outputs over the perturbation set."""
        keep = self.perturbations()
        outputs = self.unlearner(keep, queries.images)
        beta = perturbation_weights(keep, self.config.attribute.beta)
        return fit_datamodel(keep, outputs, beta, self.config.attribute.ridge)

    def predict_removals(self, queries: Queries) -> Tensor:
        return self.datamodel(queries).single_removals()

    def predict_masks(self, keep: Tensor, queries: Queries) -> Tensor:
        """The datamodel's own prediction for joint removals, ``W p + b`` (Eq. 7), not the singles
        added up (the two differ by W's fit residual at the full mask)."""
        return self.datamodel(queries).predict(keep).to(torch.float64)

    def scores_of_singles(self, queries: Queries, objective: str) -> Tensor:
        """Scores [K, n_q] straight from the K single-cluster fine-tunes (the flat search; no W fit)."""
        singles = ~torch.eye(self.clustering.n_clusters, dtype=torch.bool)
        outputs = self.unlearner(singles, queries.images).to(torch.float64)
        return get_objective(objective)(outputs, self.reference(queries), queries.labels)

    def class_unlearner(self) -> SynsetUnlearner:
        """Unlearner over the class-level synset (K = L), distilled on first use and cached; this
        method keeps it (the resolver's ``unlearner`` memory stage) until it is fitted again."""
        def build() -> SynsetUnlearner:
            classes = self.clustering.class_level()
            synset = get_synset(self.config, self.target, self.data, classes, mode=self.mode,
                                resolver=self.resolver, progress=self.progress)
            return self._unlearner(synset, classes)

        return self.resolver.memo("unlearner", None, {"target": id(self.target)}, build, owner=self)

    def hierarchical(self, queries: Queries, objective: str) -> HierarchicalResult:
        """Locate a cluster per query with L class deletions, then C cluster deletions (§6.2)."""
        classes = self.class_unlearner()
        return hierarchical_search(lambda keep: classes(keep, queries.images),
                                   lambda keep: self.unlearner(keep, queries.images),
                                   self.clustering.n_classes, self.clustering.clusters_per_class,
                                   self.reference(queries), queries.labels, get_objective(objective))

    def unlearn_all(self) -> nn.Module:
        """theta_tau fine-tuned on the whole synset (every cluster removed): the paper's Table 4."""
        stacked = self.unlearner.finetuned(torch.zeros(1, self.clustering.n_clusters, dtype=torch.bool))
        model = copy.deepcopy(self.target.model)
        with torch.no_grad():
            for name, param in model.named_parameters():
                param.copy_(stacked[name][0])
        return model.eval()


@METHODS.register("ddm_match")
class DDMMatchAttributor(DDMAttributor):
    """DDM's online stage on an ordinary gradient-matching synset (the paper's DDM-match)."""

    name = "ddm_match"
    mode = "match"


@METHODS.register("ddm_match_ascent")
class DDMMatchAscentAttributor(DDMMatchAttributor):
    """DDM-match with gradient *ascent* on its synset. A forward-matched synset's gradient points
    where its cluster's does, so descent on it re-adds the cluster to first order (the paper's
    ablation as written, ``ddm_match``); ascent takes it away, which is what a removal means. Both
    rows are kept; neither is DDM's default (``ddm``, reverse matching with descent)."""

    name = "ddm_match_ascent"
    direction = "ascent"


@dataclass(frozen=True)
class HierarchicalResult:
    classes: Tensor  # int64 [n_q]: class located first
    clusters: Tensor  # int64 [n_q]: global cluster id located within that class
    finetunes: int  # fine-tunes spent: L + C * (number of distinct located classes)
    # [K, n_q]: every cluster scored by its class's deletion, the located class's clusters by their
    # own deletions and lifted above all others, so scores.argmax(0) == clusters
    scores: Tensor | None = None


def hierarchical_search(evaluate_classes: Evaluator, evaluate_clusters: Evaluator, n_classes: int,
                        clusters_per_class: int, reference: Tensor, labels: Tensor,
                        objective: Objective) -> HierarchicalResult:
    """Paper §6.2: L single-class deletions pick a class, then C single-cluster deletions inside it.

    ``evaluate_classes`` takes keep-masks [B, L], ``evaluate_clusters`` keep-masks [B, L * C];
    both return probabilities [B, n_q, classes]. reference [n_q, classes]; labels int64 [n_q].
    """
    class_scores = objective(evaluate_classes(~torch.eye(n_classes, dtype=torch.bool)), reference, labels)
    classes = class_scores.argmax(0)
    clusters = torch.empty_like(classes)
    scores = class_scores.to(torch.float64).repeat_interleave(clusters_per_class, 0)  # [K, n_q]
    lift = scores.max(0).values - scores.min(0).values + 1  # above every class score, per query
    finetunes = n_classes
    for label in classes.unique().tolist():
        queries = (classes == label).nonzero().flatten()
        keep = torch.ones(clusters_per_class, n_classes * clusters_per_class, dtype=torch.bool)
        first = label * clusters_per_class
        keep[torch.arange(clusters_per_class), first + torch.arange(clusters_per_class)] = False
        outputs = evaluate_clusters(keep)[:, queries]
        within = objective(outputs, reference[queries], labels[queries]).to(torch.float64)
        clusters[queries] = first + within.argmax(0)
        rows = slice(first, first + clusters_per_class)
        scores[rows, queries] = (scores.max(0).values[queries] + lift[queries]
                                 + within - within.min(0).values)
        finetunes += clusters_per_class
    return HierarchicalResult(classes, clusters, finetunes, scores)
