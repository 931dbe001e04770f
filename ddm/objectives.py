"""Evaluation objectives (paper §4.1 Eq. 10, §9.2 Eq. 14, §9.3 Eq. 15) and their registry.

An objective scores the outputs of a model with some training data removed against the target's
outputs. Every objective is a function

    objective(removed, reference, labels) -> scores

with ``removed`` class probabilities [..., n_queries, n_classes] (any leading batch dims, e.g. one
row per candidate cluster), ``reference`` the target's probabilities [n_queries, n_classes], and
``labels`` int64 [n_queries]. It returns [..., n_queries] (per-query objectives) or [..., 1]
(global objectives summed over the queries, e.g. a validation set). A method locates the cluster
whose removal gives the LARGEST objective; ``dist3`` is built so that this is the least influential.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ddm.registry import Registry

Objective = Callable[[Tensor, Tensor, Tensor], Tensor]
OBJECTIVES: Registry[Objective] = Registry("objective")
EPS = 1e-12  # floor on probabilities before the log, so a removed model's hard zero stays finite


def _check(removed: Tensor, reference: Tensor, labels: Tensor) -> None:
    if removed.shape[-2:] != reference.shape or labels.shape != reference.shape[:1]:
        raise ValueError(f"shape mismatch: removed {tuple(removed.shape)}, reference "
                         f"{tuple(reference.shape)}, labels {tuple(labels.shape)}")


def _sq_dist(removed: Tensor, reference: Tensor) -> Tensor:
    return ((removed - reference) ** 2).sum(-1)


def _cross_entropy(removed: Tensor, labels: Tensor) -> Tensor:
    index = labels.expand(*removed.shape[:-1]).unsqueeze(-1)
    return -removed.gather(-1, index).squeeze(-1).clamp_min(EPS).log()


@OBJECTIVES.register("dist1")
def dist1(removed: Tensor, reference: Tensor, labels: Tensor) -> Tensor:
    """||y_removed - y_target||^2: how much removal moves the prediction (paper reports x100)."""
    _check(removed, reference, labels)
    return _sq_dist(removed, reference)


@OBJECTIVES.register("dist2")
def dist2(removed: Tensor, reference: Tensor, labels: Tensor) -> Tensor:
    """CE(y_removed, label): how much removal hurts being correct."""
    _check(removed, reference, labels)
    return _cross_entropy(removed, labels)


@OBJECTIVES.register("dist3")
def dist3(removed: Tensor, reference: Tensor, labels: Tensor) -> Tensor:
    """1 / (1 + ||y_removed - y_target||^2): largest for the LEAST influential cluster."""
    _check(removed, reference, labels)
    return 1.0 / (1.0 + _sq_dist(removed, reference))


@OBJECTIVES.register("validation")
def validation(removed: Tensor, reference: Tensor, labels: Tensor) -> Tensor:
    """Eq. 14: dist2 summed over a validation set (queries = the validation set) -> [..., 1]."""
    return dist2(removed, reference, labels).sum(-1, keepdim=True)


@OBJECTIVES.register("kd_kl")
def kd_kl(removed: Tensor, reference: Tensor, labels: Tensor) -> Tensor:
    """Eq. 15's transfer term: KL(reference || removed) per query, reference = teacher outputs."""
    _check(removed, reference, labels)
    log_ratio = reference.clamp_min(EPS).log() - removed.clamp_min(EPS).log()
    return (reference * log_ratio).sum(-1)


def get_objective(name: str) -> Objective:
    return OBJECTIVES[name]


def to_probabilities(logits: Tensor) -> Tensor:
    """The prediction y the objectives compare: softmax over the class dimension (last)."""
    return torch.softmax(logits, dim=-1)


# Objectives whose argmax is the LEAST influential cluster (similarity baselines flip their ranking).
LEAST_INFLUENCE = frozenset({"dist3"})
# Objectives summed over all queries: a method returns [K, 1] for them.
GLOBAL = frozenset({"validation"})
