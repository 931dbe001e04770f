"""DDM variants of issue 11: soft labels, convergence, per-cluster scale, paper schedule, hierarchical
scores; and the signal ladder's first-order machinery on planted cases."""

import dataclasses

import pytest
import torch

from bench.ladder import first_order, query_jacobian, rescale, row_cosine
from ddm.attribute import (
    SynsetUnlearner,
    cluster_weights,
    finetune_lr,
    finetune_steps,
    hierarchical_search,
)
from ddm.config import with_overrides
from ddm.distill import Synset, converged, distill, initial_label_logits
from ddm.errors import ConfigError
from ddm.functional import finetune_one, model_params
from ddm.metrics import locate_score
from ddm.objectives import dist1, to_probabilities
from ddm.stages import get_clustering
from tests.conftest import TINY


def test_initial_label_logits_give_the_requested_own_class_probability():
    labels = torch.tensor([0, 2, 1])
    soft = initial_label_logits(labels, 4, 0.25).softmax(-1)
    torch.testing.assert_close(soft[torch.arange(3), labels], torch.full((3,), 0.25))
    others = soft.clone()
    others[torch.arange(3), labels] = 0
    torch.testing.assert_close(others.sum(1), torch.full((3,), 0.75))
    complementary = initial_label_logits(labels, 4, 0.0).softmax(-1)
    assert complementary[torch.arange(3), labels].max() <= 1.01e-3


def test_converged_compares_the_last_two_checks():
    assert not converged([5.0, 5.0], None)
    assert not converged([5.0], 0.01)  # needs two checks
    assert converged([5.0, 4.99], 0.01)  # improved by 0.2 % < 1 %
    assert not converged([10.0, 5.0], 0.01)  # halved: still improving
    assert converged([5.0, 6.0], 0.01)  # got worse: stop


def test_soft_label_distillation_learns_labels_and_stops_early(tiny_resolver, digits_data, digits_target):
    clustering = get_clustering(TINY, digits_data, resolver=tiny_resolver, device="cpu", progress=False)
    cfg = dataclasses.replace(TINY.distill, synset_labels="soft", distill_steps=400, converge_tol=0.5)
    synset = distill(digits_target, digits_data, clustering, cfg, progress=False)
    assert synset.soft_labels.shape == (clustering.n_clusters, 10)
    torch.testing.assert_close(synset.soft_labels.sum(1), torch.ones_like(synset.soft_labels[:, 0]))
    start = initial_label_logits(synset.labels, 10, cfg.soft_label_init)
    start = start.to(synset.soft_labels.dtype).softmax(-1)
    assert not torch.allclose(synset.soft_labels, start)  # the labels moved
    assert len(synset.losses) < 400  # a 50 % tolerance stops it after a few checks
    assert len(synset.checks) == len(synset.losses) // 25 + 1
    assert synset.targets is synset.soft_labels


def test_unlearner_fine_tunes_on_soft_labels_with_cluster_weights(digits_target):
    n_clusters, generator = 4, torch.Generator().manual_seed(0)
    images = torch.randn(n_clusters, 1, 8, 8, generator=generator, dtype=torch.float64)
    soft = torch.rand(n_clusters, 10, generator=generator, dtype=torch.float64).softmax(-1)
    synset = Synset(images, torch.arange(n_clusters), torch.arange(n_clusters), n_clusters, [], "reverse",
                    0.0, soft)
    weights = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64)
    unlearner = SynsetUnlearner(digits_target.model, synset, steps=2, lr=0.05, weights=weights)
    keep = torch.tensor([[0, 1, 0, 1]]).bool()
    queries = torch.randn(3, 1, 8, 8, generator=generator, dtype=torch.float64)
    tuned = finetune_one(digits_target.model, model_params(digits_target.model), images[[0, 2]], soft[[0, 2]],
                         weights[[0, 2]], steps=2, lr=0.05)
    expected = to_probabilities(torch.func.functional_call(digits_target.model, tuned, (queries,)))
    torch.testing.assert_close(unlearner(keep, queries)[0], expected, rtol=1e-5, atol=1e-6)


def test_real_norm_weights_make_each_first_step_track_its_cluster(tiny_resolver, digits_data, digits_target):
    clustering = get_clustering(TINY, digits_data, resolver=tiny_resolver, device="cpu", progress=False)
    cfg = dataclasses.replace(TINY.distill, distill_steps=2)
    synset = distill(digits_target, digits_data, clustering, cfg, progress=False)
    assert cluster_weights(digits_target, digits_data, clustering, synset, "none") is None
    weights = cluster_weights(digits_target, digits_data, clustering, synset, "real_norm")
    assert weights.shape == (clustering.n_clusters,) and (weights > 0).all()
    # doubling a cluster's synthetic image gradient is impossible to fake here, but a bigger cluster
    # with the same gradients gets proportionally more weight: the weights are size * ratio / mean size
    assert not torch.allclose(weights, weights.mean().expand_as(weights))


