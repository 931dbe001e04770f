"""Shared tiny fixtures: a digits target small enough to train in about a second."""

import pytest

from ddm.cache import ArtifactCache
from ddm.config import preset, with_overrides
from ddm.target import get_target, load_data

# 30 images per class, width 8, 4 epochs -> 5 checkpoints (one per epoch, not the smoke preset's
# denser trajectory); 3 clusters per class (K = 30).
TINY = with_overrides(preset("smoke", "digits"), epochs=4, width=8, n_per_class=30, checkpoint_every=0,
                      clusters_per_class=3, step_length=2, distill_steps=20, embedding="pixels")


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    return ArtifactCache(tmp_path_factory.mktemp("ddm-cache"))


@pytest.fixture(scope="session")
def digits_data():
    return load_data(TINY)


@pytest.fixture(scope="session")
def digits_target(tiny_cache, digits_data):
    return get_target(TINY, data=digits_data, cache=tiny_cache, device="cpu", progress=False)
