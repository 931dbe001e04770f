"""Benchmark fixtures. Scale from ``DDM_BENCH_SCALE`` (smoke on digits | small on MNIST).

The artifact cache is ``$DDM_BENCH_HOME`` (as for the CLI), so a second run reuses the target,
clusters and synsets and times only what each benchmark is about.
"""

import os

import pytest

from ddm.config import preset
from ddm.pipeline import fit_method, prepare, select_queries

DATASET_FOR_SCALE = {"smoke": "digits", "small": "mnist"}


@pytest.fixture(scope="session")
def scale():
    value = os.environ.get("DDM_BENCH_SCALE", "smoke")
    if value not in DATASET_FOR_SCALE:
        raise pytest.UsageError(f"DDM_BENCH_SCALE must be one of {sorted(DATASET_FOR_SCALE)}")
    return value


@pytest.fixture(scope="session")
def stages(scale):
    config = preset(scale, DATASET_FOR_SCALE[scale])
    return prepare(config, device="auto", progress=False)


@pytest.fixture(scope="session")
def ddm(stages):
    return fit_method("ddm", stages, progress=False)


@pytest.fixture(scope="session")
def queries(stages):
    return select_queries(stages.data, 20)
