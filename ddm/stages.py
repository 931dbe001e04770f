"""The declared stage graph: what every artifact of the suite is, in one place.

Each :class:`Stage` names its cache kind (``None`` for a stage computed in memory, never cached),
its schema (bump it when the stage computes something else from the same inputs: its cache entries
and every result that used it become stale), the config sections it reads, the stages it consumes
and the source files whose code computes it. The modules that compute a stage take its kind and
schema from here; ``ddm-bench report --check`` (``bench.staleness``) reads the same declarations to
tell, for each committed result, whether a stage it depends on changed its schema or its code since
the result was computed.

The one resolver (``ddm.resolver``) derives every key from these declarations,
``key = H(kind, schema, the sections it reads, the keys of the stages it is keyed by, the request's
own fields)``, checks the config before any work, then locks, loads or computes, saves the payload
(its file named here) and memoizes in process. The computing modules are pure: they take inputs and
return payloads; the getters of DDM's own stages (:func:`get_target`, :func:`get_clustering`,
:func:`get_synset`, :func:`get_data`) live at the end of this module, beside their declarations.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ddm.cluster import Clustering, compute_clustering, extractor_config
from ddm.config import ExperimentConfig, with_overrides
from ddm.data import DataSplits
from ddm.distill import SharedGradients, Synset, distill
from ddm.target import Target, data_fingerprint, load_data, target_from, train_target
from ddm.train import resolve_device

if TYPE_CHECKING:
    from ddm.resolver import Partial, Resolver


@dataclass(frozen=True)
class Stage:
    name: str
    kind: str | None  # the cache directory of its artifacts; None: computed in memory
    schema: int
    sections: tuple[str, ...]  # config sections it reads
    consumes: tuple[str, ...]  # upstream stages
    sources: tuple[str, ...]  # files (or folders, ending in "/") whose code computes it
    what: str
    payload: str | None = None  # the payload file: "*.pt" (tensors, torch) or "*.json"; None: memory only
    memo: bool = False  # the resolver keeps each resolved value for the rest of the process
    keyed_by: tuple[str, ...] | None = None  # upstream stages whose keys enter the key (None: consumes)
    omit: tuple[str, ...] = ()  # fields of its sections that do not enter the key
    carry_partial: bool = False  # a tensor stage whose unfinished work a carry directory also keeps


STAGES: dict[str, Stage] = {stage.name: stage for stage in (
    Stage("data", None, 1, ("data",), (), ("ddm/data/",),
          "the dataset's splits, normalized, subset and noised as the data section says", memo=True),
    Stage("target", "target", 1, ("data", "model", "train"), ("data",),
          ("ddm/target.py", "ddm/train.py", "ddm/models/"),
          "the trained target and its trajectory", payload="trajectory.pt", memo=True),
    Stage("weights", None, 1, ("data", "model", "train"), (),
          ("ddm/target.py", "ddm/train.py", "ddm/models/"),
          "the identity of the trained weights: the target's sections without checkpoint_every, which "
          "only changes how densely the trajectory is recorded (retrainings and real gradients are "
          "keyed by it, so a denser trajectory reuses them)", omit=("checkpoint_every",)),
    Stage("clusters", "clusters", 1, ("data", "model", "train", "cluster"), ("data", "target"),
          ("ddm/cluster.py",), "the K clusters (and the extractor that embeds them)",
          payload="clusters.pt", memo=True),
    Stage("synset", "synset", 2, ("distill",), ("data", "target", "clusters"),
          ("ddm/distill.py", "ddm/functional.py"),
          "the distilled synset (reverse or forward gradient matching); 2: real per-cluster gradients "
          "by one backward per cluster on the CPU", payload="synset.pt", memo=True),
    Stage("gradients", None, 1, (), (), ("ddm/distill.py", "ddm/functional.py"),
          "real per-cluster gradients at trajectory checkpoints, shared in memory (bounded LRU) by "
          "every synset and fine-tune of the same weights and clusters"),
    Stage("online", None, 1, ("attribute",), ("target", "clusters", "synset"),
          ("ddm/attribute.py", "ddm/datamodel.py", "ddm/attributor.py", "ddm/objectives.py"),
          "DDM's online stage: fine-tunes on the synset, the linear datamodel, the objectives"),
    Stage("unlearner", None, 1, (), (), ("ddm/attribute.py",),
          "a DDM method's fine-tuning machinery over its class-level synset, kept by that method"),
    Stage("removals", None, 1, (), (), ("ddm/attributor.py",),
          "a method's predicted outputs after each single removal for its last query set, kept by "
          "that method (the objectives of one query set share them)"),
    Stage("influence", "influence", 2, (), ("data", "target", "clusters"),
          ("baselines/influence.py", "baselines/koh.py", "baselines/fastif.py", "baselines/scaleup.py",
           "baselines/solvers.py", "baselines/similarity.py", "baselines/metagradient.py"),
          "the influence baselines' offline tensors (and the similarity baselines); 2: per-cluster "
          "gradient loop; a carry directory keeps a resumable fit's unfinished rows (the exact linear "
          "response: over an hour on 2 cores at MNIST small)", payload="offline.pt", carry_partial=True),
    Stage("library", None, 1, (), ("data", "target", "clusters"),
          ("baselines/library.py", "baselines/tracin.py", "baselines/kfac.py", "baselines/trak.py"),
          "the field's methods from their own libraries (traker, kronfluence, dattri): sample attributions "
          "of each class probability, summed per cluster; fitted in memory on every run"),
    Stage("retrained", "retrained", 2, (), ("data", "target"),
          ("baselines/exact.py", "baselines/distributed.py"),
          "exact retrainings without a removed set (the oracle); 2: keyed by the target's weights key",
          payload="theta.pt", keyed_by=("weights",)),
    Stage("kd", "kd-students", 1, (), ("data", "target"),
          ("bench/transfer.py",), "knowledge-distillation teachers and students (Table 7)",
          payload="theta.pt"),
    Stage("standard", "standard", 1, (), (), ("bench/standard.py",),
          "one setting of lds-standard (dattri's MNIST-10) for one seed: its ground truth and every "
          "method's cells; resumes after the ground truth and after each method",
          payload="cells.json"),
    Stage("cells", "cells", 5, ("data", "model", "train", "cluster", "distill", "attribute"),
          ("data", "target", "clusters"), ("bench/evaluation.py",),
          "one seed's cells of a benchmark target (the target's own module is one of its sources); "
          "4: the oracle's numerical floor, the ReLU rows; 5: per-query values (intervals, paired "
          "comparisons), the LDS additive in the margin at keep 50 % and 90 %", payload="cells.json"),
)}


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


# -- the getters of DDM's own stages: the one place they meet the resolver --------------------------
# The computing modules import nothing of this module.
def get_data(config: ExperimentConfig, data_root: str | None = None, *,
             resolver: Resolver | None = None) -> DataSplits:
    """The config's data (memoized per data section and root when a resolver is given)."""
    if resolver is None:
        return load_data(config, data_root)
    return resolver.memo("data", config, {"data_root": data_root}, lambda: load_data(config, data_root))


