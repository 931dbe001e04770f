"""The resolver: keys from the stage declarations, load or compute, memos; and that nothing else
reaches for the artifact cache."""

import dataclasses
import gc
import io
import json
import re
import tokenize
from pathlib import Path

import pytest
import torch

import ddm.stages as stages_module
from ddm.config import with_overrides
from ddm.errors import CacheError, ConfigError
from ddm.resolver import ByteLRU, Resolver
from ddm.stages import STAGES, Stage
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]


def test_a_key_moves_with_the_sections_a_stage_reads_and_with_its_upstream_keys(tmp_path):
    resolver = Resolver(tmp_path)
    distilled = with_overrides(TINY, distill_steps=TINY.distill.distill_steps + 1)
    assert resolver.key("target", distilled) == resolver.key("target", TINY)  # target reads no distill
    assert resolver.key("synset", distilled) != resolver.key("synset", TINY)
    retrained = with_overrides(TINY, lr=TINY.train.lr * 2)  # the target's weights change ...
    assert resolver.key("synset", retrained) != resolver.key("synset", TINY)  # ... and so does its synset
    denser = with_overrides(TINY, checkpoint_every=3)  # another trajectory density, the same weights
    assert resolver.key("target", denser) != resolver.key("target", TINY)
    assert resolver.key("retrained", denser, {"seed": 0}) == resolver.key("retrained", TINY, {"seed": 0})
    assert resolver.key("retrained", TINY, {"seed": 0}) != resolver.key("retrained", TINY, {"seed": 1})


def test_a_schema_bump_changes_the_key(tmp_path, monkeypatch):
    resolver = Resolver(tmp_path)
    before = resolver.key("clusters", TINY)
    old = STAGES["clusters"]
    monkeypatch.setitem(STAGES, "clusters", Stage(**{**old.__dict__, "schema": old.schema + 1}))
    assert resolver.key("clusters", TINY) != before
    assert resolver.key("target", TINY) == Resolver(tmp_path).key("target", TINY)


def test_get_computes_once_then_memoizes_then_loads_from_disk(tmp_path):
    calls = []

    def compute(partial):
        calls.append(partial.state)
        return {"x": torch.arange(3)}, {"note": "made"}

    first = Resolver(tmp_path).get("kd", TINY, {"role": "probe"}, compute)
    resolver = Resolver(tmp_path)
    again = resolver.get("kd", TINY, {"role": "probe"}, compute, lambda payload, meta: (payload, meta))
    assert len(calls) == 1 and calls[0] is None  # computed once, from no partial state
    assert torch.equal(first["x"], again[0]["x"]) and again[1]["note"] == "made"
    assert resolver.has("kd", TINY, {"role": "probe"}) and not resolver.has("kd", TINY, {"role": "other"})
    resolver.put("kd", TINY, {"role": "probe"}, {"x": torch.zeros(3)}, {})  # complete: a no-op
    assert torch.equal(resolver.get("kd", TINY, {"role": "probe"}, compute)["x"], torch.arange(3))


def test_an_interrupted_compute_resumes_from_its_partial_state(tmp_path):
    def interrupted(partial):
        partial.save({"done": torch.tensor(2)})
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Resolver(tmp_path).get("kd", TINY, {"role": "probe"}, interrupted)
    seen = []

    def resumed(partial):
        seen.append(int(partial.state["done"]))
        return torch.ones(1), {}

    Resolver(tmp_path).get("kd", TINY, {"role": "probe"}, resumed)
    assert seen == [2]


def carried(root, carry):
    resolver = Resolver(root)
    resolver.carry_to(carry)
    return resolver


