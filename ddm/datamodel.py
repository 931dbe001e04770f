"""The linear datamodel of DDM's online stage (paper §3.3, Eq. 7-8).

For each query, outputs after removing clusters are modelled as ``y(p) ~= W^T p + b`` over
cluster-inclusion vectors ``p in {0,1}^K`` (``p_k = 0``: cluster k removed), fitted by
beta-weighted least squares over a perturbation set P. Everything here is plain tensor algebra, so the
golden tests can check it on a planted linear model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ddm.config import WEIGHT_SCHEMES
from ddm.errors import ConfigError, DivergedError
from ddm.objectives import Objective


def sample_perturbations(n_clusters: int, n_random: int, *, removal_rate: float, seed: int,
                         include_full: bool = True, include_singles: bool = False) -> Tensor:
    """Keep-masks bool [|P|, K] (True = cluster kept).

    ``n_random`` rows drop each cluster independently with probability ``removal_rate`` (a row that
    would drop nothing drops one random cluster instead, so no fine-tune is wasted). ``include_full``
    prepends the all-kept row: its outputs are the target's own, so it costs no fine-tune and, with
    ``n_random = K``, makes the K+1 unknowns (W and b) determined. ``include_singles`` appends the K
    single-cluster deletions. The set is redrawn (deterministically) until its design matrix has
    full rank, so W and b are identifiable whenever |P| >= K + 1.
    """
    if not 0 < removal_rate < 1:
        raise ConfigError(f"removal_rate must be in (0, 1), got {removal_rate}")
    generator = torch.Generator().manual_seed(seed)
    for _ in range(MAX_REDRAWS):
        rows = [_random_rows(n_clusters, n_random, removal_rate, generator)]
        if include_full:
            rows.insert(0, torch.ones(1, n_clusters, dtype=torch.bool))
        if include_singles:
            rows.append(~torch.eye(n_clusters, dtype=torch.bool))
        keep = torch.cat(rows)
        if _design_rank(keep) == min(len(keep), n_clusters + 1):
            return keep
    raise ConfigError(f"could not draw a full-rank perturbation set of {n_random} rows for "
                      f"{n_clusters} clusters; use more perturbations or another removal_rate")


MAX_REDRAWS = 100  # a random 0/1 design is singular now and then when |P| ~ K; redraw it


def _random_rows(n_clusters: int, n_rows: int, removal_rate: float,
                 generator: torch.Generator) -> Tensor:
    keep = torch.rand(n_rows, n_clusters, generator=generator) >= removal_rate
    untouched = keep.all(1).nonzero().flatten()
    forced = torch.randint(0, n_clusters, (len(untouched),), generator=generator)
    keep[untouched, forced] = False
    return keep


def _design_rank(keep: Tensor) -> int:
    """Rank of the least-squares design [p, 1]."""
    design = torch.cat([keep.to(torch.float64), torch.ones(len(keep), 1, dtype=torch.float64)], 1)
    return int(torch.linalg.matrix_rank(design))


def perturbation_weights(keep: Tensor, scheme: str = "inverse") -> Tensor:
    """beta_p from the number of removed clusters of each row of ``keep`` [|P|, K] -> [|P|].

    ``inverse`` (default) weighs a perturbation by 1/(number removed), favouring the few-removal
    perturbations closest to the single-cluster deletions the objectives ask about; ``count`` by the
    number removed; ``uniform`` equally. The all-kept row gets the largest weight present.
    """
    removed = (~keep).sum(1).to(torch.float64)
    if scheme == "uniform":
        return torch.ones_like(removed)
    if scheme == "inverse":
        return 1.0 / removed.clamp_min(1.0)
    if scheme == "count":
        return removed.clamp_min(1.0)
    raise ConfigError(f"unknown weight scheme {scheme!r}; choose one of: {', '.join(WEIGHT_SCHEMES)}")


@dataclass(frozen=True)
class Datamodel:
    """Fitted attribution matrices: ``weights`` [n_queries, K, n_outputs], ``bias`` [n_queries, n_outputs]."""

    weights: Tensor
    bias: Tensor

    def predict(self, keep: Tensor) -> Tensor:
        """Outputs for keep-masks [B, K] -> [B, n_queries, n_outputs]."""
        p = keep.to(self.weights.dtype)
        return torch.einsum("bk,qko->bqo", p, self.weights) + self.bias

    def single_removals(self) -> Tensor:
        """Predicted outputs with each single cluster removed -> [K, n_queries, n_outputs]."""
        full = self.weights.sum(1) + self.bias  # [Q, O]: nothing removed
        return full.unsqueeze(0) - self.weights.permute(1, 0, 2)


def fit_datamodel(keep: Tensor, outputs: Tensor, beta: Tensor | None = None,
                  ridge: float = 0.0) -> Datamodel:
    """beta-weighted least squares of Eq. 8 for every query at once.

    keep bool [|P|, K]; outputs [|P|, n_queries, n_outputs]; beta [|P|] (default 1);
    ``ridge`` adds ridge * ||W||^2 (not on the bias). Solved in float64.
    """
    n_rows, n_clusters = keep.shape
    if outputs.shape[0] != n_rows:
        raise ValueError(f"{n_rows} perturbations but outputs for {outputs.shape[0]}")
    if not torch.isfinite(outputs).all():
        raise DivergedError("non-finite fine-tune outputs: cannot fit the datamodel (lower finetune_lr or "
                            "finetune_budget)")
    design = torch.cat([keep.to(torch.float64), torch.ones(n_rows, 1, dtype=torch.float64)], 1)
    targets = outputs.to(torch.float64).reshape(n_rows, -1)
    beta = torch.ones(n_rows, dtype=torch.float64) if beta is None else beta.to(torch.float64)
    gram = design.T @ (beta[:, None] * design)
    gram[:n_clusters, :n_clusters] += ridge * torch.eye(n_clusters, dtype=torch.float64)
    rhs = design.T @ (beta[:, None] * targets)
    solution = torch.linalg.lstsq(gram, rhs).solution  # min-norm when under-determined
    queries, n_outputs = outputs.shape[1:]
    weights = solution[:n_clusters].reshape(n_clusters, queries, n_outputs).permute(1, 0, 2)
    bias = solution[n_clusters].reshape(queries, n_outputs)
    return Datamodel(weights.contiguous(), bias)


def cluster_scores(datamodel: Datamodel, reference: Tensor, labels: Tensor,
                   objective: Objective) -> Tensor:
    """Objective of each predicted single-cluster removal -> [K, n_queries] (or [K, 1] for global
    objectives). ``reference`` [n_queries, C] target probabilities; ``labels`` int64 [n_queries]."""
    predicted = datamodel.single_removals().to(reference.dtype)
    return objective(predicted, reference, labels)
