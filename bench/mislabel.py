"""Mislabel detection: the field's standard data-quality test (dattri's noisy-label AUC, kronfluence's
"inspect 10 % of the data, find X % of the mislabels"), run on DDM's clusters (issue 22).

Not a table of the paper. A seeded ``LABEL_NOISE`` share of the training labels is moved to another
class (``label_noise``; validation and test labels stay true); the target, its clusters (per noisy
class) and DDM's synset are built on that set. Every method then scores each training cluster by its
**self-influence**: the predicted cross-entropy of each training image on its own (possibly flipped)
label after removing its own cluster, against the average over all clusters' removals, averaged over
the cluster's members,

    s_k = mean over i in k of ( CE_i(without k) - mean_j CE_i(without j) ),

with the attributions each method gives for Dist2 (the cross-entropy objective) on the training images
as queries. A memorized wrong label is what removing its own cluster costs most, so high s_k should
mean many flips.

Reported, for the flipped images among all N training images: the AUC of the ranking (each image
takes its cluster's score, so ties within a cluster count half: **a cluster-level method ranks whole
clusters**, and its AUC is bounded by how the flips spread over clusters), and the share of flips
found when inspecting the top 10 % and 20 % of the training images in score order (cluster by
cluster; the last cluster reached is counted in proportion to the budget left, its expected yield in
a random order).

Sample-level rows, where a method attributes samples: the field's library methods (TRAK, EK-FAC,
K-FAC, TracIn-CP, Grad-Dot, Grad-Cos, representer points) also rank each image by its own
self-influence, -tau_ii(y_i) / p_i(y_i) (the first-order change of its own cross-entropy when it alone
is removed), in the "(samples)" columns. Two rows without attribution frame the numbers: "Training
loss" (the target's cross-entropy of each image on its label: the simplest mislabel detector, per
image and averaged per cluster) and "Exact retraining" (s_k from retraining without each cluster: what
exact cluster self-influence achieves). Under the table, that oracle's self-agreement as under Tables 1
and 2: the target and ``FLOOR_CLUSTERS`` evenly spaced cluster removals retrained a second time under
the tables' rounding-level perturbation, scored on the training images by the cross-entropy
objective. Predict- and Clustering-based similarity rank clusters by similarity to a query, and every
cluster is most similar to its own members: they have no row.

Where the sample-level methods' cluster signal goes (measured on development data, digits, label-noise
seed 0, before these columns existed, by a probe over the same scores): adding up a cluster's
first-order probability changes overshoots, so for most training images the predicted probability of
their own label without their own cluster, p + sum tau, falls below ``EPS`` (digits smoke: TracIn-CP
100 % of the images, K-FAC 95 %, Grad-Cos 85 %, Grad-Dot 75 %, EK-FAC 56 %, TRAK 28 %; digits small:
EK-FAC and K-FAC 100 %, TRAK 64 %). The cross-entropy then sits at -log EPS for flipped and clean
images alike, and subtracting the mean over removals ranks the flips' clusters last (digits smoke
cluster AUC: TracIn-CP 0.017, Grad-Cos 0.171, K-FAC 0.162, Grad-Dot 0.333, EK-FAC 0.665, TRAK 0.964).
The first-order change of the cross-entropy, -sum tau / p (the loss linearized, as influence functions
read it), keeps the signal: 0.883, 0.907, 0.933, 0.923, 0.950, 0.993 for the same methods (digits
small: K-FAC 0.745, EK-FAC 0.785, TRAK 0.962, against 0.309, 0.035, 0.647 clamped), and the cluster
mean of the per-sample self-influence 0.958-0.993. So the table keeps both: "AUC" and its budgets
are the Dist2 prediction, one definition for every row (the default; the rows compare on it), and the
"(1st-order CE)" columns, for the methods that attribute samples, rank by the linearized loss, beside
"own cluster clamped", the share of training images whose own cluster's removal reaches the clamp.
The committed digits-smoke table (``ddm-bench run mislabel --dataset digits --scale smoke --seeds 1``)
holds these digits-smoke numbers in its columns. Representer points rank the flips last per sample
too (0.065 at digits smoke): dattri fits its head to the network's own outputs, not to the labels,
so a flipped label does not enter its alphas; that this explains the inversion is not measured.

Cost: every training image is a query, so the methods that solve per query solve N x classes
right-hand sides (20,000 on MNIST small against 200 in Tables 1 and 2). FastIF's s_test is LiSSA
(100 steps of a 512-row Hessian-vector product); under the default chunk budget of the head's
HVP (``sample_vectors_per_call`` = 65,536 vector-rows per vmapped call, 3 rows per call at 20,000
vectors) one step took about 2 minutes on 2 cores, 3.3 hours per seed. The committed MNIST-small
run passes ``--option fastif.sample_vectors_per_call=16777216`` (the whole 512-row step in one
call): 14.9 s per step (peak 6.7 GB), the same HVP to 7e-16 relative (measured with
``target_problem(target, data, FastIFConfig(sample_vectors_per_call=b)).hvp(vectors, rows)`` on
the MNIST-small seed-0 target, 20,000 random vectors and 512 rows, under both budgets). Seed 0 of
that run took 1.6 hours on cached retrainings (FastIF 30 min, TracIn-CP 23, the exact linear
response 15 on its cached fit, every other row under 5); a seed keeps each finished row
(:meth:`Mislabel.resume_seed`), so a stopped run resumes at the row it was on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor

from bench.base import TARGETS, BenchTarget, CellValues, RunContext, config_summary
from bench.evaluation import FIELD_METHODS, build_oracle, floor_series, runnable
from ddm.attributor import Queries
from ddm.cluster import Clustering
from ddm.objectives import EPS, to_probabilities
from ddm.pipeline import Stages
from ddm.train import predict

LABEL_NOISE = 0.1  # share of training labels flipped (dattri's and kronfluence's noisy-label setting)
BUDGETS = (0.1, 0.2)  # shares of the training data inspected
EXACT_ROW = "Exact retraining (cluster self-influence)"
LOSS_ROW = "Training loss (no attribution)"
PAPER_ROW = "DDM (paper schedule)"
METHODS = {"Random Select": "random", "Koh": "koh", "FastIF": "fastif", "Scaleup": "scaleup",
           **FIELD_METHODS, "DDM": "ddm"}
CLUSTER_COLUMNS = ["AUC", "top 10%", "top 20%"]
FIRST_ORDER_COLUMNS = ["AUC (1st-order CE)", "top 10% (1st-order CE)", "top 20% (1st-order CE)",
                       "own cluster clamped"]
SAMPLE_COLUMNS = ["AUC (samples)", "top 10% (samples)", "top 20% (samples)"]


def detection(scores: Tensor, flipped: Tensor) -> dict[str, float]:
    """AUC and the share of flips found in the top ``BUDGETS`` of the data, for per-image scores [N]
    (images of one cluster share its score) and the flipped mask bool [N]. Ties are inspected in a
    random order: within a tied block the expected yield is its flip rate times the budget spent."""
    scores, flipped = scores.double().cpu().numpy(), flipped.cpu().numpy()
    values = {"AUC": float(roc_auc_score(flipped, scores))}
    levels, inverse = np.unique(-scores, return_inverse=True)  # blocks of tied scores, best first
    sizes = np.bincount(inverse, minlength=len(levels))
    flips = np.bincount(inverse, weights=flipped.astype(float), minlength=len(levels))
    before = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    for budget in BUDGETS:
        spent = np.clip(budget * len(scores) - before, 0, sizes)  # images of each block inspected
        values[f"top {budget:.0%}"] = float((flips * spent / sizes).sum() / max(flipped.sum(), 1))
    return values


def cluster_means(values: Tensor, cluster_ids: Tensor, n_clusters: int) -> Tensor:
    """Per-image values [N] averaged over each cluster's members -> [K] (float64)."""
    sums = torch.zeros(n_clusters, dtype=torch.float64).index_add_(0, cluster_ids, values.double())
    return sums / torch.bincount(cluster_ids, minlength=n_clusters).clamp_min(1)