def test_a_carried_run_goes_on_where_it_stopped_on_a_machine_with_an_empty_cache(tmp_path):
    """``run --checkpoint-dir``: the finished rows of a stopped run, then the finished entry, travel
    in the carry directory; another cache starts from them instead of recomputing."""
    carry, fields = tmp_path / "carry", {"setting": "probe", "seed": 0}

    def stopped(partial):
        partial.save({"cells": {"Koh": {"value": 0.5}}})
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        carried(tmp_path / "a", carry).get("standard", None, fields, stopped)
    [path] = (carry / "standard").glob("*.json")
    assert json.loads(path.read_text())["partial"] == {"cells": {"Koh": {"value": 0.5}}}  # readable JSON
    seen = []

    def resumed(partial):
        seen.append(partial.state)
        return {"cells": {"Koh": {"value": 0.5}, "TRAK": {"value": 0.25}}}, {"threads": 2}

    done = carried(tmp_path / "b", carry).get("standard", None, fields, resumed)
    assert seen == [{"cells": {"Koh": {"value": 0.5}}}]
    record = json.loads(path.read_text())
    assert "partial" not in record and record["payload"] == done and record["meta"] == {"threads": 2}
    third = carried(tmp_path / "c", carry)
    assert third.get("standard", None, fields, lambda partial: pytest.fail("recomputed")) == done
    assert third.has("standard", None, fields)  # now in that cache too
    assert Resolver(tmp_path / "d").get("standard", None, fields, resumed) == done  # no carry: computed
    assert len(seen) == 2 and seen[1] is None


def test_a_carry_keeps_tensor_state_and_the_partial_a_cache_held_before_carrying(tmp_path):
    carry, fields = tmp_path / "carry", {"setting": "probe"}

    def stopped(partial):
        partial.save({"truth": torch.arange(3.0), "rng": torch.get_rng_state()})
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Resolver(tmp_path / "a").get("standard", None, fields, stopped)  # not carried yet

    def stopped_again(partial):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # a later run with the carry takes the cache's partial along
        carried(tmp_path / "a", carry).get("standard", None, fields, stopped_again)
    seen = []

    def resumed(partial):
        seen.append(partial.state)
        return {"ok": 1}, {}

    carried(tmp_path / "b", carry).get("standard", None, fields, resumed)
    assert torch.equal(seen[0]["truth"], torch.arange(3.0)) and seen[0]["rng"].dtype == torch.uint8


def test_a_carry_refuses_a_file_of_another_config_and_leaves_tensor_stages_alone(tmp_path):
    carry, fields = tmp_path / "carry", {"setting": "probe"}
    carried(tmp_path / "a", carry).get("standard", None, fields, lambda partial: ({"ok": 1}, {}))
    [path] = (carry / "standard").glob("*.json")
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "config": {**record["config"], "setting": "other"}}))
    with pytest.raises(CacheError, match="different configuration"):
        carried(tmp_path / "b", carry).get("standard", None, fields, lambda partial: ({"ok": 1}, {}))
    carried(tmp_path / "a", carry).get("kd", TINY, {"role": "probe"}, lambda partial: (torch.ones(1), {}))
    assert not (carry / "kd-students").exists()  # weights stay in the cache


def test_a_carry_keeps_a_long_fits_unfinished_rows_but_never_its_tensor_payload(tmp_path):
    """The influence stage (``carry_partial``): the exact linear response's rows done on one machine
    are where another machine's fit starts; the finished payload stays in each machine's cache."""
    carry, fields = tmp_path / "carry", {"method": "probe"}

    def stopped(partial):
        partial.save({"changes": torch.ones(2, 3, dtype=torch.float64)})
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        carried(tmp_path / "a", carry).get("influence", TINY, fields, stopped)
    [path] = (carry / "influence").glob("*.json")
    seen = []

    def resumed(partial):
        seen.append(partial.state)
        rows = torch.cat([partial.state["changes"], torch.zeros(1, 3, dtype=torch.float64)])
        partial.save({"changes": rows})
        return {"changes": rows}, {}

    done = carried(tmp_path / "b", carry).get("influence", TINY, fields, resumed)
    assert torch.equal(seen[0]["changes"], torch.ones(2, 3, dtype=torch.float64))
    record = json.loads(path.read_text())
    assert "payload" not in record and "partial_pt" in record  # the last rows, not the payload

    def finished(partial):  # a fit whose rows are all done: nothing left to compute
        seen.append(partial.state)
        return {"changes": partial.state["changes"]} if partial.state else {"changes": torch.zeros(0, 3)}, {}

    assert torch.equal(carried(tmp_path / "c", carry).get("influence", TINY, fields, finished)["changes"],
                       done["changes"])  # another machine rebuilds the payload from the carried rows
    assert Resolver(tmp_path / "d").get("influence", TINY, fields, finished)["changes"].shape == (0, 3)
    assert seen[2] is None  # without the carry: a fresh fit


