"""The declared stage graph: what every artifact of the suite is, in one place.

Each :class:`Stage` names its cache kind (``None`` for a stage computed in memory, never cached),
its schema (bump it when the stage computes something else from the same inputs: its cache entries
and every result that used it become stale), the config sections it reads, the stages it consumes
and the source files whose code computes it. The modules that compute a stage take its kind and
schema from here; ``ddm-bench report --check`` (``bench.staleness``) reads the same declarations to
tell, for each committed result, whether a stage it depends on changed its schema or its code since
the result was computed.

Departure from the design the stage graph is heading to (issue 20): the cache keys are still built
by the computing modules (from these kinds and schemas); one resolver that derives every key from
the declarations is the next step.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str
    kind: str | None  # the cache directory of its artifacts; None: computed in memory
    schema: int
    sections: tuple[str, ...]  # config sections it reads
    consumes: tuple[str, ...]  # upstream stages
    sources: tuple[str, ...]  # files (or folders, ending in "/") whose code computes it
    what: str


STAGES: dict[str, Stage] = {stage.name: stage for stage in (
    Stage("data", None, 1, ("data",), (), ("ddm/data/",),
          "the dataset's splits, normalized, subset and noised as the data section says"),
    Stage("target", "target", 1, ("data", "model", "train"), ("data",),
          ("ddm/target.py", "ddm/train.py", "ddm/models/"),
          "the trained target and its trajectory"),
    Stage("clusters", "clusters", 1, ("data", "model", "train", "cluster"), ("data", "target"),
          ("ddm/cluster.py",), "the K clusters (and the extractor that embeds them)"),
    Stage("synset", "synset", 2, ("distill",), ("data", "target", "clusters"),
          ("ddm/distill.py", "ddm/functional.py"),
          "the distilled synset (reverse or forward gradient matching); 2: real per-cluster gradients "
          "by one backward per cluster on the CPU"),
    Stage("online", None, 1, ("attribute",), ("target", "clusters", "synset"),
          ("ddm/attribute.py", "ddm/datamodel.py", "ddm/attributor.py", "ddm/objectives.py"),
          "DDM's online stage: fine-tunes on the synset, the linear datamodel, the objectives"),
    Stage("influence", "influence", 2, (), ("data", "target", "clusters"),
          ("baselines/influence.py", "baselines/koh.py", "baselines/fastif.py", "baselines/scaleup.py",
           "baselines/solvers.py", "baselines/similarity.py"),
          "the influence baselines' offline tensors (and the similarity baselines); 2: per-cluster "
          "gradient loop"),
    Stage("retrained", "retrained", 2, ("data", "model", "train"), ("data", "target"),
          ("baselines/exact.py", "baselines/distributed.py"),
          "exact retrainings without a removed set (the oracle); 2: keyed by the target's weights key"),
    Stage("kd", "kd-students", 1, ("data", "model", "train"), ("data", "target"),
          ("bench/transfer.py",), "knowledge-distillation teachers and students (Table 7)"),
    Stage("cells", "cells", 4, ("data", "model", "train", "cluster", "distill", "attribute"),
          ("data", "target", "clusters"), ("bench/evaluation.py",),
          "one seed's cells of a benchmark target (the target's own module is one of its sources); "
          "4: the oracle's numerical floor, the ReLU rows"),
)}


def stage(name: str) -> Stage:
    return STAGES[name]


def upstream(names: Iterable[str]) -> list[str]:
    """``names`` and every stage they consume, transitively, in declaration order."""
    wanted: set[str] = set()
    pending = list(names)
    while pending:
        name = pending.pop()
        if name not in wanted:
            wanted.add(name)
            pending.extend(STAGES[name].consumes)
    return [name for name in STAGES if name in wanted]


def schemas(names: Iterable[str]) -> dict[str, int]:
    """The current schema of every stage ``names`` depend on (what a result records)."""
    return {name: STAGES[name].schema for name in upstream(names)}