def self_influence(scores: Tensor, cluster_ids: Tensor) -> Tensor:
    """Cluster scores [K] from Dist2 attributions scores [K, N] on the training images as queries:
    the mean over each cluster's members of its own removal's score minus the mean over clusters."""
    relative = scores.double() - scores.double().mean(0, keepdim=True)
    return cluster_means(relative.gather(0, cluster_ids.view(1, -1))[0], cluster_ids, scores.shape[0])


@dataclass
class MethodScores:
    """What one method gives mislabel detection: ``dist2`` [K, N], the predicted cross-entropy of
    each training image (as query) without each cluster; for a method that attributes samples also
    ``samples`` [N], each image's own self-influence -tau_ii / p_i, ``first_order`` [K, N], the
    first-order change of that cross-entropy, -(sum of the cluster's tau) / p, and ``clamped`` bool
    [K, N], where the predicted probability p + sum tau fell below ``EPS``."""

    dist2: Tensor
    samples: Tensor | None = None
    first_order: Tensor | None = None
    clamped: Tensor | None = None


def method_scores(attributor: Any, queries: Queries, clustering: Clustering) -> MethodScores:
    """The Dist2 scores of removing each cluster, on the training images as queries, and for a
    method that attributes samples (the library adapters' ``label_changes``) the sample-level and
    first-order scores of :class:`MethodScores`. The adapters score only each image's own label
    (Dist2 reads no other class): p_y without cluster k = p_y + the sum of its members' tau, the
    cross-entropy its minus log, as ``predict_removals`` and Dist2 would give for that class."""
    changes = getattr(attributor, "label_changes", None)
    if changes is None:
        return MethodScores(attributor.attribute(queries, "dist2"))
    tau = changes(queries)  # [N, N]: sample i removed, change of p_y(query q)
    index = torch.arange(len(queries))
    probability = attributor.reference(queries).to(torch.float64).cpu()[index, queries.labels.cpu()]
    sums = torch.zeros(clustering.n_clusters, tau.shape[1], dtype=torch.float64)
    sums.index_add_(0, clustering.cluster_ids.cpu(), tau)
    after = probability[None] + sums
    return MethodScores(-after.clamp_min(EPS).log(), -tau[index, index] / probability.clamp_min(EPS),
                        -sums / probability.clamp_min(EPS)[None], after < EPS)


