"""Clusters: sequential chunks, per-class k-means, hierarchy, errors, cache."""

import dataclasses

import pytest
import torch

from ddm.cluster import (
    Clustering,
    centroids_of,
    kmeans_clusters,
    sequential_clusters,
)
from ddm.config import with_overrides
from ddm.errors import ConfigError, DataError
from ddm.resolver import Resolver
from ddm.stages import get_clustering
from tests.conftest import TINY

LABELS = torch.tensor([0, 1, 0, 0, 1, 1, 0, 1, 0, 1])


def test_sequential_cuts_each_class_into_consecutive_chunks():
    ids = sequential_clusters(LABELS, 2, 2)
    # class 0 rows 0,2,3,6,8 -> chunks [0,2,3] [6,8]; class 1 rows 1,4,5,7,9 -> [1,4,5] [7,9]
    assert ids.tolist() == [0, 2, 0, 0, 2, 2, 1, 3, 1, 3]


def test_kmeans_recovers_planted_groups_within_each_class():
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
    group = torch.tensor([0, 1] * 10)
    labels = torch.tensor([0] * 10 + [1] * 10)
    embeddings = centres[group] + 0.1 * torch.randn(20, 2, generator=generator)
    ids = kmeans_clusters(embeddings, labels, 2, 2, seed=0)
    for label in (0, 1):
        rows = labels == label
        assert set((ids[rows] // 2).tolist()) == {label}
        same = ids[rows][group[rows] == 0]
        assert len(same.unique()) == 1  # one planted group -> one cluster
        assert not set(same.tolist()) & set(ids[rows][group[rows] == 1].tolist())


def test_more_clusters_than_a_class_has_samples_is_a_clear_error():
    with pytest.raises(DataError, match="class 1"):
        sequential_clusters(torch.tensor([0, 0, 0, 1]), 2, 2)


def test_centroids_by_hand():
    embeddings = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 5.0]])
    out = centroids_of(embeddings, torch.tensor([0, 0, 1]), 3)
    assert out.tolist() == [[2.0, 0.0], [0.0, 5.0], [0.0, 0.0]]


def test_class_level_is_the_labels():
    clustering = Clustering(sequential_clusters(LABELS, 2, 2), LABELS, 2, 2, torch.zeros(4, 3))
    top = clustering.class_level()
    assert top.n_clusters == 2 and torch.equal(top.cluster_ids, LABELS)
    assert torch.equal(clustering.cluster_class(), torch.tensor([0, 0, 1, 1]))
    assert top.digest() != clustering.digest()  # its synsets and influence tensors are its own


def test_get_clustering_covers_every_sample_and_is_cached(tiny_resolver, digits_data):
    first = get_clustering(TINY, digits_data, resolver=tiny_resolver, device="cpu", progress=False)
    assert first.n_clusters == 30
    assert torch.equal(first.cluster_ids // 3, digits_data.train_y)
    assert (first.sizes() > 0).all() and first.sizes().sum() == len(digits_data.train_y)
    again = get_clustering(TINY, digits_data, resolver=Resolver(tiny_resolver.root), device="cpu",
                           progress=False)  # a fresh resolver: loaded from disk, not memoized
    assert again is not first and torch.equal(first.cluster_ids, again.cluster_ids)
    assert again.digest() == first.digest()


def test_sequential_and_kmeans_differ_and_key_differs(tiny_resolver, digits_data):
    kmeans = get_clustering(TINY, digits_data, resolver=tiny_resolver, device="cpu", progress=False)
    config = with_overrides(TINY, cluster_method="sequential")
    sequential = get_clustering(config, digits_data, resolver=tiny_resolver, device="cpu", progress=False)
    assert tiny_resolver.key("clusters", config) != tiny_resolver.key("clusters", TINY)
    assert not torch.equal(sequential.cluster_ids, kmeans.cluster_ids)


def test_extractor_embedding_trains_a_separate_network(tiny_resolver, digits_data, digits_target):
    config = with_overrides(TINY, embedding="extractor")
    clustering = get_clustering(config, digits_data, resolver=tiny_resolver, device="cpu", progress=False)
    assert clustering.centroids.shape == (30, digits_target.model.embed_dim)


def test_unknown_options_are_rejected_when_the_config_is_made():
    for bad in ({"cluster_method": "spectral"}, {"embedding": "clip"}):
        with pytest.raises(ConfigError, match="choose one of"):
            dataclasses.replace(TINY, cluster=dataclasses.replace(TINY.cluster, **bad))
