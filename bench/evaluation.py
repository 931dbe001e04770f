"""Judge attributions against exact retraining: the numbers of Tables 1/2 and the cluster-level LDS.

Plain functions over fitted attributors; the table modules call them and write results.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from baselines.exact import ExactAttributor
from bench.base import RunContext
from ddm.attributor import Attributor, Queries, RemovalPredictor
from ddm.metrics import LocateScore, lds, locate_score, true_class_margin
from ddm.objectives import get_objective
from ddm.pipeline import Stages, select_queries


@dataclass
class Oracle:
    """Exact single-cluster retraining outputs for a query set (computed once, shared by methods)."""

    queries: Queries
    reference: Tensor  # [n_q, C] target probabilities
    removals: Tensor  # [K, n_q, C] exact probabilities without each cluster

    def exact(self, objective: str) -> Tensor:
        """Exact objective value of removing each cluster: [K, n_q] (or [K, 1])."""
        return get_objective(objective)(self.removals, self.reference, self.queries.labels)


def exact_oracle(ctx: RunContext, stages: Stages, seed: int) -> Oracle:
    """Exact single-cluster retraining of every cluster (cached, under the run's protocol), on this
    seed's query set."""
    return build_oracle(ctx.exact(stages), select_queries(stages.data, ctx.n_queries, ctx.query_seed(seed)))


def build_oracle(exact: ExactAttributor, queries: Queries) -> Oracle:
    return Oracle(queries, exact.reference(queries), exact.predict_removals(queries).to(torch.float64))


def score_method(attributor: Attributor, oracle: Oracle, objective: str) -> LocateScore:
    """Table-1/2 numbers of one method for one objective."""
    scores = attributor.attribute(oracle.queries, objective)
    return locate_score(scores, oracle.exact(objective))


def cluster_lds(methods: dict[str, RemovalPredictor], queries: Queries, masks: Tensor,
                actual: Tensor) -> dict[str, float]:
    """Cluster-level LDS of every method: the mean over queries of the Spearman correlation, across
    keep-masks [m, K], between the true-class margin each method predicts for the joint removal
    (:meth:`~ddm.attributor.RemovalPredictor.predict_masks`) and the one exact retraining gave
    (``actual``: probabilities [m, n_q, classes] of the masks retrained)."""
    margins = true_class_margin(actual.to(torch.float64), queries.labels)
    return {name: lds(true_class_margin(method.predict_masks(masks, queries).clamp(0, 1), queries.labels),
                      margins) for name, method in methods.items()}
