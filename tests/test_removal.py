"""Tables 3, 6, 7 and Figures 3, 8: removal orders, noisy data, distillation losses, class matrices."""

import pytest
import torch

from bench.matrices import class_matrix, cosine, diagonal_share
from bench.removal import removal_order, rows_to_remove
from bench.transfer import distillation_loss, nasty_loss, soft_kl
from ddm.cluster import Clustering
from ddm.config import preset, with_overrides
from ddm.errors import ConfigError
from ddm.target import add_noise, load_data


def clustering_of(cluster_ids):
    ids = torch.tensor(cluster_ids)
    return Clustering(ids, ids // 2, n_classes=2, clusters_per_class=2, centroids=torch.zeros(4, 1))


def test_removal_order_puts_the_lowest_predicted_objective_first_and_is_stable():
    assert removal_order(torch.tensor([[0.3], [0.1], [0.3], [-1.0]])) == [3, 1, 0, 2]


def test_rows_to_remove_takes_whole_clusters_until_the_fraction_is_reached():
    clustering = clustering_of([0, 0, 1, 1, 1, 2, 3, 3, 3, 3])  # sizes 2, 3, 1, 4
    assert rows_to_remove(clustering, [2, 0, 1, 3], 0.0) == ()
    assert rows_to_remove(clustering, [2, 0, 1, 3], 0.1) == (5,)  # 1 row = 10 %
    assert rows_to_remove(clustering, [2, 0, 1, 3], 0.2) == (0, 1, 5)  # 1 row < 2 rows: add cluster 0
    assert rows_to_remove(clustering, [3, 0], 0.5) == (0, 1, 6, 7, 8, 9)
    with pytest.raises(ConfigError, match="fraction"):
        rows_to_remove(clustering, [0], 1.0)


def test_noise_hits_the_requested_share_with_the_requested_norm_and_is_seeded():
    config = with_overrides(preset("smoke", "digits"), n_per_class=20)
    clean = load_data(config)
    noisy = add_noise(clean, 0.2, 0.1, seed=0)
    assert len(noisy.noisy_rows) == 40  # 20 % of 200
    difference = (noisy.train_x - clean.train_x).flatten(1).norm(dim=1)
    assert torch.allclose(difference[noisy.noisy_rows], torch.full_like(difference[:40], 0.1), atol=1e-5)
    untouched = torch.ones(200, dtype=torch.bool)
    untouched[noisy.noisy_rows] = False
    assert torch.equal(difference[untouched], torch.zeros_like(difference[:160]))
    assert torch.equal(noisy.test_x, clean.test_x) and torch.equal(noisy.val_x, clean.val_x)
    assert torch.equal(add_noise(clean, 0.2, 0.1, seed=0).train_x, noisy.train_x)
    assert add_noise(clean, 0.0, 0.1, seed=0) is clean
    assert torch.equal(load_data(with_overrides(config, noise_fraction=0.2)).noisy_rows, noisy.noisy_rows)


def test_relative_noise_scales_with_each_image_norm_and_enters_the_key():
    config = with_overrides(preset("smoke", "digits"), n_per_class=20)
    clean = load_data(config)
    noisy = add_noise(clean, 0.2, 0.1, seed=0, relative=2.0)
    rows = noisy.noisy_rows
    difference = (noisy.train_x - clean.train_x)[rows].flatten(1).norm(dim=1)
    torch.testing.assert_close(difference, 2.0 * clean.train_x[rows].flatten(1).norm(dim=1))
    assert torch.equal(rows, add_noise(clean, 0.2, 0.1, seed=0).noisy_rows)  # the same images
    assert config.target_key()["data"]["noise_relative"] is None
    assert with_overrides(config, noise_relative=2.0).target_key()["data"]["noise_relative"] == 2.0


def test_noise_settings_are_validated():
    with pytest.raises(ConfigError, match="noise_fraction"):
        with_overrides(preset("smoke", "digits"), noise_fraction=1.5)
    with pytest.raises(ConfigError, match="noise_relative"):
        with_overrides(preset("smoke", "digits"), noise_relative=-1.0)


def test_soft_kl_is_zero_for_equal_logits_and_tau_squared_scaled():
    logits = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    assert float(soft_kl(logits, logits, 4.0)) == pytest.approx(0.0, abs=1e-6)
    other = logits.flip(1)
    by_hand = (torch.softmax(other, 1) * (torch.log_softmax(other, 1) - torch.log_softmax(logits, 1))).sum(1)
    assert float(soft_kl(logits, other, 1.0)) == pytest.approx(float(by_hand.mean()), rel=1e-5)


def test_distillation_and_nasty_losses_by_hand():
    images = torch.randn(4, 2)
    labels = torch.tensor([0, 1, 2, 0])
    network = torch.nn.Linear(2, 3)
    logits = torch.randn(4, 3)
    ce = torch.nn.functional.cross_entropy(logits, labels)
    kl = soft_kl(logits, network(images).detach(), 4.0)
    expected = float(0.1 * ce + 0.9 * kl)
    assert float(distillation_loss(network)(logits, labels, images)) == pytest.approx(expected)
    nasty = nasty_loss(network)(logits, labels, images)
    assert float(nasty) == pytest.approx(float(ce - 0.04 * soft_kl(network(images).detach(), logits, 4.0)))


def test_class_matrix_sums_each_class_and_averages_queries():
    weights = torch.arange(2 * 4 * 2, dtype=torch.float64).reshape(2, 4, 2)  # [queries, K = 2 x 2, classes]
    expected = (weights[:, 0:2].sum(1) + 0).mean(0), weights[:, 2:4].sum(1).mean(0)
    matrix = class_matrix(weights, clusters_per_class=2)
    assert torch.equal(matrix, torch.stack(expected))
    assert diagonal_share(torch.eye(3)) == 1.0
    assert diagonal_share(torch.tensor([[1.0, -1.0], [1.0, 1.0]])) == 0.5
    assert cosine(matrix, 2 * matrix) == pytest.approx(1.0)
