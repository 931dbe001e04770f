"""Simple baselines and the exact-retraining oracle behind the Attributor interface."""

import dataclasses

import pytest
import torch

from baselines.exact import (
    ExactAttributor,
    ExecutorConfig,
    OracleConfig,
    Retrainer,
    RetrainSpec,
    protocol_seeds,
    single_cluster_specs,
)
from baselines.similarity import ClusterAttributor, PredictAttributor, RandomAttributor
from ddm.attributor import Queries
from ddm.cache import CacheEntry
from ddm.config import with_overrides
from ddm.errors import ConfigError
from ddm.objectives import to_probabilities
from ddm.stages import get_clustering
from ddm.train import flat_params
from tests.conftest import TINY, retrained_entry

FEW = with_overrides(TINY, clusters_per_class=1)  # K = 10 clusters: one per class


@pytest.fixture(scope="module")
def clustering(tiny_resolver, digits_data):
    return get_clustering(FEW, digits_data, resolver=tiny_resolver, device="cpu", progress=False)


@pytest.fixture
def queries(digits_data):
    return Queries(digits_data.test_x[:4], digits_data.test_y[:4])


def fitted(method, digits_target, digits_data, clustering, tiny_resolver):
    attributor = method(FEW, resolver=tiny_resolver, progress=False)
    attributor.fit(digits_target, digits_data, clustering)
    return attributor


def test_random_is_seeded_and_shaped(digits_target, digits_data, clustering, tiny_resolver, queries):
    random = fitted(RandomAttributor, digits_target, digits_data, clustering, tiny_resolver)
    first = random.attribute(queries, "dist1")
    assert first.shape == (10, 4) and torch.equal(first, random.attribute(queries, "dist1"))
    assert random.attribute(queries, "validation").shape == (10, 1)


def test_predict_baseline_locates_the_cluster_with_the_same_prediction(
        digits_target, digits_data, clustering, tiny_resolver, queries):
    predict = fitted(PredictAttributor, digits_target, digits_data, clustering, tiny_resolver)
    predict.centroids = torch.eye(10)  # cluster k predicts class k with certainty
    query_probs = to_probabilities(digits_target.model(queries.images)).detach()
    most = predict.attribute(queries, "dist1").argmax(0)
    assert torch.equal(most, query_probs.argmax(1))
    least = predict.attribute(queries, "dist3").argmax(0)
    assert not torch.equal(least, most)


def test_cluster_baseline_shapes(digits_target, digits_data, clustering, tiny_resolver, queries):
    cluster = fitted(ClusterAttributor, digits_target, digits_data, clustering, tiny_resolver)
    assert cluster.centroids.shape == (10, digits_target.model.embed_dim)
    assert torch.isfinite(cluster.attribute(queries, "dist2")).all()


def test_exact_oracle_retrains_each_cluster_once_and_reuses(
        digits_target, digits_data, clustering, tiny_resolver, queries):
    exact = fitted(ExactAttributor, digits_target, digits_data, clustering, tiny_resolver)
    removals = exact.predict_removals(queries)
    assert removals.shape == (10, 4, 10)
    entries = [retrained_entry(tiny_resolver, digits_target, spec) for spec in exact.specs]
    assert all(entry.is_complete() for entry in entries)
    stamps = [(entry.path / "theta.pt").stat().st_mtime_ns for entry in entries]
    again = fitted(ExactAttributor, digits_target, digits_data, clustering, tiny_resolver)
    assert torch.equal(again.predict_removals(queries), removals)
    assert stamps == [(entry.path / "theta.pt").stat().st_mtime_ns for entry in entries]
    # removing a whole class changes that class's predictions the most
    reference = to_probabilities(digits_target.model(queries.images)).detach()
    drop = (reference - removals)[queries.labels, torch.arange(4), queries.labels]
    assert (drop > 0).float().mean() >= 0.75


def test_retraining_without_nothing_is_the_target(digits_target, digits_data, tiny_resolver):
    retrainer = Retrainer(digits_target, digits_data, tiny_resolver, progress=False)
    (theta,) = retrainer.thetas([RetrainSpec((), "same-seed", FEW.train.seed)])
    assert torch.equal(theta, flat_params(digits_target.model))


def test_interrupted_retraining_resumes(digits_target, digits_data, tmp_path, monkeypatch):
    from ddm.resolver import Resolver

    spec = RetrainSpec((0, 1, 2), "same-seed", FEW.train.seed)
    reference = Retrainer(digits_target, digits_data, Resolver(tmp_path / "a"),
                          progress=False).thetas([spec])[0]
    original = CacheEntry.save_partial

    def save_then_interrupt(self, state):
        original(self, state)
        raise KeyboardInterrupt

    cache = Resolver(tmp_path / "b")
    monkeypatch.setattr(CacheEntry, "save_partial", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        Retrainer(digits_target, digits_data, cache, progress=False).thetas([spec])
    monkeypatch.setattr(CacheEntry, "save_partial", original)
    assert retrained_entry(cache, digits_target, spec).load_partial()["epochs_done"] == 1
    resumed = Retrainer(digits_target, digits_data, cache, progress=False).thetas([spec])[0]
    assert torch.equal(resumed, reference)


@pytest.mark.slow  # spawns two worker processes (each imports torch)
def test_parallel_workers_match_sequential(digits_target, digits_data, tmp_path):
    from ddm.resolver import Resolver

    specs = [RetrainSpec((k,), "same-seed", FEW.train.seed) for k in range(2)]
    sequential = Retrainer(digits_target, digits_data, Resolver(tmp_path / "s"),
                           progress=False).thetas(specs)
    parallel = Retrainer(digits_target, digits_data, Resolver(tmp_path / "p"),
                         execution=ExecutorConfig(workers=2), progress=False).thetas(specs)
    for a, b in zip(sequential, parallel, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # thread counts may differ


def test_protocol_seeds(digits_target):
    assert protocol_seeds(digits_target, OracleConfig("same-seed", 5)) == [FEW.train.seed]
    assert protocol_seeds(digits_target, OracleConfig("fresh-seed", 2)) == [FEW.train.seed + 1,
                                                                              FEW.train.seed + 2]
    with pytest.raises(ConfigError, match="same-seed"):
        OracleConfig("other", 1)
    with pytest.raises(ConfigError, match="retrain_seeds"):
        OracleConfig("fresh-seed", 0)
    assert OracleConfig().key() == {"protocol": "same-seed", "retrain_seeds": 1}
    assert OracleConfig("fresh-seed", 2).key() == {"protocol": "fresh-seed", "retrain_seeds": 2}


def test_executor_options_are_checked_when_made():
    for bad in ({"executor": "slurm"}, {"workers": 0}, {"batch": 0}, {"ray_gpus": -1.0}):
        with pytest.raises(ConfigError):
            ExecutorConfig(**bad)


def test_fresh_seed_specs_are_cluster_major(clustering):
    specs = single_cluster_specs(clustering, "fresh-seed", [7, 8])
    assert len(specs) == 20 and [s.seed for s in specs[:4]] == [7, 8, 7, 8]
    assert specs[0].removed == specs[1].removed != specs[2].removed
    assert dataclasses.asdict(specs[0])["protocol"] == "fresh-seed"
