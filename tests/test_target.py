"""The cached target: train once, reuse, resume after an interruption, smoke-scale quality."""

import pytest
import torch

from ddm.cache import CacheEntry
from ddm.config import preset, with_overrides
from ddm.resolver import Resolver
from ddm.stages import get_target

TINY = with_overrides(preset("smoke", "digits"), epochs=3, width=8, n_per_class=20, checkpoint_every=0)


def test_trains_once_then_reuses(tmp_path):
    resolver = Resolver(tmp_path)
    first = get_target(TINY, resolver=resolver, device="cpu", progress=False)
    assert get_target(TINY, resolver=resolver, device="cpu", progress=False) is first  # memoized
    second = get_target(TINY, resolver=Resolver(tmp_path), device="cpu", progress=False)  # from disk
    assert second is not first
    assert torch.equal(first.trajectory, second.trajectory)
    assert second.meta == first.meta
    assert first.trajectory.shape[0] == TINY.train.epochs + 1
    for name, value in first.model.state_dict().items():
        assert torch.equal(second.model.state_dict()[name], value)


def test_model_at_rebuilds_trajectory_rows(tmp_path):
    target = get_target(TINY, resolver=Resolver(tmp_path), device="cpu", progress=False)
    theta0 = target.model_at(0)
    last = target.model_at(len(target.trajectory) - 1)
    images = torch.randn(4, 1, 8, 8, dtype=target.trajectory.dtype)
    torch.testing.assert_close(last(images), target.model(images))
    assert not torch.allclose(theta0(images), target.model(images))


def test_interrupted_training_resumes_to_the_same_result(tmp_path, monkeypatch):
    reference = get_target(TINY, resolver=Resolver(tmp_path / "a"), device="cpu", progress=False)
    original = CacheEntry.save_partial

    def save_then_interrupt(self, state):
        original(self, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(CacheEntry, "save_partial", save_then_interrupt)
    cache = Resolver(tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        get_target(TINY, resolver=cache, device="cpu", progress=False)
    monkeypatch.setattr(CacheEntry, "save_partial", original)
    resumed = get_target(TINY, resolver=Resolver(tmp_path / "b"), device="cpu", progress=False)
    assert resumed.meta["resumed"] is True
    assert torch.equal(resumed.trajectory, reference.trajectory)


@pytest.mark.slow
def test_smoke_digits_target_is_accurate(tmp_path):
    """Acceptance: the smoke preset on digits reaches >= 0.85 test accuracy (measured: 0.967)."""
    target = get_target(preset("smoke", "digits"), resolver=Resolver(tmp_path), device="cpu",
                        progress=False)
    assert target.meta["test_acc"] >= 0.85
