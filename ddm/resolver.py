"""The one way to an artifact: keys derived from the stage declarations, then lock, load or compute.

For a request ``resolver.get(stage, config, fields, compute)`` the resolver

1. checks the config (``ddm.config.validate``) before any work;
2. derives the key from the declaration (``ddm.stages``):
   ``H(kind, schema, {section: the config's section, minus the declared omissions},
   {upstream: its key} for the stages it is keyed by, fields)``: the request's own ``fields`` say
   what the config does not (a removed set, a method's options, a cluster-id digest);
3. returns the value it already resolved in this process (stages declared ``memo``), else, under
   the entry's lock, loads the entry when it is complete, or calls ``compute(partial)`` and saves
   what it returns: ``(payload, meta)``, the payload written to the declared file (``.pt`` with
   torch, tensors and plain containers only; ``.json`` as JSON), the meta into the manifest.
   ``partial`` carries the unfinished work of an interrupted run (``partial.state``) and takes new
   progress (``partial.save(state)``), so a long stage resumes instead of starting over;
4. hands ``build(payload, meta)`` back (the domain object: a ``Target``, a ``Clustering``...).

With a carry directory (:meth:`Resolver.carry_to`, ``run --checkpoint-dir``) the stages whose payload
is JSON (a seed's cells, an lds-standard setting) are also kept there with their unfinished work,
and an entry missing from the cache is taken from there, complete or partial: a directory to commit
so that a run stopped on one machine goes on on another (the key still names config and code).
A tensor stage declared ``carry_partial`` (the influence fits) keeps only its unfinished work there,
as torch bytes, never its payload: a fit of hours (the exact linear response's rows) then goes on
on another machine, and once finished, its last state (every row) lets another machine rebuild the
payload without recomputing. Its meta's seconds add up the machines' (timings fit on a scratch
cache, without a carry).

Stages without a cache kind are memory only (:meth:`Resolver.memo`): computed once per key and
kept, ``"latest"`` ones only their owner's last value. Nothing else in the suite touches the
artifact cache (``ddm.cache``): the computing modules are pure, and a test checks that no other
module reaches for it.
"""

from __future__ import annotations

import json
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ddm.cache import ArtifactCache, CacheEntry, Carry, config_key
from ddm.config import ExperimentConfig, key_view, validate
from ddm.io import torch_bytes
from ddm.paths import home
from ddm.stages import STAGES, Stage

T = TypeVar("T")
Payload = tuple[Any, dict[str, Any]]  # what a compute returns: the payload and its manifest meta
SHARED_GRADIENT_BYTES = 2 * 2**30  # the real-gradient memo's budget (LRU, bytes)


class Partial:
    """The unfinished work of one entry: ``state`` (None when there is none) and ``save(state)``."""

    def __init__(self, entry: CacheEntry | None, carry: Carry | None = None) -> None:
        self._entry = entry
        self._carry = carry
        self._state: dict[str, Any] | None = None
        self._loaded = entry is None

    @property
    def state(self) -> dict[str, Any] | None:
        if not self._loaded:
            self._state, self._loaded = self._entry.load_partial(), True
        return self._state

    def save(self, state: dict[str, Any]) -> None:
        if self._entry is not None:
            self._entry.save_partial(state)
            if self._carry is not None:
                self._carry.keep_partial(self._entry, state)


