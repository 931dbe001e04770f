"""The linear-response ceiling (baselines/metagradient.py): its forward-mode derivative through the
whole training is the training map's derivative."""

import torch

from baselines.metagradient import MetagradientOptions, trained_weights
from ddm.cluster import compute_clustering
from tests.conftest import TINY


def test_the_forward_mode_derivative_is_the_training_maps_own(digits_target, digits_data):
    """theta_tau(1) is the target (to rounding), and the JVP along a cluster's removal equals central
    differences at eps 1e-7 (measured: 8.8e-8 relative). Larger steps cross ReLU kinks: at 1e-5 the
    difference quotient was 26000 times the derivative, so the floor is on the small step only."""
    train = trained_weights(digits_target, digits_data.train_x, digits_data.train_y)
    ones = torch.ones(len(digits_data.train_y), dtype=digits_data.train_x.dtype)
    flat = torch.cat([value.flatten() for value in train(ones).values()])
    assert float((flat - digits_target.trajectory[-1]).abs().max()) <= 1e-12
    clustering = compute_clustering(TINY, digits_data, None)
    direction = -(clustering.cluster_ids == 4).to(ones.dtype)
    _, tangent = torch.func.jvp(train, (ones,), (direction,))
    derivative = torch.cat([value.flatten() for value in tangent.values()])
    eps = 1e-7
    plus, minus = (torch.cat([v.flatten() for v in train(ones + sign * eps * direction).values()])
                   for sign in (1, -1))
    difference = (plus - minus) / (2 * eps)
    assert float((derivative - difference).norm() / derivative.norm()) < 1e-5


def test_the_ceiling_differentiates_every_parameter():
    import pytest

    from ddm.errors import ConfigError

    with pytest.raises(ConfigError, match="params must be 'all'"):
        MetagradientOptions(params="head")


def test_the_chunk_size_and_a_stop_change_neither_the_derivative(tmp_path, monkeypatch, digits_target,
                                                                   digits_data):
    """One cluster at a time (the CPU default), and vmapped chunks that cut across the clusters with
    the fit stopped after its second chunk and resumed, give the same [K, P] parameter changes (to
    float64 rounding); the resumed fit differentiates only the clusters it had not done. One cluster
    per class (10, the last chunk ragged) keeps the 20 forward-mode passes near half a minute."""
    import pytest

    import baselines.metagradient as module
    from baselines.metagradient import MetagradientAttributor
    from ddm.config import with_overrides
    from ddm.resolver import Partial, Resolver

    config = with_overrides(TINY, clusters_per_class=1)
    clustering = compute_clustering(config, digits_data, None)
    assert clustering.n_clusters == 10

    def fit(chunk: int) -> torch.Tensor:
        attributor = MetagradientAttributor(config, options=MetagradientOptions(chunk=chunk),
                                            resolver=Resolver(tmp_path / f"home{chunk}"), progress=False)
        attributor.fit(digits_target, digits_data, clustering)
        return attributor.changes

    whole = fit(1)
    saves, passes, save, vmapped = [], [], Partial.save, module.vmap

    def stopping_save(self, state):
        save(self, state)
        saves.append(len(state["changes"]))
        if len(saves) == 2:
            raise KeyboardInterrupt  # the run is stopped here, its progress kept

    def counted_vmap(function):
        mapped = vmapped(function)
        return lambda directions: (passes.append(len(directions)), mapped(directions))[1]

    monkeypatch.setattr(Partial, "save", stopping_save)
    monkeypatch.setattr(module, "vmap", counted_vmap)
    with pytest.raises(KeyboardInterrupt):
        fit(3)
    assert saves == [3, 6] and sum(passes) == 6
    resumed = fit(3)
    assert sum(passes) == clustering.n_clusters  # the first six clusters were not differentiated again
    assert whole.shape[0] == clustering.n_clusters
    assert float((whole - resumed).abs().max()) <= 1e-10 * float(whole.abs().max())
