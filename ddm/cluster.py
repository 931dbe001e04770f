"""Training clusters: K = L * C clusters, C per class (paper §6.1).

Cluster ``k`` belongs to class ``k // C``; ``cluster_ids`` gives every training sample its cluster.
``kmeans`` runs scikit-learn's k-means per class on embeddings; ``sequential`` cuts each class into C
consecutive chunks by training-set order (the paper's "DDM w/o cluster"). The hierarchical view is
the same samples at two levels: classes (K = L, ids = labels) and clusters (K = L * C).
Pure computation: ``ddm.stages.get_clustering`` caches it (and trains the network it embeds with).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from torch import Tensor

from ddm.config import ExperimentConfig
from ddm.data import DataSplits
from ddm.errors import ConfigError, DataError
from ddm.train import predict

PCA_DIMS = 32  # pixel embedding: enough components to separate digit styles, cheap for k-means
EXTRACTOR_SEED_OFFSET = 1  # the extractor is the target's architecture trained from another seed


@dataclass(frozen=True)
class Clustering:
    """Cluster assignment of the training set.

    cluster_ids int64 [N] in [0, K); labels int64 [N]; centroids [K, D] (the config's precision) in the
    embedding space the clusters were made in (used by the clustering-similarity baseline).
    """

    cluster_ids: Tensor
    labels: Tensor
    n_classes: int
    clusters_per_class: int
    centroids: Tensor

    @property
    def n_clusters(self) -> int:
        return self.n_classes * self.clusters_per_class

    def digest(self) -> str:
        """A digest of the grouping (its cluster ids and K): what keys the synsets and influence
        tensors distilled from it apart from those of another grouping of the same config."""
        blob = self.cluster_ids.cpu().numpy().tobytes() + str(self.n_clusters).encode()
        return hashlib.sha256(blob).hexdigest()[:24]

    def sizes(self) -> Tensor:
        return torch.bincount(self.cluster_ids, minlength=self.n_clusters)

    def members(self, cluster: int) -> Tensor:
        """Training rows of ``cluster``."""
        return (self.cluster_ids == cluster).nonzero().flatten()

    def cluster_class(self) -> Tensor:
        """Class of every cluster: int64 [K]."""
        return torch.arange(self.n_clusters) // self.clusters_per_class

    def class_level(self) -> Clustering:
        """The same samples with one cluster per class (the hierarchy's top level, K = L)."""
        centroids = torch.stack([self.centroids[self.cluster_class() == c].mean(0)
                                 for c in range(self.n_classes)])
        return Clustering(self.labels.clone(), self.labels, self.n_classes, 1, centroids)


def check_cluster_sizes(labels: Tensor, n_classes: int, clusters_per_class: int) -> None:
    """C clusters per class need at least C samples in every class."""
    if clusters_per_class < 1:
        raise ConfigError(f"clusters_per_class must be >= 1, got {clusters_per_class}")
    counts = torch.bincount(labels, minlength=n_classes)
    smallest = int(counts.argmin())
    if counts[smallest] < clusters_per_class:
        raise DataError(f"clusters_per_class={clusters_per_class} exceeds the {int(counts[smallest])} "
                        f"training samples of class {smallest}; use fewer clusters or more data")


def sequential_clusters(labels: Tensor, n_classes: int, clusters_per_class: int) -> Tensor:
    """Each class's samples, in training-set order, cut into C nearly equal consecutive chunks."""
    check_cluster_sizes(labels, n_classes, clusters_per_class)
    cluster_ids = torch.empty_like(labels)
    for label in range(n_classes):
        rows = (labels == label).nonzero().flatten()
        for chunk, part in enumerate(np.array_split(rows.numpy(), clusters_per_class)):
            cluster_ids[torch.from_numpy(part)] = label * clusters_per_class + chunk
    return cluster_ids


def kmeans_clusters(embeddings: Tensor, labels: Tensor, n_classes: int, clusters_per_class: int,
                    seed: int) -> Tensor:
    """k-means with C centres inside every class. embeddings [N, D] -> cluster ids int64 [N]."""
    check_cluster_sizes(labels, n_classes, clusters_per_class)
    cluster_ids = torch.empty_like(labels)
    features = embeddings.double().numpy()
    for label in range(n_classes):
        rows = (labels == label).nonzero().flatten()
        kmeans = KMeans(n_clusters=clusters_per_class, n_init=10, random_state=seed)
        assignment = kmeans.fit_predict(features[rows.numpy()])
        cluster_ids[rows] = torch.from_numpy(assignment).long() + label * clusters_per_class
    return cluster_ids


def centroids_of(embeddings: Tensor, cluster_ids: Tensor, n_clusters: int) -> Tensor:
    """Mean embedding of every cluster: [N, D] -> [K, D]."""
    totals = torch.zeros(n_clusters, embeddings.shape[1], dtype=embeddings.dtype).index_add_(0, cluster_ids,
                                                                                   embeddings)
    return totals / torch.bincount(cluster_ids, minlength=n_clusters).clamp_min(1)[:, None]


def pixel_embeddings(images: Tensor, seed: int) -> Tensor:
    """PCA of flattened pixels: [N, C, H, W] -> [N, min(32, N, C*H*W)], in the images' dtype."""
    flat = images.reshape(len(images), -1).double().numpy()
    dims = min(PCA_DIMS, *flat.shape)
    return torch.from_numpy(PCA(n_components=dims, random_state=seed).fit_transform(flat)).to(images.dtype)


def extractor_config(config: ExperimentConfig) -> ExperimentConfig:
    """The feature extractor: the target's recipe trained from a different seed, on the same data."""
    train = dataclasses.replace(config.train,
                                seed=config.train.seed + EXTRACTOR_SEED_OFFSET + config.cluster.cluster_seed)
    return dataclasses.replace(config, train=train)


def embed(model: torch.nn.Module, images: Tensor, batch_size: int = 1024) -> Tensor:
    """Features before the classifier head for images [N, ...] -> [N, D] on the CPU."""
    return predict(_EmbedView(model), images, batch_size)


class _EmbedView(torch.nn.Module):
    """Wraps a Classifier so ``predict`` calls ``embed`` instead of ``forward``."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model.embed(x)


def compute_clustering(config: ExperimentConfig, data: DataSplits,
                       network: torch.nn.Module | None) -> Clustering:
    """The clustering ``config.cluster`` asks for; ``network`` embeds the images (the target or the
    extractor) unless the embedding is ``pixels``."""
    spec, labels = config.cluster, data.train_y
    n_classes, per_class = data.info.num_classes, spec.clusters_per_class
    if spec.embedding == "pixels":
        embeddings = pixel_embeddings(data.train_x, spec.cluster_seed)
    else:
        if network is None:
            raise ValueError(f"the {spec.embedding!r} embedding needs its network")
        embeddings = embed(network, data.train_x)
    if spec.cluster_method == "sequential":
        cluster_ids = sequential_clusters(labels, n_classes, per_class)
    else:
        cluster_ids = kmeans_clusters(embeddings, labels, n_classes, per_class, spec.cluster_seed)
    centroids = centroids_of(embeddings, cluster_ids, n_classes * per_class)
    return Clustering(cluster_ids, labels.clone(), n_classes, per_class, centroids)
