"""The methods' self-agreement target (bench/stability.py): its perturbation and its statistics."""

import math

import torch

from bench.stability import jittered_stages, self_agreement
from ddm.distill import RealGradients
from ddm.pipeline import Stages
from ddm.resolver import Resolver
from ddm.stages import get_clustering, shared_gradients
from ddm.train import flat_params
from tests.conftest import TINY


def test_the_jittered_target_moves_every_entry_by_exactly_one_ulp_and_nothing_else(
        tiny_resolver, digits_data, digits_target, tmp_path):
    clustering = get_clustering(TINY, digits_data, target=digits_target, resolver=tiny_resolver, device="cpu",
                                progress=False)
    stages = Stages(TINY, digits_data, digits_target, clustering, tiny_resolver)
    before = digits_target.trajectory.clone()
    shifted = jittered_stages(stages, Resolver(tmp_path))
    after = shifted.target.trajectory
    up = torch.nextafter(before, torch.full_like(before, math.inf))
    down = torch.nextafter(before, torch.full_like(before, -math.inf))
    assert bool(((after == up) | (after == down)).all())  # one ulp, up or down, for every entry
    assert 0.3 < float((after == up).double().mean()) < 0.7  # the direction is drawn, not fixed
    assert torch.equal(digits_target.trajectory, before)  # the cached target is untouched
    assert torch.equal(flat_params(shifted.target.model), shifted.target.trajectory[-1])
    assert shifted.resolver.root != stages.resolver.root and shifted.clustering is stages.clustering
    images, labels, generator = digits_data.train_x, digits_data.train_y, torch.Generator()
    cpu = torch.device("cpu")
    plain = RealGradients(digits_target, images, labels, clustering, None, generator,
                          shared_gradients(tiny_resolver, digits_target, clustering, cpu))
    jittered = RealGradients(shifted.target, images, labels, clustering, None, generator,
                             shared_gradients(tiny_resolver, shifted.target, clustering, cpu))
    assert plain.prefix != jittered.prefix  # even in one resolver, the real-gradient memo is not shared


def test_self_agreement_of_identical_and_reversed_scores():
    scores = torch.arange(12, dtype=torch.float64).view(4, 3)
    same = self_agreement(scores, scores.clone())
    assert same == {"spearman": 1.0, "top_agree": 1.0, "relative_change": 0.0}
    reversed_ = self_agreement(scores, -scores)
    assert reversed_["spearman"] == -1.0 and reversed_["top_agree"] == 0.0
    assert reversed_["relative_change"] == 2.0
