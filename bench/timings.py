"""Timings: DDM's offline and online costs against exact retraining and every baseline, one run.

Not a table of the paper, but its central claim (§1, §3.4): attribution without retraining. Every
number is measured in the same process on the same machine; the "speedup" column divides the cost of
exactly retraining all K single-cluster models by the row's cost. Offline stages are timed from an
empty scratch cache (so cached artifacts cannot make them look free); exact retraining is timed on
``EXACT_SAMPLE`` clusters and scaled to K (every retraining takes the same number of SGD steps).
Baseline rows are fit + attribute of 20 queries for dist1, each fit from its own empty scratch cache
too (before 2026-12-06 they read the run's cache, so a fit another table had cached, such as the exact
linear response's, read as free). Where a method's work falls between its two rows is the adapter's
split: the dattri and traker adapters compute their gradients and features in ``attribute``, so
their "offline" rows are near zero; fit + attribute is the method's cost. Wall times depend on the
machine and on other load: compare ratios within one result, not seconds across machines.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch

from baselines.exact import Retrainer, RetrainSpec
from bench.base import TARGETS, BenchTarget, CellValues, RunContext, config_summary
from bench.evaluation import runnable
from ddm.attributor import Queries
from ddm.pipeline import Stages, select_queries
from ddm.resolver import Resolver
from ddm.stages import get_clustering, get_synset, get_target

EXACT_SAMPLE = 2
BASELINES = ["random", "predict", "cluster", "koh", "fastif", "scaleup", "ddm_match", "trak", "ekfac", "kfac",
             "tracin", "grad_dot", "grad_cos", "rps", "ddm_match_ascent", "metagradient"]


def timed(work: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = work()
    return value, time.perf_counter() - start


@TARGETS.register("timings")
class Timings(BenchTarget):
    name = "timings"
    title = "Timings: offline and online cost against exact retraining"
    rows = ["train target", "cluster (extractor + k-means)", "distill synset (reverse)",
            "exact retraining, all K", "DDM online: K single deletions", "DDM online: full W (|P| = K)",
            "DDM online: hierarchical (L + C)",
            *[f"{name}: {part}" for name in BASELINES for part in ("offline (fit)", "online (attribute)")]]
    columns = ["seconds", "speedup vs exact"]
    stages = (*BenchTarget.stages, "library")

    def notes(self, ctx: RunContext) -> list[str]:
        return [f"config: {config_summary(ctx.config)}",
                f"exact retraining timed on {EXACT_SAMPLE} clusters and scaled to K",
                *runnable({name: name for name in BASELINES}, ctx.config)[1]]

    def run_seed(self, ctx: RunContext, seed: int) -> tuple[CellValues, dict[str, Any]]:
        config = ctx.seeded(seed)
        seconds = self.offline(ctx, config)
        stages = ctx.stages(config)
        queries = select_queries(stages.data, ctx.n_queries, ctx.query_seed(seed))
        n_clusters = stages.clustering.n_clusters
        seconds["exact retraining, all K"] = self.exact_per_model(ctx, stages) * n_clusters
        ddm = ctx.fit("ddm", stages, need="hierarchical search")
        ddm.class_unlearner()  # distil the class-level synset before timing the search
        singles = ~torch.eye(n_clusters, dtype=torch.bool)
        ddm.unlearner(singles[:2], queries.images)  # warm-up: first vmap call traces
        _, seconds["DDM online: K single deletions"] = timed(lambda: ddm.unlearner(singles, queries.images))
        _, seconds["DDM online: full W (|P| = K)"] = timed(lambda: ddm.datamodel(queries))
        _, seconds["DDM online: hierarchical (L + C)"] = timed(lambda: ddm.hierarchical(queries, "dist1"))
        seconds.update(self.baselines(ctx, stages, queries))
        exact = seconds["exact retraining, all K"]
        cells = {row: {"seconds": {"value": value, "seconds": value},
                       "speedup vs exact": {"value": exact / value if value > 0 else float("nan")}}
                 for row, value in seconds.items()}
        return cells, {}

    def baselines(self, ctx: RunContext, stages: Stages, queries: Queries) -> dict[str, float]:
        """Every runnable baseline's fit and its attribution of ``queries``, each fitted on a scratch
        cache: a fit another table cached (the exact linear response's, EK-FAC's factors, TRAK's
        models) must not read as free."""
        seconds = {}
        for name in runnable({name: name for name in BASELINES}, ctx.config)[0]:
            with tempfile.TemporaryDirectory() as scratch:
                fresh = dataclasses.replace(stages, resolver=Resolver(scratch))
                fitted, offline = timed(lambda name=name, fresh=fresh: ctx.fit(name, fresh, progress=False))
                _, online = timed(lambda fitted=fitted: fitted.attribute(queries, "dist1"))
            seconds[f"{name}: offline (fit)"], seconds[f"{name}: online (attribute)"] = offline, online
        return seconds

    def offline(self, ctx: RunContext, config) -> dict[str, float]:
        """Target training, clustering and distillation, each from an empty scratch cache."""
        with tempfile.TemporaryDirectory() as scratch:
            resolver = Resolver(scratch)  # nothing on disk, nothing in memory
            data = ctx.stages(config).data
            target, train = timed(lambda: get_target(config, resolver=resolver, data=data, device=ctx.device,
                                                     progress=False))
            clustering, cluster = timed(lambda: get_clustering(config, data, resolver=resolver, target=target,
                                                               device=ctx.device, progress=False))
            _, distill = timed(lambda: get_synset(config, target, data, clustering, resolver=resolver,
                                                  progress=False))
        return {"train target": train, "cluster (extractor + k-means)": cluster,
                "distill synset (reverse)": distill}

    def exact_per_model(self, ctx: RunContext, stages) -> float:
        """Seconds of one exact retraining, measured on a scratch cache (never a cached model)."""
        with tempfile.TemporaryDirectory() as scratch:
            retrainer = Retrainer(stages.target, stages.data, Resolver(scratch), progress=False)
            seed = stages.target.config.train.seed
            specs = [RetrainSpec(tuple(stages.clustering.members(k).tolist()), "same-seed", seed)
                     for k in range(min(EXACT_SAMPLE, stages.clustering.n_clusters))]
            _, seconds = timed(lambda: retrainer.thetas(specs))
        return seconds / len(specs)