def training_queries(stages: Stages) -> Queries:
    """Every training image with its (possibly flipped) label: the queries of self-influence."""
    return Queries(stages.data.train_x, stages.data.train_y)


def row_cells(cluster_scores: Tensor, sample_scores: Tensor | None, stages: Stages,
              seconds: float, scores: MethodScores | None = None) -> dict[str, dict[str, Any]]:
    """One row's cells: the cluster columns from ``cluster_scores`` [K], the sample columns from
    ``sample_scores`` [N]; with a sample-attributing method's ``scores``, the first-order columns
    and the share of images whose own cluster's predicted probability sits at the clamp."""
    flipped = torch.isin(torch.arange(len(stages.data.train_y)), stages.data.flipped_rows)
    ids = stages.clustering.cluster_ids.cpu()
    cells = {column: {"value": value, "seconds": seconds}
             for column, value in zip(CLUSTER_COLUMNS, detection(cluster_scores[ids], flipped).values(),
                                      strict=True)}
    if sample_scores is not None:
        cells.update({column: {"value": value, "seconds": 0.0}
                      for column, value in zip(SAMPLE_COLUMNS, detection(sample_scores, flipped).values(),
                                               strict=True)})
    if scores is not None and scores.first_order is not None:
        first_order = detection(self_influence(scores.first_order, ids)[ids], flipped).values()
        own = scores.clamped.gather(0, ids.view(1, -1))[0]  # image i: its own cluster removed
        values = [*first_order, float(own.double().mean())]
        cells.update({column: {"value": value, "seconds": 0.0}
                      for column, value in zip(FIRST_ORDER_COLUMNS, values, strict=True)})
    return cells