def test_paper_schedule_uses_the_target_lr_and_tau_steps(tiny_resolver, digits_data, digits_target):
    clustering = get_clustering(TINY, digits_data, resolver=tiny_resolver, device="cpu", progress=False)
    paper = with_overrides(TINY, schedule="paper")
    assert finetune_lr(paper, clustering) == TINY.train.lr
    assert finetune_steps(paper, digits_target) == len(digits_target.trajectory) - 1
    assert finetune_steps(TINY, digits_target) == TINY.attribute.finetune_steps


@pytest.mark.parametrize("field,value", [("synset_labels", "fuzzy"), ("schedule", "later"),
                                         ("cluster_scale", "big"), ("soft_label_init", 1.0),
                                         ("lr_label", 0.0), ("converge_tol", -1.0)])
def test_bad_variant_fields_are_config_errors(field, value):
    with pytest.raises(ConfigError, match=field):
        with_overrides(TINY, **{field: value})


def test_hierarchical_scores_argmax_is_the_hierarchical_pick():
    n_classes, per_class, n_q = 3, 2, 4
    generator = torch.Generator().manual_seed(1)
    class_out = torch.rand(n_classes, n_q, 5, generator=generator).softmax(-1)
    cluster_out = torch.rand(n_classes * per_class, n_q, 5, generator=generator).softmax(-1)
    reference, labels = torch.full((n_q, 5), 0.2), torch.zeros(n_q, dtype=torch.long)

    def clusters(keep):  # one deletion per row: output of the removed cluster
        return cluster_out[(~keep).float().argmax(1)]

    result = hierarchical_search(lambda keep: class_out, clusters, n_classes, per_class, reference, labels,
                                 dist1)
    assert result.scores.shape == (n_classes * per_class, n_q)
    assert torch.equal(result.scores.argmax(0), result.clusters)
    assert torch.equal(result.clusters // per_class, result.classes)


def test_first_order_ranks_a_planted_linear_case():
    # outputs linear in theta: p(theta) = reference + J theta; cluster k's removal moves theta by delta_k
    generator = torch.Generator().manual_seed(0)
    jacobian = torch.randn(2 * 3, 7, generator=generator, dtype=torch.float64)
    reference = torch.full((2, 3), 1 / 3, dtype=torch.float64)
    delta = torch.randn(5, 7, generator=generator, dtype=torch.float64) * torch.arange(1, 6)[:, None]
    exact = reference + (delta @ jacobian.T).view(5, 2, 3)
    predicted = first_order(jacobian, delta, reference)
    torch.testing.assert_close(predicted, exact)
    score = locate_score(dist1(predicted, reference, torch.zeros(2, dtype=torch.long)),
                         dist1(exact, reference, torch.zeros(2, dtype=torch.long)))
    assert score.normalized == pytest.approx(1.0) and score.spearman == pytest.approx(1.0)
    # rescaling keeps each direction and takes the reference's norms
    scaled = rescale(delta * 10, delta.flip(0))
    torch.testing.assert_close(scaled.norm(dim=1), delta.flip(0).norm(dim=1))
    torch.testing.assert_close(row_cosine(scaled, delta), torch.ones(5, dtype=torch.float64))


def test_query_jacobian_matches_finite_differences(digits_target):
    model = digits_target.model
    dtype = next(model.parameters()).dtype  # the shared fixture's, restored below
    params = {name: p.detach().double() for name, p in model.named_parameters()}
    queries = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    jacobian = query_jacobian(model.double(), params, queries)
    try:
        direction = {name: torch.randn_like(p) * 1e-6 for name, p in params.items()}
        moved = {name: p + direction[name] for name, p in params.items()}
        before = to_probabilities(torch.func.functional_call(model, params, (queries,))).flatten()
        after = to_probabilities(torch.func.functional_call(model, moved, (queries,))).flatten()
        flat = torch.cat([direction[name].flatten() for name in params])
        torch.testing.assert_close(jacobian @ flat, after - before, rtol=1e-4, atol=1e-9)
    finally:
        model.to(dtype)


def test_query_jacobian_per_query_equals_the_batched_jacobian(digits_target):
    """The ladder differentiates one query at a time (bounded memory); the rows must be those of one
    jacrev over the whole batch, whose activations grew as n_q * C * n_q feature maps."""
    model = digits_target.model
    params = {name: p.detach() for name, p in model.named_parameters()}
    dtype = next(iter(params.values())).dtype
    queries = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=dtype)

    def probabilities(current):
        return to_probabilities(torch.func.functional_call(model, current, (queries,))).flatten()

    batched = torch.func.jacrev(probabilities)(params)
    expected = torch.cat([batched[name].flatten(1) for name in params], 1)
    torch.testing.assert_close(query_jacobian(model, params, queries), expected, rtol=1e-10, atol=1e-12)
