"""Attribution time of every method next to DDM's online time and exact retraining, in one run.

Each benchmark times ``attribute`` for the same 20 queries and objective ``dist1`` (the online
cost; 3 rounds, the remembered predictions forgotten before each); the offline ``fit`` time is
recorded in ``extra_info``. Exact retraining of all K models is timed on ``EXACT_SAMPLE`` clusters
and scaled to K (the models cost the same).
"""

import time

import pytest

import baselines  # noqa: F401  (declares the baseline methods)
from ddm.pipeline import fit_method

METHODS = ["random", "predict", "cluster", "koh", "fastif", "scaleup", "ddm_match", "ddm"]
EXACT_SAMPLE = 2


@pytest.mark.parametrize("method", METHODS)
def test_attribution_time(benchmark, stages, queries, method):
    start = time.perf_counter()
    attributor = fit_method(method, stages, progress=False)
    offline = time.perf_counter() - start
    benchmark.group = "methods"
    scores = benchmark.pedantic(attributor.attribute, args=(queries, "dist1"), setup=attributor.forget,
                                rounds=3, warmup_rounds=0)
    benchmark.extra_info.update(offline_seconds=offline, method=method)
    assert scores.shape == (stages.clustering.n_clusters, len(queries))


def test_exact_retraining_time(benchmark, stages):
    from benchmarks.test_speed import _exact_retraining_seconds

    benchmark.group = "methods"
    per_model = benchmark.pedantic(_exact_retraining_seconds, args=(stages, range(EXACT_SAMPLE)),
                                   rounds=2, warmup_rounds=1)
    benchmark.extra_info.update(per_model_seconds=per_model,
                                all_k_seconds=per_model * stages.clustering.n_clusters)
    assert per_model > 0