@TARGETS.register("mislabel")
class Mislabel(BenchTarget):
    name = "mislabel"
    title = (f"Mislabel detection: {LABEL_NOISE:.0%} of the training labels flipped, training data ranked "
             "by self-influence")
    rows = [LOSS_ROW, EXACT_ROW, *METHODS, PAPER_ROW]
    columns = CLUSTER_COLUMNS + FIRST_ORDER_COLUMNS + SAMPLE_COLUMNS
    retrains = True
    paper_columns = False
    stages = (*BenchTarget.stages, "library")

    def notes(self, ctx: RunContext) -> list[str]:
        return [f"config: {config_summary(ctx.config)} with label_noise={LABEL_NOISE}",
                "cluster columns: each image takes its cluster's self-influence (ties count half in the AUC; "
                "the last cluster reached in a budget counts in proportion); '(samples)': per-image "
                "self-influence, only for methods that attribute samples (and the training loss)",
                "base rates: AUC 0.5, top 10% finds 10% and top 20% finds 20% of the flips at random",
                "'(1st-order CE)': methods that attribute samples, clusters ranked by the first-order change "
                "of the cross-entropy (-sum tau / p) instead of the clamped Dist2 prediction; 'own cluster "
                "clamped': share of training images whose predicted p without their own cluster fell below "
                f"{EPS:g} (there the Dist2 cross-entropy saturates for flipped and clean images alike)",
                *runnable(METHODS, ctx.config)[1]]

    def run_seed(self, ctx: RunContext, seed: int) -> tuple[CellValues, dict[str, Any]]:
        return self.resume_seed(ctx, seed, None)

    def resume_seed(self, ctx: RunContext, seed: int, partial: Any) -> tuple[CellValues, dict[str, Any]]:
        """One seed, row by row; with the runner's ``partial`` each finished row is kept, so a
        stopped run (a seed takes hours at MNIST small) resumes at the row it was on. Rows are
        independent (every method seeds its own randomness), so a resumed seed computes what an
        uninterrupted one would."""
        stages = ctx.stages(ctx.seeded(seed, label_noise=LABEL_NOISE))
        queries = training_queries(stages)
        cells: CellValues = dict((partial.state or {}).get("cells", {})) if partial is not None else {}

        def keep(row: str, values: dict[str, dict[str, Any]]) -> None:
            cells[row] = values
            if partial is not None:
                partial.save({"cells": cells})

        if LOSS_ROW not in cells:
            start = time.perf_counter()
            loss = training_loss(stages, queries)
            means = cluster_means(loss, stages.clustering.cluster_ids.cpu(), stages.clustering.n_clusters)
            keep(LOSS_ROW, row_cells(means, loss, stages, time.perf_counter() - start))
        built: list[Any] = []  # the oracle, built when first needed: a resumed seed whose exact row is
        # kept retrains nothing until its floor (~20 min at MNIST small on a machine with an empty cache)

        def the_oracle() -> Any:
            if not built:
                built.append(build_oracle(ctx.exact(stages), queries))
            return built[0]

        if EXACT_ROW not in cells:
            start = time.perf_counter()
            exact = the_oracle().exact("dist2")
            keep(EXACT_ROW, row_cells(self_influence(exact, stages.clustering.cluster_ids.cpu()), None,
                                      stages, time.perf_counter() - start))
        fits = {row: (method, stages) for row, method in runnable(METHODS, ctx.config)[0].items()}
        fits[PAPER_ROW] = ("ddm", None)
        for row, (method, method_stages) in fits.items():
            if row in cells:
                continue
            start = time.perf_counter()
            method_stages = method_stages or ctx.paper_stages(seed, label_noise=LABEL_NOISE)
            attributor = ctx.fit(method, method_stages)
            clustering = method_stages.clustering
            scores = method_scores(attributor, queries, clustering)
            ranked = self_influence(scores.dist2, clustering.cluster_ids.cpu())
            keep(row, row_cells(ranked, scores.samples, method_stages, time.perf_counter() - start, scores))
        cells = {row: cells[row] for row in [LOSS_ROW, EXACT_ROW, *fits]}  # the table's order
        return cells, {"flipped": stages.data.flipped_rows.tolist(),
                       "floors": {"oracle": floor_series(ctx, stages, the_oracle(), ["dist2"])}}


def training_loss(stages: Stages, queries: Queries) -> Tensor:
    """The target's cross-entropy of each training image on its label [N] (float64)."""
    probabilities = to_probabilities(predict(stages.target.model, queries.images)).to(torch.float64).cpu()
    return -probabilities[torch.arange(len(queries)), queries.labels.cpu()].clamp_min(1e-300).log()
