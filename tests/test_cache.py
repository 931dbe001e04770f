"""The artifact cache: keys, atomic writes, refusal of mismatched or corrupted entries, partials."""

import json

import pytest
import torch

from ddm.cache import ArtifactCache, atomic_write_bytes, config_key, torch_bytes
from ddm.errors import CacheError


@pytest.fixture
def cache(tmp_path):
    return ArtifactCache(tmp_path / "cache")


def test_key_is_stable_and_order_independent():
    assert config_key("target", {"a": 1, "b": [1, 2]}) == config_key("target", {"b": [1, 2], "a": 1})
    assert config_key("target", {"a": 1}) != config_key("target", {"a": 2})
    assert config_key("target", {"a": 1}) != config_key("synset", {"a": 1})


def test_save_then_load_round_trips(cache):
    entry = cache.entry("target", {"lr": 0.1})
    assert not entry.is_complete()
    entry.save({"weights.pt": torch_bytes({"w": torch.arange(5.0)})}, meta={"acc": 0.9})
    again = cache.entry("target", {"lr": 0.1})
    assert again.is_complete()
    assert torch.equal(again.load_torch("weights.pt")["w"], torch.arange(5.0))
    assert again.verify()["meta"] == {"acc": 0.9}
    assert json.loads((again.path / "config.json").read_text()) == {"lr": 0.1}


def test_truncated_file_is_reported_not_reused(cache):
    entry = cache.entry("target", {"lr": 0.1})
    entry.save({"weights.pt": torch_bytes(torch.zeros(100))})
    data = (entry.path / "weights.pt").read_bytes()
    (entry.path / "weights.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CacheError, match="truncated"):
        entry.load_torch("weights.pt")


def test_flipped_byte_is_reported(cache):
    entry = cache.entry("target", {"lr": 0.1})
    entry.save({"weights.pt": torch_bytes(torch.zeros(100))})
    data = bytearray((entry.path / "weights.pt").read_bytes())
    data[-10] ^= 0xFF
    (entry.path / "weights.pt").write_bytes(bytes(data))
    with pytest.raises(CacheError, match="hash mismatch"):
        entry.verify()


def test_entry_written_for_another_config_is_refused(cache):
    entry = cache.entry("target", {"lr": 0.1})
    entry.save({"weights.pt": b"x"})
    (entry.path / "config.json").write_text(json.dumps({"lr": 0.2}))
    with pytest.raises(CacheError, match="different configuration"):
        cache.entry("target", {"lr": 0.1}).verify()


def test_partial_state_round_trips_and_is_cleared_on_save(cache):
    entry = cache.entry("target", {"lr": 0.1})
    assert entry.load_partial() is None
    entry.save_partial({"epochs_done": 3})
    assert entry.load_partial() == {"epochs_done": 3}
    entry.save({"weights.pt": b"x"})
    assert entry.load_partial() is None


def test_corrupt_partial_is_discarded(cache):
    entry = cache.entry("target", {"lr": 0.1})
    entry.save_partial({"epochs_done": 3})
    (entry.path / "partial.pt").write_bytes(b"garbage")
    assert entry.load_partial() is None


def test_failed_atomic_write_leaves_old_file_and_no_temp(tmp_path):
    path = tmp_path / "file.bin"
    atomic_write_bytes(path, b"old")

    with pytest.raises(TypeError):
        atomic_write_bytes(path, object())  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_get_or_compute_computes_once_then_loads(cache):
    calls = []

    def compute():
        calls.append("compute")
        entry.save({"value.pt": torch_bytes(torch.tensor([1.0, 2.0]))})
        return torch.tensor([1.0, 2.0])

    entry = cache.entry("synset", {"k": 1})
    first = entry.get_or_compute(lambda: entry.load_torch("value.pt"), compute)
    again = cache.entry("synset", {"k": 1})
    second = again.get_or_compute(lambda: again.load_torch("value.pt"), compute)
    assert calls == ["compute"]
    assert torch.equal(first, second)


def test_get_or_compute_does_not_mark_a_failed_compute_complete(cache):
    entry = cache.entry("synset", {"k": 2})

    def fail():
        raise RuntimeError("diverged")

    with pytest.raises(RuntimeError):
        entry.get_or_compute(lambda: "loaded", fail)
    assert not entry.is_complete()
    assert entry.get_or_compute(lambda: "loaded", lambda: "computed again") == "computed again"


def test_cells_json_is_verified_before_use(cache):
    entry = cache.entry("cells", {"k": 3})
    entry.save({"cells.json": json.dumps({"cells": {}}).encode()})
    assert entry.load_json("cells.json") == {"cells": {}}
    (entry.path / "cells.json").write_text('{"cells": {"edited": 1}}')
    with pytest.raises(CacheError):
        entry.load_json("cells.json")
