"""CI quality and speed regression at smoke scale on digits (slow; CI runs it).

Setting: the smoke preset under the default numerics (float64, ReLU: an oracle that reproduces its
own rerun bit for bit, see tables/noise_*), C = 2 clusters per class (K = 20, clusters of about 50
images), 20 test queries, SEEDS (five), exact retraining (same-seed protocol) as the ground truth. The
seeds run in two processes of one thread each: in float64 the thread count does not move these numbers
beyond 1e-9 (tests/test_numerics.py checks 1 against 2 threads), and the online speedup is a ratio of
two times measured in the same process.

Measured on 2 CPU cores by the computation below (per seed 0-4, MEASURED): each floor is the
five-seed mean minus 3 standard errors of that mean (sample std / sqrt(5)), so a loss of the signal
trips it while the spread the seeds show does not. A quantity whose floor would
be <= 0 has no signal at this scale to guard, and is not asserted (see GUARDED).
"""

import math
import time

import numpy as np
import pytest

from baselines.exact import ExactAttributor
from bench.evaluation import build_oracle
from ddm.config import preset, with_overrides
from ddm.metrics import locate_score
from ddm.pipeline import fit_method, prepare, select_queries
from ddm.resolver import Resolver

SEEDS = (0, 1, 2, 3, 4)
# Per-seed values (seeds 0-4) measured on 2 CPU cores, 2026-12-02, float64 + ReLU, by _measure below
# (`python -c` over SEEDS); the floors are derived from them. Means: DDM normalized 0.233 (floor 0.020),
# DDM Spearman 0.088 (floor 0.011), Koh normalized 0.491 (floor 0.284), Koh Spearman 0.189 (floor
# 0.081). Online DDM against exact retraining of the K models: 35x-49x.
MEASURED: dict[str, tuple[float, ...]] = {
    "ddm_normalized": (0.4905, 0.0997, 0.1026, 0.2196, 0.2542),
    "ddm_spearman": (-0.0066, 0.0864, 0.1263, 0.1393, 0.0941),
    "koh_normalized": (0.3004, 0.7316, 0.4928, 0.4537, 0.4758),
    "koh_spearman": (0.1785, 0.0985, 0.3165, 0.1541, 0.1975),
    "speedup": (37.7629, 49.3355, 34.6943, 40.0328, 41.6491),
}


def floor_of(values: tuple[float, ...], standard_errors: float = 3.0) -> float:
    """Mean minus ``standard_errors`` standard errors of the mean (sample std / sqrt(n))."""
    array = np.asarray(values, dtype=float)
    return float(array.mean() - standard_errors * array.std(ddof=1) / math.sqrt(len(array)))


# Only quantities whose floor is above 0 guard a signal; the rest are measured and reported only.
FLOORS = {name: floor_of(values) for name, values in MEASURED.items()}
GUARDED = {name: value for name, value in FLOORS.items() if value > 0 and name != "speedup"}
ONLINE_SPEEDUP_MIN = 20.0  # a ratio of one run; measured per seed in MEASURED["speedup"]


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """The seeds in two processes of one thread each, sharing one cache: the quality numbers are the
    same under any thread count in float64, and on 2 cores two one-thread processes finish the five
    seeds sooner than one process on two threads (whose second thread buys little on these models)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    home = str(tmp_path_factory.mktemp("regression-home"))
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_measure_on_one_thread, [home] * len(SEEDS), SEEDS))


def _measure_on_one_thread(home: str, seed: int) -> dict[str, float]:
    import torch

    torch.set_num_threads(1)
    return _measure(Resolver(home), seed)


def _measure(cache: Resolver, seed: int) -> dict[str, float]:
    """One seed: exact retraining, then DDM and Koh scored against it (normalized, Spearman, time)."""
    config = with_overrides(preset("smoke", "digits"), clusters_per_class=2, seed=seed, cluster_seed=seed,
                            distill_seed=seed, attribute_seed=seed)
    stages = prepare(config, resolver=cache, device="cpu", progress=False)
    queries = select_queries(stages.data, 20, seed)
    start = time.perf_counter()
    exact = ExactAttributor(config, resolver=cache, progress=False)
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
        row[f"{method}_normalized"], row[f"{method}_spearman"] = score.normalized, score.spearman
    row["speedup"] = exact_seconds / row["ddm_seconds"]
    return row


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(GUARDED))
def test_signal_stays_above_its_floor_over_five_seeds(measured, name):
    mean = sum(row[name] for row in measured) / len(measured)
    assert mean > GUARDED[name], ([round(row[name], 4) for row in measured], MEASURED[name])


@pytest.mark.slow
def test_online_ddm_is_much_faster_than_exact_retraining(measured):
    speedup = sum(row["exact_seconds"] for row in measured) / sum(row["ddm_seconds"] for row in measured)
    assert speedup > ONLINE_SPEEDUP_MIN, measured
