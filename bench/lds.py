"""The cluster-level linear datamodeling score (LDS): the metric the attribution field compares
(TRAK, dattri), at the granularity of DDM's clusters.

Not a table of the paper (which reports Dist1 only). For ``LDS_MASKS`` random keep-masks per keep
fraction (half of the K clusters kept, and 90 %: removing a tenth is where first-order methods are
expected to work), the network is retrained exactly without the dropped clusters (cached, under the
run's ``--protocol``). Each method's prediction for a mask is, as TRAK defines the LDS, additive in
the true-class margin (log p_true - log max_other p): the target's margin plus the margin changes
its single-cluster predictions imply, summed over the dropped clusters
(:func:`ddm.metrics.additive_margins`). Per query, the Spearman correlation across masks between that
prediction and the retrained margin; the cell is the mean over queries, with its interval over
(seed, query) (``bench.stats``), and the per-query values are stored.

Departures from the previous version of this table (issue 22): it added predicted *probability*
changes, clamped them to [0, 1] and took the margin only then, so the prediction was not linear in
the mask; DDM predicted with its own datamodel (``W p + b``). Now every method, DDM included, is
scored by the same additive-in-the-margin prediction of its single-cluster effects (DDM's singles
are its datamodel's), so the LDS compares attributions, not joint-removal models.

The oracle's self-agreement, measured here on its own retrainings (under the table, like Tables 1
and 2): the first ``FLOOR_MASKS`` masks of each column are retrained a second time under the tables'
rounding-level perturbation (the other CPU thread count; on a GPU theta_0 moved by one ulp), and the
Spearman across those masks of the retrained margins with the rerun's, per query, says whether the
LDS ranks methods against the masks' effects or against rounding noise.

Two rows check the metric itself: "Exact: the masks retrained" predicts every mask by retraining it
(1 by construction: the sanity check of the pipeline), and "Exact singles, added up in the margin"
adds up the K exact single-cluster margin changes. That is what perfect single-removal predictions
score under an additive model; it is **not** a ceiling: a method whose per-cluster effects are
fitted to joint removals (or simply closer to their average marginal effect) can score higher, as
Koh did at keep 50 %. Predict- and Clustering-based similarity only rank clusters, predict no
outputs, and have no LDS.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from baselines.exact import removed_rows
from bench.base import TARGETS, BenchTarget, CellValues, RunContext, config_summary
from bench.evaluation import (
    FIELD_METHODS,
    FloorScore,
    cluster_lds,
    floor_record,
    runnable,
    table_perturbation,
)
from ddm.attributor import Queries, RemovalPredictor
from ddm.metrics import finite_mean, lds_masks, spearman_per_query, true_class_margin
from ddm.pipeline import Stages, select_queries

LDS_MASKS = 50  # retrained masks per seed and keep fraction (TRAK's LDS uses 50-100 subsets)
# column -> (share of the clusters each mask keeps, offset of its mask seed): seed s draws the masks
# of a column with MASK_SEED_OFFSET + offset + s (apart from DDM's perturbation seeds)
KEEP = {"keep 50%": (0.5, 0), "keep 90%": (0.9, 500)}
MASK_SEED_OFFSET = 10_000
EXACT_MASKS = "Exact: the masks retrained"
EXACT_ADDITIVE = "Exact singles, added up in the margin"
METHODS = {"Koh": "koh", "FastIF": "fastif", "Scaleup": "scaleup", **FIELD_METHODS, "DDM-full": "ddm"}
PAPER_ROW = "DDM (paper schedule)"
JOINT = frozenset({EXACT_MASKS})  # rows that predict the masks themselves (retrained), not additively
FLOOR_MASKS = 10  # masks of each column retrained a second time, perturbed: the oracle's self-agreement
FLOOR_LABEL = "oracle (keep-masks)"


def mask_floor(ctx: RunContext, stages: Stages, queries: Queries, removed: list[tuple[int, ...]],
               actual: Tensor, reference: Tensor, perturb: str) -> FloorScore:
    """How the retrained outputs of the first ``FLOOR_MASKS`` masks (``removed``: their removed rows;
    ``actual``: their probabilities [m, n_q, C]) move when those masks are retrained under
    ``perturb``: per query the Spearman across them of the true-class margins with the rerun's, the
    share of queries whose highest-margin mask is the same, and the mean Dist1 between a mask's
    outputs and its rerun over the mean Dist1 between a mask's outputs and the target's
    (``reference`` [n_q, C])."""
    count = min(FLOOR_MASKS, len(removed))
    images = queries.images.to(next(stages.target.model.parameters()).device)
    rerun = ctx.retrainer(stages).removal_outputs(removed[:count], ctx.protocol, ctx.retrain_seeds_of(stages),
                                                  images, desc=f"oracle rerun ({perturb})",
                                                  perturb=perturb).to(torch.float64)
    base = actual[:count].to(torch.float64)
    margins, moved = (true_class_margin(outputs, queries.labels) for outputs in (base, rerun))
    effect = ((base - reference.to(torch.float64)) ** 2).sum(-1).mean()
    return FloorScore(finite_mean(spearman_per_query(moved, margins)),
                      float((margins.argmax(0) == moved.argmax(0)).double().mean()),
                      float(((rerun - base) ** 2).sum(-1).mean() / effect.clamp_min(1e-300)))


@TARGETS.register("lds")
class LDSTable(BenchTarget):
    name = "lds"
    retrains = True
    title = ("Cluster-level LDS (additive in the margin): predicted against exactly retrained outputs of "
             "random cluster sets, half or 90 % kept")
    rows = [EXACT_MASKS, EXACT_ADDITIVE, *METHODS, PAPER_ROW]
    stages = (*BenchTarget.stages, "library")
    columns = list(KEEP)
    paper_columns = False  # not a table of the paper
    paired_rows = ("DDM-full", PAPER_ROW)

    def notes(self, ctx: RunContext) -> list[str]:
        kept = " and ".join(f"{keep:.0%} (seed {MASK_SEED_OFFSET + offset} + s)"
                            for keep, offset in KEEP.values())
        return [f"config: {config_summary(ctx.config)}; {ctx.n_queries} random test queries per seed",
                f"{LDS_MASKS} keep-masks per seed and column, each keeping {kept} of the clusters; LDS = per "
                "query the Spearman correlation across masks of predicted and retrained true-class margins, "
                "a prediction being the target's margin plus the method's single-cluster margin changes "
                "summed over the dropped clusters (TRAK's definition); mean over (seed, query)",
                f"'{EXACT_MASKS}' is 1 by construction (a check of the pipeline); '{EXACT_ADDITIVE}' is what "
                "exact single-cluster effects score under the additive model, not a ceiling",
                f"the oracle's self-agreement (under the table): the first {FLOOR_MASKS} masks of each "
                "column retrained a second time, perturbed",
                *runnable(METHODS, ctx.config)[1]]

    def run_seed(self, ctx: RunContext, seed: int) -> tuple[CellValues, dict[str, Any]]:
        stages = ctx.stages(ctx.seeded(seed))
        queries = select_queries(stages.data, ctx.n_queries, ctx.query_seed(seed))
        exact = ctx.exact(stages)
        offline: dict[str, float] = {}
        methods: dict[str, RemovalPredictor] = {EXACT_MASKS: exact, EXACT_ADDITIVE: exact}
        for row, method in runnable(METHODS, ctx.config)[0].items():
            start = time.perf_counter()
            methods[row] = ctx.fit(method, stages)
            offline[row] = time.perf_counter() - start
        methods[PAPER_ROW] = ctx.fit("ddm", ctx.paper_stages(seed))
        cells: CellValues = {row: {} for row in methods}
        series: dict[str, Any] = {"masks": {}}
        perturb = table_perturbation(next(stages.target.model.parameters()).device)
        floor = floor_record(stages, perturb, min(FLOOR_MASKS, LDS_MASKS), LDS_MASKS, {}, unit="masks")
        series["floors"] = {FLOOR_LABEL: floor}
        for column, (keep, offset) in KEEP.items():
            masks = lds_masks(stages.clustering.n_clusters, LDS_MASKS, MASK_SEED_OFFSET + offset + seed, keep)
            series["masks"][column] = masks.to(torch.int8).tolist()
            start = time.perf_counter()
            removed = removed_rows(stages.clustering, masks)
            actual = ctx.removal_outputs(stages, removed,
                                         queries.images.to(next(stages.target.model.parameters()).device))
            mask_seconds = time.perf_counter() - start
            floor["objectives"][column] = vars(mask_floor(ctx, stages, queries, removed, actual,
                                                          exact.reference(queries), perturb))
            for row, method in methods.items():
                start = time.perf_counter()
                per_query = cluster_lds({row: method}, queries, masks, actual, joint=JOINT)[row]
                online = time.perf_counter() - start + (mask_seconds if row == EXACT_MASKS else 0.0)
                share = offline.get(row, 0.0) / len(KEEP)  # the fit serves both columns
                cells[row][column] = {"value": finite_mean(per_query), "seconds": online + share,
                                      "offline_seconds": offline.get(row, 0.0), "online_seconds": online,
                                      "queries": {"value": per_query.tolist()}}
        return cells, series

