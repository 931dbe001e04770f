"""The staged workflow, as plain functions the CLI and the benchmark runner share::

    stages = prepare(config)                      # data, cached target, cached clusters
    attributor = fit_method("ddm", config, stages)  # offline stage (cached synset)
    scores = attributor.attribute(select_queries(stages.data, 20), "dist1")
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ddm.attributor import METHODS, Attributor, HasDatamodel, Queries, require
from ddm.cluster import Clustering
from ddm.config import ExperimentConfig
from ddm.data import DataSplits
from ddm.errors import ConfigError
from ddm.io import atomic_write_bytes, torch_bytes
from ddm.objectives import GLOBAL, get_objective
from ddm.provenance import environment
from ddm.resolver import Resolver
from ddm.stages import get_clustering, get_data, get_target, identified
from ddm.target import Target


@dataclass
class Stages:
    """What every method is fitted on: the same data, target and clusters."""

    config: ExperimentConfig
    data: DataSplits
    target: Target
    clustering: Clustering
    resolver: Resolver


def prepare(config: ExperimentConfig, *, data_root: str | None = None, device: str = "auto",
            resolver: Resolver | None = None, progress: bool | None = None) -> Stages:
    """Load the data, then train (or load) the target and cluster its training set (each memoized by
    the resolver: a second call with the same config costs nothing)."""
    resolver = resolver or Resolver()
    data = get_data(config, data_root, resolver=resolver)
    config = identified(config, data_root, resolver)  # another --data-root, other entries
    target = get_target(config, resolver=resolver, data=data, device=device, progress=progress)
    clustering = get_clustering(config, data, resolver=resolver, target=target, device=device,
                                progress=progress)
    return Stages(config, data, target, clustering, resolver)


def fit_method(name: str, stages: Stages, *, options: Any = None, progress: bool | None = None) -> Attributor:
    """Construct the registered method ``name`` (with ``options``, its own frozen options class, or
    its defaults) and run its offline stage. ``ddm`` and ``ddm_match`` are always registered; the
    baselines once ``baselines`` is imported (``ddm`` itself never imports it)."""

    attributor = METHODS[name](stages.config, options=options, resolver=stages.resolver, progress=progress)
    attributor.fit(stages.target, stages.data, stages.clustering)
    return attributor


def select_queries(data: DataSplits, n_queries: int, seed: int = 0) -> Queries:
    """``n_queries`` random test samples (the paper uses 20), the same for every method."""
    if not 1 <= n_queries <= len(data.test_y):
        raise ConfigError(f"--queries must be between 1 and {len(data.test_y)}, got {n_queries}")
    rows = torch.randperm(len(data.test_y), generator=torch.Generator().manual_seed(seed))[:n_queries]
    return Queries(data.test_x[rows], data.test_y[rows])


def check_request(method: str, objective: str, hierarchical: bool) -> None:
    """Refuse, before any work, what ``run_attribution`` could not do: an unknown method or
    objective, or a hierarchical search by a method without one or for a global objective."""
    METHODS[method]
    get_objective(objective)
    if hierarchical:
        require(method, "hierarchical search")
        if objective in GLOBAL:
            raise ConfigError(f"the hierarchical search needs a per-query objective, not {objective!r}")


def run_attribution(stages: Stages, method: str, n_queries: int, query_seed: int, objective: str,
                    output: Path, options: Any = None) -> list[str]:
    """Fit ``method``, score every cluster for random test queries, save everything to ``output``.
    With ``stages.config.attribute.hierarchical`` the scores are the hierarchical search's (a
    method without that capability is refused before any work).

    Returns the human-readable report (one line per query with the located cluster)."""
    hierarchical = stages.config.attribute.hierarchical
    check_request(method, objective, hierarchical)
    start = time.perf_counter()
    attributor = fit_method(method, stages, options=options)
    offline = time.perf_counter() - start
    queries = select_queries(stages.data, n_queries, query_seed)
    start = time.perf_counter()
    saved, scores, lines = _scores(attributor, queries, objective, hierarchical)
    online = time.perf_counter() - start
    located = scores.argmax(0)
    saved.update(scores=scores, located=located, query_labels=queries.labels, objective=objective,
                 method=method, config=stages.config.to_dict(),
                 method_options=(None if attributor.options is None
                                 else dataclasses.asdict(attributor.options)), offline_seconds=offline,
                 online_seconds=online, **environment(next(stages.target.model.parameters()).device))
    lines.insert(0, f"{method}: offline {offline:.1f} s, online {online:.2f} s for {n_queries} queries "
                    f"(K = {stages.clustering.n_clusters}, objective {objective})")
    per_class = stages.clustering.clusters_per_class
    for index, cluster in enumerate(located.tolist()):
        lines.append(f"query {index:3d} (label {int(queries.labels[index])}): cluster {cluster} "
                     f"(class {cluster // per_class}), score {float(scores[cluster, index]):.4g}")
    atomic_write_bytes(output, torch_bytes(saved))
    lines.append(f"wrote {output}")
    return lines


def _scores(attributor: Attributor, queries: Queries, objective: str,
            hierarchical: bool) -> tuple[dict[str, Any], torch.Tensor, list[str]]:
    """What ``run_attribution`` saves beside the scores (a datamodel's W and b, the hierarchical
    search's picks), the scores [K, n_q] and report lines."""
    saved: dict[str, Any] = {}
    lines: list[str] = []
    datamodel = attributor.datamodel(queries) if isinstance(attributor, HasDatamodel) else None
    if datamodel is not None:  # keep W itself, not only the scores
        saved.update(weights=datamodel.weights, bias=datamodel.bias)
    if hierarchical:
        search = attributor.hierarchical(queries, objective)
        saved.update(hierarchical_clusters=search.clusters, hierarchical_finetunes=search.finetunes)
        lines.append(f"hierarchical search: {search.finetunes} fine-tunes (scores: its picks first)")
        return saved, search.scores, lines
    if datamodel is not None:
        return saved, get_objective(objective)(datamodel.single_removals(), attributor.reference(queries),
                                               queries.labels), lines
    return saved, attributor.attribute(queries, objective), lines