def identified(config: ExperimentConfig, data_root: str | None, resolver: Resolver) -> ExperimentConfig:
    """``config`` naming the data read from ``data_root`` by its fingerprint (bundled data: as is),
    so another data root gets other entries."""
    if data_root is None or config.data.data_fingerprint is not None:
        return config
    fingerprint = resolver.memo("data", config, {"data_root": data_root, "fingerprint": True},
                                lambda: data_fingerprint(get_data(config, data_root, resolver=resolver)))
    return with_overrides(config, data_fingerprint=fingerprint)


def get_target(config: ExperimentConfig, *, resolver: Resolver, data: DataSplits | None = None,
               data_root: str | None = None, device: str = "auto", progress: bool | None = None) -> Target:
    """The target of ``config``: memoized, loaded, resumed from its last finished epoch, or trained."""
    config = identified(config, data_root, resolver)
    torch_device = resolve_device(device)

    def compute(partial: Partial) -> tuple[Any, dict[str, Any]]:
        splits = data if data is not None else get_data(config, data_root, resolver=resolver)
        return train_target(config, splits, torch_device, progress, partial.state, partial.save)

    return resolver.get("target", config, {}, compute,
                        lambda payload, meta: target_from(config, payload, meta, torch_device),
                        memo_tag=str(torch_device))


def get_clustering(config: ExperimentConfig, data: DataSplits, *, resolver: Resolver,
                   target: Target | None = None, device: str = "auto",
                   progress: bool | None = None) -> Clustering:
    """The clustering of ``config`` (computing it, and the target or extractor it embeds with)."""
    def compute(partial: Partial) -> tuple[Any, dict[str, Any]]:
        embedding = config.cluster.embedding
        network = None
        if embedding == "target":
            network = (target or get_target(config, resolver=resolver, data=data, device=device,
                                            progress=progress)).model
        elif embedding == "extractor":
            network = get_target(extractor_config(config), resolver=resolver, data=data, device=device,
                                 progress=progress).model
        clustering = compute_clustering(config, data, network)
        return dataclasses.asdict(clustering), {"sizes": clustering.sizes().tolist()}

    return resolver.get("clusters", config, {}, compute, lambda payload, meta: Clustering(**payload))


def shared_gradients(resolver: Resolver, target: Target, clustering: Clustering,
                     device: torch.device) -> SharedGradients:
    """The resolver's real-gradient memo and this (weights, clusters, device)'s prefix in it; a
    perturbed copy of a target (meta "perturb") shares its config but not its gradients."""
    prefix = (resolver.key("weights", target.config), target.meta.get("perturb"), clustering.digest(),
              str(device))
    return resolver.shared("gradients"), prefix


def get_synset(config: ExperimentConfig, target: Target, data: DataSplits, clustering: Clustering, *,
               resolver: Resolver, mode: str = "reverse", progress: bool | None = None) -> Synset:
    """The synset of (target, clustering, distill section, mode), distilled when missing."""
    def compute(partial: Partial) -> tuple[Any, dict[str, Any]]:
        device = next(target.model.parameters()).device
        synset = distill(target, data, clustering, config.distill, mode=mode, progress=progress,
                         shared=shared_gradients(resolver, target, clustering, device))
        meta = {"seconds": synset.seconds, "final_loss": synset.losses[-1] if synset.losses else None}
        return dataclasses.asdict(synset), meta

    fields = {"mode": mode, "grouping": clustering.digest()}
    return resolver.get("synset", config, fields, compute, lambda payload, meta: Synset(**payload))

