"""DDM's diagnostics API: what a benchmark may use to look inside DDM's steps.

The attribution contract (``ddm.attributor``: ``Attributor`` and its capabilities) is what every
method offers. This module is the rest of DDM's public surface, for the tools that measure *where*
its signal is lost (``bench/ladder.py``), what distillation costs (``bench/timings.py``) and how far
it moved the matching loss (``ddm-bench distill``). Nothing under ``bench/`` imports
``ddm.attribute``, ``ddm.distill`` or ``ddm.datamodel``; what they need is named here, so those
modules can change behind it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ddm.attribute import DDMAttributor, synthetic_gradients
from ddm.cluster import Clustering
from ddm.config import ExperimentConfig
from ddm.data import DataSplits
from ddm.distill import Synset, all_pairs, evaluate_matching, init_synset, initial_label_logits
from ddm.resolver import Resolver
from ddm.stages import get_synset
from ddm.target import Target

__all__ = ["DDMAttributor", "MatchingReport", "Synset", "distilled_pairs", "get_synset", "matching_report",
           "synthetic_gradients", "undistilled_synset"]


def undistilled_synset(config: ExperimentConfig, data: DataSplits, clustering: Clustering) -> Synset:
    """The synset distillation starts from: ``ipc`` random real images per cluster with their hard
    labels, drawn with the config's distillation seed (what "no distillation" would fine-tune on)."""
    generator = torch.Generator().manual_seed(config.distill.distill_seed)
    images, labels, cluster_ids = init_synset(data.train_x, data.train_y, clustering, config.distill.ipc,
                                              generator)
    return Synset(images, labels, cluster_ids, clustering.n_clusters, [], "init", 0.0)


def distilled_pairs(attributor: DDMAttributor) -> list[tuple[int, int]]:
    """Every (real, synthetic) checkpoint pair ``attributor``'s synset was matched over."""
    spec = attributor.config.distill
    return all_pairs(attributor.synset.mode, spec.pairing, len(attributor.target.trajectory),
                     spec.step_length)


@dataclass(frozen=True)
class MatchingReport:
    """One synset's distillation: its size, steps, time and the all-pairs matching loss it moved."""

    level: str  # "cluster" or "class"
    mode: str  # "reverse" or "match"
    n_clusters: int
    n_images: int
    steps: int
    seconds: float
    train_seconds: float  # the target's own training time, for the ratio
    loss_before: float
    loss_after: float


def matching_report(config: ExperimentConfig, target: Target, data: DataSplits, grouping: Clustering,
                    level: str, mode: str = "reverse", resolver: Resolver | None = None) -> MatchingReport:
    """Distil (or load) the synset of ``grouping`` and measure the matching loss over every admissible
    checkpoint pair before (its initial real images and labels) and after distillation."""
    synset = get_synset(config, target, data, grouping, mode=mode, resolver=resolver or Resolver())
    initial = undistilled_synset(config, data, grouping)
    initial_targets: Tensor | None = None  # the clusters' hard labels
    if config.distill.synset_labels == "soft":
        logits = initial_label_logits(synset.labels, data.info.num_classes, config.distill.soft_label_init)
        initial_targets = logits.to(initial.images.dtype).softmax(-1)
    before = evaluate_matching(target, data, grouping, initial.images, config.distill, mode, initial_targets)
    after = evaluate_matching(target, data, grouping, synset.images, config.distill, mode, synset.targets)
    return MatchingReport(level, mode, grouping.n_clusters, len(synset.labels), len(synset.losses),
                          synset.seconds, target.meta["train_seconds"], before, after)
