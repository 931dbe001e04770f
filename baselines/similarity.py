"""Baselines that need no retraining and no gradients: random, prediction and visual similarity.

The similarity baselines rank clusters by how close they are to the query (closest = most
influential); for an objective that asks for the least influential cluster (``dist3``) the ranking
is flipped, and for a global objective (``validation``) closeness is averaged over the queries.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ddm.attributor import METHODS, Attributor, Queries
from ddm.cluster import Clustering, centroids_of, embed
from ddm.data import DataSplits
from ddm.objectives import GLOBAL, LEAST_INFLUENCE, to_probabilities
from ddm.target import Target
from ddm.train import predict


def _orient(closeness: Tensor, objective: str) -> Tensor:
    """closeness [K, n_q] -> scores for ``objective`` ([K, 1] when it is global)."""
    scores = -closeness if objective in LEAST_INFLUENCE else closeness
    return scores.mean(1, keepdim=True) if objective in GLOBAL else scores


@METHODS.register("random")
class RandomAttributor(Attributor):
    """A seeded uniformly random score per cluster and query."""

    name = "random"

    def scores(self, queries: Queries, objective: str) -> Tensor:
        generator = torch.Generator().manual_seed(self.config.attribute.attribute_seed)
        columns = 1 if objective in GLOBAL else len(queries)
        return torch.rand(self.clustering.n_clusters, columns, generator=generator, dtype=torch.float64)


class _CentroidAttributor(Attributor):
    """Closeness of the query's representation to each cluster's mean representation."""

    def represent(self, images: Tensor) -> Tensor:
        raise NotImplementedError

    def fit(self, target: Target, data: DataSplits, clustering: Clustering) -> None:
        super().fit(target, data, clustering)
        features = self.represent(data.train_x)
        self.centroids = centroids_of(features, clustering.cluster_ids, clustering.n_clusters)

    def scores(self, queries: Queries, objective: str) -> Tensor:
        distances = torch.cdist(self.centroids.double(), self.represent(queries.images).double())
        return _orient(-distances, objective)


@METHODS.register("predict")
class PredictAttributor(_CentroidAttributor):
    """Clusters whose mean predicted class distribution is closest to the query's prediction."""

    name = "predict"

    def represent(self, images: Tensor) -> Tensor:
        return to_probabilities(predict(self.target.model, images))


@METHODS.register("cluster")
class ClusterAttributor(_CentroidAttributor):
    """Clusters whose embedding centroid (the target's features) is closest to the query's."""

    name = "cluster"

    def represent(self, images: Tensor) -> Tensor:
        return embed(self.target.model, images)
