"""Judge attributions against exact retraining: the numbers of Tables 1/2 and the cluster-level LDS.

Plain functions over fitted attributors; the table modules call them and write results.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from baselines.exact import ExactAttributor, Retrainer, RetrainSpec
from ddm.attributor import Attributor, Queries, RemovalPredictor
from ddm.metrics import LocateScore, additive_prediction, lds, lds_masks, locate_score, true_class_margin
from ddm.objectives import get_objective
from ddm.pipeline import Stages


@dataclass
class Oracle:
    """Exact single-cluster retraining outputs for a query set (computed once, shared by methods)."""

    queries: Queries
    reference: Tensor  # [n_q, C] target probabilities
    removals: Tensor  # [K, n_q, C] exact probabilities without each cluster

    def exact(self, objective: str) -> Tensor:
        """Exact objective value of removing each cluster: [K, n_q] (or [K, 1])."""
        return get_objective(objective)(self.removals, self.reference, self.queries.labels)


def build_oracle(exact: ExactAttributor, queries: Queries) -> Oracle:
    return Oracle(queries, exact.reference(queries), exact.predict_removals(queries).to(torch.float64))


def score_method(attributor: Attributor, oracle: Oracle, objective: str) -> LocateScore:
    """Table-1/2 numbers of one method for one objective."""
    scores = attributor.attribute(oracle.queries, objective)
    return locate_score(scores, oracle.exact(objective))


def cluster_lds(stages: Stages, methods: dict[str, RemovalPredictor], queries: Queries, *,
                n_masks: int = 50, seed: int = 0, protocol: str = "same-seed",
                progress: bool | None = None) -> dict[str, float]:
    """Cluster-level LDS of every method: ``n_masks`` half-kept masks retrained exactly (cached)."""
    clustering, target = stages.clustering, stages.target
    masks = lds_masks(clustering.n_clusters, n_masks, seed)
    specs = [RetrainSpec(tuple(torch.isin(clustering.cluster_ids, (~mask).nonzero().flatten())
                               .nonzero().flatten().tolist()), protocol, target.config.train.seed)
             for mask in masks]
    retrainer = Retrainer(target, stages.data, stages.cache, progress=progress)
    device = next(target.model.parameters()).device
    actual = true_class_margin(retrainer.outputs(specs, queries.images.to(device)), queries.labels)
    scores = {}
    for name, method in methods.items():
        reference = method.reference(queries)
        predicted = additive_prediction(method.predict_removals(queries).double(), reference, masks)
        scores[name] = lds(true_class_margin(predicted.clamp(0, 1), queries.labels), actual)
    return scores
