"""The exact oracle's numerical noise floor: does the ground truth agree with its own rerun?

Not a table of the paper. Every number the locate tables report is scored against exact retraining;
it means something only if that oracle does not move under a change that should change nothing. This
target retrains the target and every single-cluster removal a second time under a rounding-level
perturbation and reports, for Dist1: the per-query Spearman of the K exact deletion effects with the
rerun's, the share of queries whose most influential cluster is the same, and the mean Dist1 between
each removal and its rerun as a fraction of the mean deletion effect.

Two perturbations (rows): ``jitter`` moves every entry of theta_0 by one unit in the last place of the
precision (seeded; any device), ``threads`` retrains with the other CPU thread count (1 when this
process has more, else 2: another reduction order in every step). Run it for any dataset, scale,
precision and activation (``ddm-bench oracle --check``, or ``ddm-bench run noise --set
precision=float64 --set activation=relu``); on a GPU it tells whether a float32/TF32 oracle can be
trusted. The acceptance bar for the default numerics: Spearman >= 0.999, same top >= 99 %,
rerun/effect <= 1e-6.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from bench.base import TARGETS, BenchTarget, CellValues, RunContext, config_summary
from bench.evaluation import floor_clusters, floor_scores, other_threads
from ddm.objectives import to_probabilities
from ddm.pipeline import select_queries
from ddm.train import predict

COLUMNS = ["spearman", "top_agree", "relative_dist1"]


@TARGETS.register("noise")
class NoiseFloor(BenchTarget):
    name = "noise"
    title = "Oracle self-agreement: exact retraining against its own rerun (numerical noise floor)"
    rows = ["theta_0 jittered by 1 ulp", "other CPU thread count"]
    columns = COLUMNS
    retrains = True
    paper_columns = False

    def run_seed(self, ctx: RunContext, seed: int) -> tuple[CellValues, dict[str, Any]]:
        stages = ctx.stages(ctx.seeded(seed))
        device = next(stages.target.model.parameters()).device
        queries = select_queries(stages.data, ctx.n_queries, ctx.query_seed(seed))
        picked = floor_clusters(stages.clustering.n_clusters, ctx.floor_clusters)
        # the oracle's own entries: a later table reuses them
        base = ctx.removal_outputs(stages, [tuple(stages.clustering.members(k).tolist()) for k in picked],
                                   queries.images.to(device)).to(torch.float64)
        reference = to_probabilities(predict(stages.target.model, queries.images)).to(torch.float64)
        cells: CellValues = {}
        series: dict[str, Any] = {"clusters": picked, "threads": torch.get_num_threads(), "perturbations": {}}
        for row, perturb in zip(self.rows, ("jitter", other_threads()), strict=True):
            start = time.perf_counter()
            floor = floor_scores(ctx, stages, queries, reference, base, picked, ["dist1"], perturb)["dist1"]
            seconds = time.perf_counter() - start
            series["perturbations"][row] = perturb
            cells[row] = {name: {"value": getattr(floor, name), "seconds": seconds / len(COLUMNS)}
                          for name in COLUMNS}
        return cells, series

    def notes(self, ctx: RunContext) -> list[str]:
        clusters = "all K" if ctx.floor_clusters is None else f"{ctx.floor_clusters} evenly spaced"
        return [f"config: {config_summary(ctx.config)}; {ctx.n_queries} random test queries per seed; "
                f"{clusters} clusters retrained twice",
                "spearman = per-query rank correlation of the K exact Dist1 deletion effects with the "
                "rerun's; top_agree = share of queries whose most influential cluster is the same; "
                "relative_dist1 = mean Dist1 between each removal and its rerun / mean deletion effect",
                "the thread row retrains with 1 thread when the run has more, else 2 (series: threads)"]