def test_a_bad_config_is_refused_before_any_work(tmp_path):
    distill = dataclasses.replace(TINY.distill)
    object.__setattr__(distill, "distill_steps", -1)  # past the check made when a config is made
    bad = dataclasses.replace(TINY)
    object.__setattr__(bad, "distill", distill)
    with pytest.raises(ConfigError, match="distill_steps"):
        Resolver(tmp_path).get("synset", bad, {}, lambda partial: pytest.fail("computed"))
    assert not any(tmp_path.iterdir())


def test_memory_stages_keep_per_key_or_per_owner_and_forget(tmp_path):
    resolver = Resolver(tmp_path)
    made = []

    def make():
        made.append(1)
        return len(made)

    assert resolver.memo("data", TINY, {"data_root": None}, make) == 1
    assert resolver.memo("data", TINY, {"data_root": None}, make) == 1  # the same key: kept
    owner = type("Owner", (), {})()
    assert resolver.memo("removals", None, {"q": 1}, make, owner=owner) == 2
    assert resolver.memo("removals", None, {"q": 1}, make, owner=owner) == 2
    assert resolver.memo("removals", None, {"q": 2}, make, owner=owner) == 3  # only its latest is kept
    assert resolver.memo("removals", None, {"q": 1}, make, owner=owner) == 4
    resolver.forget("removals", owner=owner)
    assert resolver.memo("removals", None, {"q": 1}, make, owner=owner) == 5
    del owner
    gc.collect()
    assert not any(slot[0] == "owned" for slot in resolver._memo)  # dropped with its owner
    with pytest.raises(ValueError, match="memory only"):
        resolver.get("data", TINY, {}, lambda partial: None)


def test_the_shared_memo_drops_its_least_recently_used_values_past_its_budget():
    lru = ByteLRU(budget=2 * 8 * 4)  # two values of four float64
    for key in "abc":
        lru[key] = {"g": torch.zeros(4, dtype=torch.float64)}
        if key == "b":
            lru["a"]  # a was used last: b goes first
    assert "a" in lru and "c" in lru and "b" not in lru and len(lru) == 2


CACHE_CALLS = re.compile(r"^(ArtifactCache|CacheEntry|get_or_compute|save_partial|load_partial|load_torch|"
                         r"load_json|config_key|manifest)$")  # the cache's names, token by token
PURE = ("ddm/target.py", "ddm/cluster.py", "ddm/distill.py", "ddm/train.py", "ddm/functional.py",
        "ddm/datamodel.py", "ddm/objectives.py", "ddm/metrics.py")


def test_only_the_stage_module_and_the_resolver_reach_the_cache():
    """Issue 20: cache calls live in ``ddm/resolver.py`` (and the cache itself); the stage module
    goes through the resolver; the computing modules import neither, nor the stage module."""
    sources = [path for folder in ("ddm", "baselines", "bench") for path in (ROOT / folder).rglob("*.py")]
    assert len(sources) > 40
    offenders = []
    for path in sources:
        name = str(path.relative_to(ROOT))
        if name in ("ddm/cache.py", "ddm/resolver.py"):
            continue
        tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
        code = [(token.start[0], token.string) for token in tokens
                if token.type not in (tokenize.STRING, tokenize.COMMENT)]  # docstrings may name it
        offenders += [f"{name}:{line}: {text}" for line, text in code if CACHE_CALLS.search(text)]
        if re.search(r"^\s*(from|import) ddm\.cache\b", path.read_text(), re.M):
            offenders.append(f"{name}: imports ddm.cache")
    assert offenders == []
    for name in PURE:
        text = (ROOT / name).read_text()
        assert not re.search(r"^(from|import) ddm\.(cache|resolver|stages)\b", text, re.M), name


def test_the_getters_live_beside_the_declarations():
    for getter in ("get_data", "get_target", "get_clustering", "get_synset"):
        assert callable(getattr(stages_module, getter))
