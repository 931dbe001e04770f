"""CI quality and speed regression at smoke scale on digits (slow; CI runs it).

Setting: the smoke preset with C = 2 clusters per class (K = 20, clusters of about 50 images), 20 test
queries, seeds 0 and 1, exact retraining (same-seed protocol) as the ground truth. Numbers measured
on 2 CPU cores (2026-12-01, the default DDM of issue 11: soft labels, a checkpoint every 4 steps,
real_norm cluster scale, singles in the fit) by the computation below with SEEDS = (0, 1, 2):

- DDM normalized Dist1: 0.773, 0.138, 0.247 (seeds 0-1 mean 0.455; the previous default measured
  +0.005, +0.021, -0.069). DDM Spearman: 0.170, 0.046, 0.085 (seeds 0-1 mean 0.108).
  Koh's influence functions, in the same runs: normalized 0.363, 0.791, 0.448 (seeds 0-1 mean 0.577).
  The computation is deterministic on the CPU for a given intra-op thread count, so CI reproduces
  the seeds 0-1 means; the DDM thresholds sit just under them and catch a loss of the signal the
  default now has. The thread count changes float32 reduction order, and SGD at this scale
  amplifies that: with 1 thread the same seeds measured DDM 0.528 and -0.072 (mean 0.228). So the
  fixture runs with MEASURED_THREADS, whatever the machine has.
- Online DDM (all K scores, 2K + 1 fine-tunes) against exact retraining of the K models: 102x, 89x
  and 71x (seeds 0-2; 95x over seeds 0-1 summed). A ratio of one run, so a loaded machine slows
  both sides; the floor leaves room for that.
"""

import time

import pytest
import torch

from baselines.exact import ExactAttributor
from bench.evaluation import build_oracle
from ddm.cache import ArtifactCache
from ddm.config import preset, with_overrides
from ddm.metrics import locate_score
from ddm.pipeline import fit_method, prepare, select_queries

SEEDS = (0, 1)
DDM_NORMALIZED_MIN = 0.4  # measured mean 0.455 (seeds 0-1)
DDM_SPEARMAN_MIN = 0.08  # measured mean 0.108 (seeds 0-1)
KOH_NORMALIZED_MIN = 0.1  # measured mean 0.577 (seeds 0-1): proves the oracle and metric see a signal
MEASURED_THREADS = 2  # the thresholds' numbers were measured with torch's 2 intra-op threads
ONLINE_SPEEDUP_MIN = 50.0  # measured 95x (seeds 0-1 summed; 150x-270x before the K singles joined the fit)


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    cache = ArtifactCache(tmp_path_factory.mktemp("regression-home"))
    threads = torch.get_num_threads()
    torch.set_num_threads(MEASURED_THREADS)
    try:
        rows = [_measure(cache, seed) for seed in SEEDS]
    finally:
        torch.set_num_threads(threads)
    return rows


def _measure(cache: ArtifactCache, seed: int) -> dict[str, float]:
    """One seed: exact retraining, then DDM and Koh scored against it (normalized, Spearman, time)."""
    config = with_overrides(preset("smoke", "digits"), clusters_per_class=2, seed=seed, cluster_seed=seed,
                            distill_seed=seed, attribute_seed=seed)
    stages = prepare(config, cache=cache, device="cpu", progress=False)
    queries = select_queries(stages.data, 20, seed)
    start = time.perf_counter()
    exact = ExactAttributor(config, cache=cache, progress=False)
    exact.fit(stages.target, stages.data, stages.clustering)
    exact_seconds = time.perf_counter() - start
    oracle = build_oracle(exact, queries)
    row = {"exact_seconds": exact_seconds}
    for method in ("ddm", "koh"):
        attributor = fit_method(method, stages, progress=False)
        start = time.perf_counter()
        scores = attributor.attribute(queries, "dist1")
        row[f"{method}_seconds"] = time.perf_counter() - start
        score = locate_score(scores, oracle.exact("dist1"))
        row[method], row[f"{method}_spearman"] = score.normalized, score.spearman
    return row


@pytest.mark.slow
def test_ddm_normalized_dist1_stays_above_its_measured_floor(measured):
    mean = sum(row["ddm"] for row in measured) / len(measured)
    assert mean > DDM_NORMALIZED_MIN, measured


@pytest.mark.slow
def test_ddm_scores_rank_clusters_like_exact_retraining(measured):
    mean = sum(row["ddm_spearman"] for row in measured) / len(measured)
    assert mean > DDM_SPEARMAN_MIN, measured


@pytest.mark.slow
def test_the_oracle_sees_koh_locate_influential_clusters(measured):
    mean = sum(row["koh"] for row in measured) / len(measured)
    assert mean > KOH_NORMALIZED_MIN, measured


@pytest.mark.slow
def test_online_ddm_is_much_faster_than_exact_retraining(measured):
    speedup = sum(row["exact_seconds"] for row in measured) / sum(row["ddm_seconds"] for row in measured)
    assert speedup > ONLINE_SPEEDUP_MIN, measured