class ByteLRU:
    """A mapping that drops its least recently used values past ``budget`` bytes (values are dicts
    of tensors); at least one value is always kept."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._items: OrderedDict[Any, Any] = OrderedDict()

    def __contains__(self, key: Any) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, key: Any) -> Any:
        self._items.move_to_end(key)
        return self._items[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._items[key] = value
        total = sum(map(_nbytes, self._items.values()))
        while total > self.budget and len(self._items) > 1:
            total -= _nbytes(self._items.popitem(last=False)[1])


def _nbytes(value: Mapping[str, Any]) -> int:
    return sum(t.numel() * t.element_size() for t in value.values())


def section_view(config: ExperimentConfig, section: str, omit: tuple[str, ...]) -> dict[str, Any]:
    return key_view(getattr(config, section), omit)


class Resolver:
    """Every stage's artifact under ``root`` (default ``$DDM_BENCH_HOME`` or ``~/.cache/ddm-bench``)
    and the values resolved in this process."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else home()
        self._store = ArtifactCache(self.root)
        self._memo: dict[tuple, Any] = {}
        self._lru: dict[str, ByteLRU] = {}
        self._carry: Carry | None = None

    def carry_to(self, directory: Path | str | None) -> None:
        """Also keep the JSON stages' entries and unfinished work under ``directory`` and take them
        from there when the cache lacks them (None: stop carrying)."""
        self._carry = Carry(directory) if directory is not None else None

    def __repr__(self) -> str:
        return f"Resolver({self.root})"

    # -- keys ---------------------------------------------------------------------------------
    def describe(self, name: str, config: ExperimentConfig | None,
                 fields: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """What the key of stage ``name`` is the hash of (the entry's ``config.json``)."""
        stage = STAGES[name]
        keyed_by = stage.consumes if stage.keyed_by is None else stage.keyed_by
        if config is None and (stage.sections or keyed_by):
            raise ValueError(f"stage {name!r} reads the config; none was given")
        if config is not None:
            validate(config)  # before any work (a config is also checked when it is made)
        described: dict[str, Any] = {"stage": name, "schema": stage.schema}
        described.update({section: section_view(config, section, stage.omit) for section in stage.sections})
        if keyed_by:
            described["upstream"] = {up: self.key(up, config) for up in keyed_by}
        described.update(fields or {})
        return described

    def key(self, name: str, config: ExperimentConfig | None, fields: Mapping[str, Any] | None = None) -> str:
        return config_key(STAGES[name].kind or name, self.describe(name, config, fields))

    def _entry(self, name: str, config: ExperimentConfig | None,
               fields: Mapping[str, Any] | None) -> tuple[Stage, CacheEntry]:
        stage = STAGES[name]
        if stage.kind is None or stage.payload is None:
            raise ValueError(f"stage {name!r} is memory only; use Resolver.memo")
        return stage, self._store.entry(stage.kind, self.describe(name, config, fields))

    # -- cached stages ------------------------------------------------------------------------
    def get(self, name: str, config: ExperimentConfig | None, fields: Mapping[str, Any] | None,
            compute: Callable[[Partial], Payload], build: Callable[[Any, dict[str, Any]], T] | None = None,
            memo_tag: Any = None) -> T:
        """Stage ``name``'s value: memoized, loaded, or computed and saved (see the module doc).
        ``memo_tag`` tells apart values of one key built differently (e.g. on another device)."""
        stage, entry = self._entry(name, config, fields)
        build = build or (lambda payload, meta: payload)
        memo_key = (name, entry.key, memo_tag)
        if stage.memo and memo_key in self._memo:
            return self._memo[memo_key]

        whole = stage.payload.endswith(".json")  # carried complete; else only a fit's unfinished work
        carry = self._carry if whole or stage.carry_partial else None

        def load() -> T:
            payload, meta = self._load(stage, entry)
            if carry is not None and whole:
                carry.keep(entry, payload, meta)
            return build(payload, meta)

        def compute_and_save() -> T:
            carried = carry.complete(entry) if carry is not None and whole else None
            if carried is None:
                if carry is not None:
                    carry.sync_partial(entry)
                carried = compute(Partial(entry, carry))
            payload, meta = carried
            self._save(stage, entry, payload, meta)
            if carry is not None and whole:
                carry.keep(entry, payload, meta)
            return build(payload, meta)

        value = entry.get_or_compute(load, compute_and_save)
        if stage.memo:
            self._memo[memo_key] = value
        return value

    def has(self, name: str, config: ExperimentConfig | None,
            fields: Mapping[str, Any] | None = None) -> bool:
        """Whether the entry is complete (computed and saved by some run)."""
        return self._entry(name, config, fields)[1].is_complete()

    def put(self, name: str, config: ExperimentConfig | None, fields: Mapping[str, Any] | None,
            payload: Any, meta: dict[str, Any]) -> None:
        """Save a payload computed elsewhere (a worker, a Ray task); a no-op when the entry is complete."""
        stage, entry = self._entry(name, config, fields)
        entry.get_or_compute(lambda: None, lambda: self._save(stage, entry, payload, meta))

    def meta(self, name: str, config: ExperimentConfig | None,
             fields: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The manifest meta of a complete entry (what computed it, how long it took)."""
        return self._entry(name, config, fields)[1].manifest()["meta"]

    def location(self, name: str, config: ExperimentConfig | None,
                 fields: Mapping[str, Any] | None = None) -> Path:
        """The directory of the entry (for messages to the user)."""
        return self._entry(name, config, fields)[1].path

    @staticmethod
    def _save(stage: Stage, entry: CacheEntry, payload: Any, meta: dict[str, Any]) -> None:
        data = json.dumps(payload).encode() if stage.payload.endswith(".json") else torch_bytes(payload)
        entry.save({stage.payload: data}, meta)

    @staticmethod
    def _load(stage: Stage, entry: CacheEntry) -> Payload:
        payload = (entry.load_json(stage.payload) if stage.payload.endswith(".json")
                   else entry.load_torch(stage.payload))
        return payload, entry.manifest()["meta"]

    # -- memory stages ------------------------------------------------------------------------
    def memo(self, name: str, config: ExperimentConfig | None, fields: Mapping[str, Any] | None,
             compute: Callable[[], T], owner: object | None = None) -> T:
        """Memory stage ``name``'s value, computed once per key. With ``owner`` the value is that
        object's alone and only its latest is kept (dropped when the owner is)."""
        key = self.key(name, config, fields)
        slot = ("owned", name, id(owner)) if owner is not None else (name, key)
        held = self._memo.get(slot)
        if held is not None and held[0] == key:
            return held[1]
        value = compute()
        if owner is not None and held is None:
            weakref.finalize(owner, self._memo.pop, slot, None)
        self._memo[slot] = (key, value)
        return value

    def forget(self, name: str, owner: object | None = None) -> None:
        """Drop what memory stage ``name`` keeps (only ``owner``'s when given)."""
        for slot in list(self._memo):
            owned = slot[0] == "owned" and slot[1] == name and (owner is None or slot[2] == id(owner))
            if owned or (owner is None and slot[0] == name):
                self._memo.pop(slot)

    def shared(self, name: str, budget: int = SHARED_GRADIENT_BYTES) -> ByteLRU:
        """A bounded memo shared by every user of memory stage ``name`` in this process (the real
        per-cluster gradients: distillation and the fine-tune's cluster weights need the same ones)."""
        if STAGES[name].kind is not None:
            raise ValueError(f"stage {name!r} is cached on disk, not shared in memory")
        return self._lru.setdefault(name, ByteLRU(budget))
