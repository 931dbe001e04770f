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


# The targets that take longest at the tiny config (measured in one `run all`, 2 threads: 108, 90, 55,
# 55 and 39 of its 474 s) go first, so that neither process is left with a long one at the end.
LONGEST_TARGETS = ("lds-standard", "mislabel", "ladder", "timings", "lds")


def _run_one_thread(args: list[str]) -> tuple[int, str]:
    import torch
    from click.testing import CliRunner

    from bench.cli import main

    torch.set_num_threads(1)
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.output


@pytest.fixture(scope="session")
def ran_all(tmp_path_factory):
    """Every target on the tiny config (tests/test_bench.py's TINY_RUN) with two seeds, once for the
    session: one `ddm-bench run TARGET` at a time in each of two processes of one thread, sharing
    one cache (its per-entry locks). On 2 cores this took 337 s where `run all` in one process on two
    threads took 474 s: the second thread buys little on these tiny models (the metagradient chunk
    test: 33.4 s on 2 threads, 35.6 s on 1). Results are the same under any thread count, and
    test_a_second_run_reuses_every_seed runs `run all` itself on this home and finds every seed
    cached. Returns the root and those `run all` arguments."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from tests.test_bench import TINY_RUN, registered_targets

    root = tmp_path_factory.mktemp("run-all")
    args = ["--home", str(root / "home"), "run", "all", *TINY_RUN, "--seeds", "2",
            "--results-dir", str(root / "results"), "--tables-dir", str(root / "tables")]
    names = [*LONGEST_TARGETS, *(name for name in registered_targets() if name not in LONGEST_TARGETS)]
    assert set(names) == set(registered_targets())
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        runs = list(pool.map(_run_one_thread, [[*args[:3], name, *args[4:]] for name in names]))
    for name, (code, output) in zip(names, runs, strict=True):
        assert code == 0, f"{name}: {output}"
    return root, args


@pytest.fixture
def ran_all_home(ran_all, tmp_path):
    """A copy of ``ran_all``'s cache (~30 MB) for a test that runs more on it: its stages and seeds
    are reused, and what the test adds stays out of the shared one."""
    import shutil

    return shutil.copytree(ran_all[0] / "home", tmp_path / "home")
