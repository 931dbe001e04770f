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


def test_the_chunk_size_changes_the_speed_not_the_derivative(tmp_path, digits_target, digits_data):
    """One cluster at a time (the CPU default) and vmapped chunks that cut across the clusters give
    the same [K, P] parameter changes (to float64 rounding)."""
    from baselines.metagradient import MetagradientAttributor
    from ddm.resolver import Resolver

    clustering = compute_clustering(TINY, digits_data, None)
    changes = []
    for chunk in (1, 3):
        attributor = MetagradientAttributor(TINY, options=MetagradientOptions(chunk=chunk),
                                            resolver=Resolver(tmp_path / f"home{chunk}"), progress=False)
        attributor.fit(digits_target, digits_data, clustering)
        changes.append(attributor.changes)
    assert changes[0].shape[0] == clustering.n_clusters
    scale = float(changes[0].abs().max())
    assert float((changes[0] - changes[1]).abs().max()) <= 1e-10 * scale
