"""Shared tiny fixtures: a digits target small enough to train in about a second."""

import pytest

from ddm.config import preset, with_overrides
from ddm.resolver import Resolver
from ddm.stages import get_target
from ddm.target import load_data

# 30 images per class, width 8, 4 epochs -> 5 checkpoints (one per epoch, not the smoke preset's
# denser trajectory); 3 clusters per class (K = 30).
TINY = with_overrides(preset("smoke", "digits"), epochs=4, width=8, n_per_class=30, checkpoint_every=0,
                      clusters_per_class=3, step_length=2, distill_steps=20, embedding="pixels")


@pytest.fixture(scope="session")
def tiny_resolver(tmp_path_factory):
    return Resolver(tmp_path_factory.mktemp("ddm-cache"))


@pytest.fixture(scope="session")
def digits_data():
    return load_data(TINY)


@pytest.fixture(scope="session")
def digits_target(tiny_resolver, digits_data):
    return get_target(TINY, data=digits_data, resolver=tiny_resolver, device="cpu", progress=False)


def retrained_entry(resolver, target, spec):
    """The cache entry of one exact retraining of ``target`` (the tests look inside it)."""
    from baselines.exact import retrain_fields

    return resolver._entry("retrained", target.config, retrain_fields(spec))[1]
