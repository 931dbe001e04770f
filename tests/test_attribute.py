"""DDM's online stage: batched unlearning == a loop, hierarchical search, the attributor end to end."""

import pytest
import torch

from bench.ladder import PREVIOUS_DDM
from ddm.attribute import DDMAttributor, DDMMatchAttributor, SynsetUnlearner, hierarchical_search
from ddm.attributor import METHODS, Queries
from ddm.config import preset, with_overrides
from ddm.datamodel import Datamodel
from ddm.distill import Synset
from ddm.functional import finetune_one, model_params
from ddm.objectives import dist1, to_probabilities
from ddm.resolver import Resolver
from ddm.stages import get_clustering, get_target
from ddm.target import load_data
from ddm.train import accuracy
from tests.conftest import TINY


def tiny_synset(n_clusters=5, ipc=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(n_clusters * ipc, 1, 8, 8, generator=generator, dtype=torch.float64)  # the target's
    cluster_ids = torch.arange(n_clusters).repeat_interleave(ipc)
    return Synset(images, cluster_ids % 3, cluster_ids, n_clusters, [], "reverse", 0.0)


def test_batched_unlearning_equals_a_loop_of_finetunes(digits_target, monkeypatch):
    monkeypatch.setattr("ddm.attribute.LOOP_MIN_PIXELS", 8 * 64)  # 8 or more 8x8 images: one at a time
    synset = tiny_synset()
    unlearner = SynsetUnlearner(digits_target.model, synset, steps=3, lr=0.05, chunk=2)
    # chunks of 2: a narrow chunk (vmap) and a wide one (the CPU's one-model-at-a-time path) that also
    # holds a mask removing nothing
    keep = torch.tensor([[1, 1, 1, 1, 1], [0, 1, 1, 1, 1], [1, 0, 1, 0, 0], [0, 0, 0, 0, 0],
                         [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]]).bool()
    queries = torch.randn(6, 1, 8, 8, dtype=torch.float64)
    batched = unlearner(keep, queries)
    params = model_params(digits_target.model)
    for row, mask in enumerate(keep):
        images = synset.images[~mask[synset.cluster_ids]]
        labels = synset.labels[~mask[synset.cluster_ids]]
        weights = torch.full((len(labels),), 0.5, dtype=torch.float64)  # each cluster's 2 images averaged
        tuned = finetune_one(digits_target.model, params, images, labels, weights, steps=3, lr=0.05)
        logits = torch.func.functional_call(digits_target.model, tuned, (queries,))
        torch.testing.assert_close(batched[row], to_probabilities(logits), rtol=1e-5, atol=1e-6)
    assert unlearner.finetunes == 6


def test_keeping_everything_reproduces_the_target(digits_target):
    unlearner = SynsetUnlearner(digits_target.model, tiny_synset(), steps=3, lr=0.05)
    queries = torch.randn(6, 1, 8, 8, dtype=torch.float64)
    out = unlearner(torch.ones(1, 5, dtype=torch.bool), queries)
    # vmap's batched kernels may differ from the plain forward in the last bits only
    torch.testing.assert_close(out[0], to_probabilities(digits_target.model(queries)).detach(),
                               rtol=1e-6, atol=1e-7)


def planted_evaluators(n_classes=4, per_class=3, outputs=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    weights = 0.05 * torch.randn(1, n_classes * per_class, outputs, generator=generator, dtype=torch.float64)
    weights[0, 7] *= 40  # cluster 7 (class 2) dominates
    truth = Datamodel(weights, torch.rand(1, outputs, generator=generator, dtype=torch.float64))
    calls = {"rows": 0}

    def clusters(keep):
        calls["rows"] += len(keep)
        return truth.predict(keep)

    def classes(keep):
        calls["rows"] += len(keep)
        return truth.predict(keep.repeat_interleave(per_class, dim=1))

    return truth, classes, clusters, calls


def test_hierarchical_search_finds_the_planted_cluster_with_L_plus_C_finetunes():
    truth, classes, clusters, calls = planted_evaluators()
    reference = truth.predict(torch.ones(1, 12, dtype=torch.bool))[0]
    expected = int(dist1(truth.single_removals(), reference, torch.tensor([0])).argmax())
    result = hierarchical_search(classes, clusters, 4, 3, reference, torch.tensor([0]), dist1)
    assert expected == 7
    assert result.classes.tolist() == [2] and result.clusters.tolist() == [7]
    assert result.finetunes == calls["rows"] == 4 + 3


@pytest.fixture(scope="module")
def fitted(tiny_resolver, digits_data, digits_target):
    clustering = get_clustering(TINY, digits_data, resolver=tiny_resolver, device="cpu", progress=False)
    attributor = DDMAttributor(TINY, resolver=tiny_resolver, progress=False)
    attributor.fit(digits_target, digits_data, clustering)
    return attributor


def test_attribute_scores_every_cluster_for_every_query(fitted, digits_data):
    queries = Queries(digits_data.test_x[:5], digits_data.test_y[:5])
    for objective in ("dist1", "dist2", "dist3"):
        scores = fitted.attribute(queries, objective)
        assert scores.shape == (30, 5) and torch.isfinite(scores).all()
    assert fitted.attribute(queries, "validation").shape == (30, 1)
    assert fitted.perturbations().shape == (1 + 30 + 30, 30)  # all-kept row, |P| = K random, K singles


def test_objectives_of_one_query_set_share_one_set_of_finetunes(fitted, digits_data):
    queries = Queries(digits_data.test_x[5:9], digits_data.test_y[5:9])
    first = fitted.attribute(queries, "dist1")
    done = fitted.unlearner.finetunes
    fitted.attribute(queries, "dist2")
    assert fitted.unlearner.finetunes == done  # the |P| fine-tunes were remembered, not redone
    torch.testing.assert_close(fitted.attribute(Queries(queries.images.clone(), queries.labels.clone()),
                                                "dist1"), first)
    fitted.attribute(Queries(digits_data.test_x[9:13], digits_data.test_y[9:13]), "dist1")
    assert fitted.unlearner.finetunes == done + len(fitted.perturbations())  # new queries: new work
    fitted.forget()
    fitted.attribute(Queries(digits_data.test_x[9:13], digits_data.test_y[9:13]), "dist1")
    assert fitted.unlearner.finetunes == done + 2 * len(fitted.perturbations())  # forgotten: redone


def test_unknown_objective_fails_before_any_work(fitted, digits_data):
    with pytest.raises(Exception, match="dist1"):
        fitted.attribute(Queries(digits_data.test_x[:1], digits_data.test_y[:1]), "dist9")


def test_hierarchical_locates_a_cluster_of_the_located_class(fitted, digits_data):
    queries = Queries(digits_data.test_x[:3], digits_data.test_y[:3])
    result = fitted.hierarchical(queries, "dist1")
    assert torch.equal(result.clusters // 3, result.classes)
    assert result.finetunes == 10 + 3 * len(result.classes.unique())


def test_methods_registry_has_both_ddm_variants():
    assert METHODS["ddm"] is DDMAttributor and METHODS["ddm_match"] is DDMMatchAttributor


@pytest.mark.slow
def test_whole_hard_label_reverse_synset_unlearns_far_more_than_gradient_matching(tmp_path):
    """Acceptance (paper Table 4): fine-tuning theta_tau on the whole reverse-matched synset lowers
    test accuracy far more than the gradient-matching synset, with hard labels and the budgeted
    fine-tune (the previous default, bench.ladder.PREVIOUS_DDM). Measured at smoke scale on digits:
    reverse 0.772, match 0.969 (theta_tau 0.967); threshold: at least 0.15 apart. Under the paper's
    schedule both synsets wreck the model (reverse 0.18, match 0.09); the current default's fine-tune
    stays linear and unlearns neither (MNIST small Table 4: 95.6 % against 96.3 %)."""
    config = with_overrides(preset("smoke", "digits"), **PREVIOUS_DDM)
    cache = Resolver(tmp_path)
    data = load_data(config)
    target = get_target(config, data=data, resolver=cache, device="cpu", progress=False)
    clustering = get_clustering(config, data, target=target, resolver=cache, device="cpu", progress=False)
    accuracies = {}
    for method in (DDMAttributor, DDMMatchAttributor):
        attributor = method(config, resolver=cache, progress=False)
        attributor.fit(target, data, clustering)
        accuracies[method.name] = accuracy(attributor.unlearn_all(), data.test_x, data.test_y)
    assert accuracies["ddm"] < accuracies["ddm_match"] - 0.15, accuracies
