"""Golden-value tests of the oracle metrics on hand-computed cases."""

import math

import numpy as np
import pytest
import torch

from ddm.metrics import (
    additive_margins,
    additive_prediction,
    lds,
    lds_masks,
    lds_per_query,
    locate_score,
    located_value,
    mean_spearman,
    normalized_score,
    oracle_value,
    random_value,
    true_class_margin,
)

# 3 clusters x 2 queries of exact objective values
EXACT = torch.tensor([[1.0, 6.0], [4.0, 0.0], [7.0, 3.0]])


def test_located_random_oracle_by_hand():
    assert located_value(EXACT, torch.tensor([1, 0])) == pytest.approx((4.0 + 6.0) / 2)
    assert random_value(EXACT) == pytest.approx(21.0 / 6)
    assert oracle_value(EXACT) == pytest.approx((7.0 + 6.0) / 2)


def test_normalized_score_by_hand():
    assert normalized_score(5.0, 3.5, 6.5) == pytest.approx(0.5)
    assert normalized_score(6.5, 3.5, 6.5) == pytest.approx(1.0)
    assert normalized_score(3.5, 3.5, 6.5) == pytest.approx(0.0)
    assert math.isnan(normalized_score(1.0, 2.0, 2.0))


def test_locate_score_of_perfect_and_reversed_scores():
    perfect = locate_score(EXACT, EXACT)
    assert perfect.normalized == pytest.approx(1.0) and perfect.spearman == pytest.approx(1.0)
    reversed_ = locate_score(-EXACT, EXACT)
    assert reversed_.spearman == pytest.approx(-1.0)
    assert reversed_.located == pytest.approx((1.0 + 0.0) / 2)


def test_spearman_by_hand_and_constant_columns_skipped():
    scores = torch.tensor([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0], [4.0, 5.0]])
    exact = torch.tensor([[10.0, 1.0], [30.0, 2.0], [20.0, 3.0], [40.0, 4.0]])
    # column 0 ranks (1,2,3,4) vs (1,3,2,4): rho = 1 - 6*2/(4*15) = 0.8; column 1 is constant
    assert mean_spearman(scores, exact) == pytest.approx(0.8)


def test_true_class_margin_by_hand():
    probabilities = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])
    margins = true_class_margin(probabilities, torch.tensor([0, 0]))
    assert margins.tolist() == pytest.approx([math.log(0.5 / 0.3), math.log(0.1 / 0.6)])


def test_lds_masks_keep_half():
    masks = lds_masks(10, 7, seed=0)
    assert masks.shape == (7, 10) and (masks.sum(1) == 5).all()
    assert torch.equal(masks, lds_masks(10, 7, seed=0))


def test_additive_prediction_by_hand():
    reference = torch.tensor([[0.5, 0.5]])
    singles = torch.tensor([[[0.6, 0.4]], [[0.45, 0.55]]])
    keep = torch.tensor([[False, False], [True, False], [True, True]])
    out = additive_prediction(singles, reference, keep)
    expected = torch.tensor([[[0.55, 0.45]], [[0.45, 0.55]], [[0.5, 0.5]]], dtype=torch.float64)
    torch.testing.assert_close(out, expected)


def test_lds_is_one_for_a_monotone_prediction():
    actual = torch.randn(20, 3, generator=torch.Generator().manual_seed(0))
    assert lds(2 * actual + 1, actual) == pytest.approx(1.0)
    assert lds(-actual, actual) == pytest.approx(-1.0)


def test_an_exactly_margin_linear_model_has_margin_space_lds_one():
    """Golden case for TRAK's LDS: outputs whose true-class margin is exactly linear in the mask are
    predicted perfectly by their single-cluster margin changes added up (and not by probabilities
    added up and clamped, the previous definition)."""
    generator = torch.Generator().manual_seed(0)
    n_clusters, n_q, classes = 6, 3, 4
    labels = torch.tensor([0, 2, 3])
    base_logits = torch.randn(n_q, classes, generator=generator, dtype=torch.float64)
    effects = 2.0 * torch.randn(n_clusters, n_q, generator=generator, dtype=torch.float64)

    def outputs(removed: torch.Tensor) -> torch.Tensor:
        """Two-class-dominant softmax whose log-odds of the true class move by the removed effects."""
        logits = base_logits.clone().expand(len(removed), n_q, classes).clone()
        logits[..., :] = -30.0  # every class but the true one and one rival is negligible
        rival = (labels + 1) % classes
        shift = removed.to(torch.float64) @ effects
        index = labels.view(1, -1, 1).expand(len(removed), n_q, 1)
        logits.scatter_(-1, index, (1.0 + shift).unsqueeze(-1))
        logits.scatter_(-1, rival.view(1, -1, 1).expand(len(removed), n_q, 1), 0.0)
        return logits.softmax(-1)

    keep = lds_masks(n_clusters, 12, seed=1, keep_fraction=0.5)
    singles = outputs(torch.eye(n_clusters, dtype=torch.bool))
    reference = outputs(torch.zeros(1, n_clusters, dtype=torch.bool))[0]
    actual = true_class_margin(outputs(~keep), labels)
    predicted = additive_margins(singles, reference, labels, keep)
    torch.testing.assert_close(predicted, actual)  # exactly linear in the margin
    assert lds_per_query(predicted, actual) == pytest.approx(np.ones(n_q))
    clamped = true_class_margin(additive_prediction(singles, reference, keep).clamp(0, 1), labels)
    assert lds_per_query(clamped, actual).mean() < 1 - 1e-6  # probabilities added up are not
