"""The cluster-level linear datamodeling score (LDS): the metric the attribution field compares
(TRAK, dattri), at the granularity of DDM's clusters.

Not a table of the paper (which reports Dist1 only). For ``LDS_MASKS`` random keep-masks that keep
half of the K clusters, the network is retrained exactly without the dropped clusters (cached, under
the run's ``--protocol``); each method predicts the query outputs of every joint removal, and the cell
is the mean over queries of the Spearman correlation, across masks, between predicted and retrained
true-class margins (log p_true - log max_other p). A per-cluster method's prediction for a mask is its
single-cluster effects added up; DDM predicts with its own datamodel (``W p + b``, Eq. 7).

Two rows check the metric itself: "Exact: the masks retrained" predicts every mask by retraining it
(1 by construction: the sanity check of the pipeline), and "Exact singles, added up" adds up the K
exact single-cluster effects, the ceiling of any additive per-cluster attribution. Predict- and
Clustering-based similarity only rank clusters, predict no outputs, and have no LDS.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from baselines.exact import removed_rows
from bench.base import TARGETS, BenchTarget, CellValues, RunContext, config_summary
from bench.evaluation import FIELD_METHODS, cluster_lds, runnable
from ddm.attributor import Queries, RemovalPredictor
from ddm.metrics import lds_masks
from ddm.pipeline import select_queries

LDS_MASKS = 50  # retrained masks per seed (TRAK's LDS uses 50-100 subsets)
KEEP_FRACTION = 0.5  # clusters each mask keeps
MASK_SEED_OFFSET = 10_000  # seed s draws its masks with 10_000 + s (apart from DDM's perturbation seeds)
EXACT_MASKS = "Exact: the masks retrained"
EXACT_ADDITIVE = "Exact singles, added up"
METHODS = {"Koh": "koh", "FastIF": "fastif", "Scaleup": "scaleup", **FIELD_METHODS, "DDM-full": "ddm"}
PAPER_ROW = "DDM (paper schedule)"


class AddedSingles(RemovalPredictor):
    """Any removal predictor's single-cluster predictions added up (the base ``predict_masks``)."""

    name = "added_singles"

    def __init__(self, inner: RemovalPredictor) -> None:
        super().__init__(inner.config, resolver=inner.resolver, progress=inner.progress)
        self.inner, self.target, self.clustering = inner, inner.target, inner.clustering

    def predict_removals(self, queries: Queries) -> Tensor:
        return self.inner.removals(queries)  # predict_masks is the base's: these added up


@TARGETS.register("lds")
class LDSTable(BenchTarget):
    name = "lds"
    retrains = True
    title = "Cluster-level LDS: predicted against exactly retrained outputs of random half-kept cluster sets"
    rows = [EXACT_MASKS, EXACT_ADDITIVE, *METHODS, PAPER_ROW]
    stages = (*BenchTarget.stages, "library")
    columns = ["LDS"]

    def notes(self, ctx: RunContext) -> list[str]:
        return [f"config: {config_summary(ctx.config)}; {ctx.n_queries} random test queries per seed",
                f"{LDS_MASKS} keep-masks per seed, each keeping {KEEP_FRACTION:.0%} of the clusters "
                f"(seed {MASK_SEED_OFFSET} + s); LDS = mean over queries of the Spearman correlation across "
                "masks of predicted and retrained true-class margins",
                f"'{EXACT_MASKS}' is 1 by construction (a check of the pipeline); '{EXACT_ADDITIVE}' is the "
                "ceiling of an additive per-cluster attribution", *runnable(METHODS, ctx.config)[1]]

    def run_seed(self, ctx: RunContext, seed: int) -> tuple[CellValues, dict[str, Any]]:
        stages = ctx.stages(ctx.seeded(seed))
        queries = select_queries(stages.data, ctx.n_queries, ctx.query_seed(seed))
        masks = lds_masks(stages.clustering.n_clusters, LDS_MASKS, MASK_SEED_OFFSET + seed, KEEP_FRACTION)
        device = next(stages.target.model.parameters()).device
        start = time.perf_counter()
        removed = removed_rows(stages.clustering, masks)
        actual = ctx.removal_outputs(stages, removed, queries.images.to(device))
        mask_seconds = time.perf_counter() - start
        exact = ctx.exact(stages)
        cells: CellValues = {}
        offline: dict[str, float] = {}
        methods: list[tuple[str, RemovalPredictor]] = [(EXACT_MASKS, exact),
                                                       (EXACT_ADDITIVE, AddedSingles(exact))]
        for row, method in runnable(METHODS, ctx.config)[0].items():
            start = time.perf_counter()
            methods.append((row, ctx.fit(method, stages)))
            offline[row] = time.perf_counter() - start
        methods.append((PAPER_ROW, ctx.fit("ddm", ctx.paper_stages(seed))))
        for row, method in methods:
            start = time.perf_counter()
            score = cluster_lds({row: method}, queries, masks, actual)[row]
            online = time.perf_counter() - start
            cells[row] = {"LDS": {"value": score, "seconds": online + offline.get(row, 0.0),
                                  "offline_seconds": offline.get(row, 0.0), "online_seconds": online}}
        cells[EXACT_MASKS]["LDS"]["seconds"] += mask_seconds
        return cells, {"masks": masks.to(torch.int8).tolist()}
