"""Golden tests of the linear datamodel fit and the objectives on hand-computed cases."""

import math

import pytest
import torch

from ddm.datamodel import (
    Datamodel,
    cluster_scores,
    fit_datamodel,
    perturbation_weights,
    sample_perturbations,
)
from ddm.errors import ConfigError
from ddm.objectives import OBJECTIVES, dist1, dist2, dist3, kd_kl, validation


def planted(n_clusters=12, queries=3, outputs=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    weights = torch.randn(queries, n_clusters, outputs, generator=generator, dtype=torch.float64)
    bias = torch.randn(queries, outputs, generator=generator, dtype=torch.float64)
    return Datamodel(weights, bias)


@pytest.mark.parametrize("beta_scheme", ["inverse", "uniform", "count"])
def test_fit_recovers_planted_linear_datamodel(beta_scheme):
    truth = planted()
    keep = sample_perturbations(12, 12, removal_rate=0.3, seed=1)  # |P| = K + the full row
    fitted = fit_datamodel(keep, truth.predict(keep), perturbation_weights(keep, beta_scheme))
    torch.testing.assert_close(fitted.weights, truth.weights, atol=1e-5, rtol=0)
    torch.testing.assert_close(fitted.bias, truth.bias, atol=1e-5, rtol=0)


def test_ridge_shrinks_weights():
    truth = planted()
    keep = sample_perturbations(12, 30, removal_rate=0.3, seed=1)
    plain = fit_datamodel(keep, truth.predict(keep))
    shrunk = fit_datamodel(keep, truth.predict(keep), ridge=10.0)
    assert shrunk.weights.norm() < plain.weights.norm()


def test_single_removals_by_hand():
    model = Datamodel(torch.tensor([[[1.0], [2.0], [4.0]]]), torch.tensor([[0.5]]))
    # nothing removed: 0.5 + 7 = 7.5; removing cluster k subtracts its weight
    assert model.single_removals().flatten().tolist() == [6.5, 5.5, 3.5]


def test_perturbations_shape_and_rules():
    keep = sample_perturbations(10, 40, removal_rate=0.05, seed=0, include_singles=True)
    assert keep.shape == (1 + 40 + 10, 10)
    assert keep[0].all()  # the free all-kept row
    assert (~keep[1:]).sum(1).min() >= 1  # every other row removes something
    assert torch.equal(keep[-10:], ~torch.eye(10, dtype=torch.bool))
    again = sample_perturbations(10, 40, removal_rate=0.05, seed=0, include_singles=True)
    assert torch.equal(keep, again)
    with pytest.raises(ConfigError):
        sample_perturbations(10, 5, removal_rate=1.5, seed=0)


def test_weights_schemes_by_hand():
    keep = torch.tensor([[True, True, True], [False, True, True], [False, False, True]])
    assert perturbation_weights(keep, "inverse").tolist() == [1.0, 1.0, 0.5]
    assert perturbation_weights(keep, "count").tolist() == [1.0, 1.0, 2.0]
    assert perturbation_weights(keep, "uniform").tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ConfigError, match="inverse"):
        perturbation_weights(keep, "nope")


def test_non_finite_outputs_are_rejected():
    keep = sample_perturbations(3, 3, removal_rate=0.5, seed=0)
    outputs = torch.zeros(len(keep), 1, 2)
    outputs[1, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError):
        fit_datamodel(keep, outputs)


REFERENCE = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
REMOVED = torch.tensor([[0.5, 0.4, 0.1], [0.1, 0.1, 0.8]])
LABELS = torch.tensor([0, 1])


def test_objectives_golden_values():
    assert dist1(REMOVED, REFERENCE, LABELS).tolist() == pytest.approx([0.08, 0.0])
    assert dist2(REMOVED, REFERENCE, LABELS).tolist() == pytest.approx([-math.log(0.5),
                                                                       -math.log(0.1)])
    assert dist3(REMOVED, REFERENCE, LABELS).tolist() == pytest.approx([1 / 1.08, 1.0])
    assert validation(REMOVED, REFERENCE, LABELS).tolist() == pytest.approx(
        [-math.log(0.5) - math.log(0.1)])
    expected_kl = 0.7 * math.log(0.7 / 0.5) + 0.2 * math.log(0.2 / 0.4)
    assert kd_kl(REMOVED, REFERENCE, LABELS).tolist() == pytest.approx([expected_kl, 0.0], abs=1e-6)


def test_objectives_broadcast_over_candidate_dimension():
    stacked = torch.stack([REMOVED, REFERENCE])  # [2 candidates, 2 queries, 3 classes]
    for name in OBJECTIVES:
        scores = OBJECTIVES[name](stacked, REFERENCE, LABELS)
        assert scores.shape[0] == 2
        torch.testing.assert_close(scores[0], OBJECTIVES[name](REMOVED, REFERENCE, LABELS))


def test_cluster_scores_pick_the_planted_most_influential_cluster():
    reference = torch.tensor([[0.6, 0.4]], dtype=torch.float64)
    weights = torch.zeros(1, 4, 2, dtype=torch.float64)
    weights[0, 2] = torch.tensor([0.3, -0.3])  # cluster 2 pushes class 0 up: removing it matters
    weights[0, 1] = torch.tensor([0.05, -0.05])
    bias = reference - weights.sum(1)
    scores = cluster_scores(Datamodel(weights, bias), reference, torch.tensor([0]), dist1)
    assert scores.shape == (4, 1)
    assert int(scores.argmax()) == 2
    least = cluster_scores(Datamodel(weights, bias), reference, torch.tensor([0]), dist3)
    assert int(least.argmax()) in (0, 3)
