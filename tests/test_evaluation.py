"""Methods judged against the exact oracle on the tiny digits target."""


import numpy as np
import pytest

from baselines.exact import ExactAttributor, removed_rows
from baselines.similarity import RandomAttributor
from bench.evaluation import build_oracle, cluster_lds, score_method
from ddm.metrics import lds_masks
from ddm.pipeline import Stages, select_queries
from ddm.stages import get_clustering
from tests.test_baselines import FEW


@pytest.fixture(scope="module")
def stages(tiny_resolver, digits_data, digits_target):
    clustering = get_clustering(FEW, digits_data, resolver=tiny_resolver, device="cpu", progress=False)
    return Stages(FEW, digits_data, digits_target, clustering, tiny_resolver)


@pytest.fixture(scope="module")
def exact(stages):
    attributor = ExactAttributor(FEW, resolver=stages.resolver, progress=False)
    attributor.fit(stages.target, stages.data, stages.clustering)
    return attributor


def test_the_oracle_scores_itself_perfectly(stages, exact):
    oracle = build_oracle(exact, select_queries(stages.data, 6))
    for objective in ("dist1", "dist2", "dist3"):
        score = score_method(exact, oracle, objective)
        assert score.normalized == pytest.approx(1.0) and score.spearman == pytest.approx(1.0)
        assert score.random <= score.located == pytest.approx(score.oracle)


def test_random_sits_between(stages, exact):
    oracle = build_oracle(exact, select_queries(stages.data, 6))
    random = RandomAttributor(FEW, resolver=stages.resolver)
    random.fit(stages.target, stages.data, stages.clustering)
    score = score_method(random, oracle, "dist1")
    assert score.random <= score.oracle and score.located <= score.oracle
    assert -1 <= score.spearman <= 1


def test_cluster_lds_of_the_masks_retrained_is_one_and_added_singles_a_correlation(stages, exact):
    queries = select_queries(stages.data, 4)
    masks = lds_masks(stages.clustering.n_clusters, 6, seed=0)
    actual = exact.retrainer.removal_outputs(removed_rows(stages.clustering, masks), "same-seed", [0],
                                             queries.images)
    scores = cluster_lds({"exact": exact, "added": exact}, queries, masks, actual, joint=frozenset({"exact"}))
    assert scores["exact"].shape == (4,)
    assert scores["exact"] == pytest.approx(1.0)  # retraining the masks predicts them perfectly
    added = scores["added"][~np.isnan(scores["added"])]
    assert len(added) and ((added >= -1) & (added <= 1)).all()
