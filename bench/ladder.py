"""The signal ladder: where DDM's attribution signal is kept and where it is lost (issue 11).

Every rung predicts the query outputs after removing each single cluster and is judged against exact
leave-one-cluster-out retraining (the run's protocol, same-seed by default), like Tables 1 and 2: the
normalized Dist1 of the cluster it locates (0 = random, 1 = oracle) and the per-query Spearman of its
K Dist1 scores with the exact ones. The rungs go from the oracle through idealized versions of each
step of DDM to DDM itself, so a change to DDM shows which step it moved:

- *exact linear response* (the top rung under exact retraining): the exact derivative of the query
  outputs with respect to each cluster's weight through the whole recorded training
  (``baselines/metagradient.py``); the ceiling of every first-order rung below it.
- *first order*: ``dp_k = J_q dtheta_k`` at theta_tau, ``J_q`` the Jacobian of the query
  probabilities; *undo* ``dtheta_k = lr * epochs / B * sum_{i in D_k} grad l_i(theta_tau)`` (the
  cluster's share of the SGD updates, undone); *perfect reverse matching* the same share summed over
  the recorded trajectory (what Eq. 5 asks the synset to reproduce); *rescaled* means a gradient's
  direction with the norm of the cluster's undo step.
- *ascent on the real cluster*: fine-tuning theta_tau by gradient ascent on D_k itself with DDM's
  step budget (what a perfect synset would do, nonlinearity included).
- For every DDM variant (rows named after it): its synset to first order (descent, rescaled), its K
  single-cluster fine-tunes, and DDM-full (W from |P| perturbations, or the hierarchical search).

Diagnostic columns for every synset: ``own-pair cos``, the cosine between ``sign * grad L(theta_b;
S_k)`` and ``grad L(theta_a; D_k)`` over the checkpoint pairs it was distilled on (sign -1 for
reverse matching; the objective it minimizes, 1 = perfect); ``undo cos``, the cosine at theta_tau
between the first step of the rung's fine-tune (``-grad L(theta_tau; S_k)``; ascent for DDM-match)
and the undo direction; ``norm ratio``,
the median over clusters of the fine-tune's first-order step norm (eta * T * weight * ||g_syn||) over
the undo step's norm, and ``norm rank``, the Spearman over clusters between those two norms (does the
fine-tune's size track the cluster's real contribution?).

Use development query seeds (``--query-seed-base 100``) to choose settings; the committed tables use
query seeds 0-2 and only check choices.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import Tensor
from torch.func import functional_call, jacrev

from bench.base import TARGETS, BenchTarget, CellValues, RunContext, config_summary
from bench.evaluation import exact_oracle, floor_series
from bench.render import save_figure
from bench.results import Result
from ddm.config import DENSE_CHECKPOINTS, PAPER_DDM, SMALL_LR_IMG
from ddm.diagnostics import DDMAttributor, Synset, distilled_pairs, synthetic_gradients, undistilled_synset
from ddm.functional import (
    Params,
    finetune_batched,
    flat_rows,
    params_from_flat,
    per_cluster_gradients,
    predict_batched,
)
from ddm.metrics import locate_score
from ddm.objectives import to_probabilities
from ddm.pipeline import Stages

# DDM variants on the ladder, as overrides of the run's config ("DDM (default)" is the config itself).
# The first rows walk from the previous default to the current one, one change at a time; the last
# rows take one choice of the default back (or push it further), each alone.
PREVIOUS_DDM = {"synset_labels": "hard", "lr_img": 1.0, "checkpoint_every": 0, "cluster_scale": "none",
                "include_singles": False}
VARIANTS: dict[str, dict[str, Any]] = {
    "DDM (paper schedule)": PAPER_DDM,
    "DDM (previous default)": PREVIOUS_DDM,
    "+ soft labels": {**PREVIOUS_DDM, "synset_labels": "soft", "lr_img": SMALL_LR_IMG},
    "+ dense trajectory": {**PREVIOUS_DDM, "synset_labels": "soft", "lr_img": SMALL_LR_IMG,
                           "checkpoint_every": DENSE_CHECKPOINTS},
    "+ real_norm scale": {**PREVIOUS_DDM, "synset_labels": "soft", "lr_img": SMALL_LR_IMG,
                          "checkpoint_every": DENSE_CHECKPOINTS, "cluster_scale": "real_norm"},
    "DDM (default)": {},
    "default, hard labels": {"synset_labels": "hard"},
    "default, no distillation": {"distill_steps": 0},
    "default, converged distillation": {"distill_steps": 500, "converge_tol": 0.01},
    "default, hierarchical": {"hierarchical": True},
}
IDEAL_RUNGS = ["exact retraining", "exact linear response (metagradient)", "first order: undo at θτ",
               "first order: perfect reverse matching",
               "fine-tune: ascent on the real cluster", "first order: one real image, ascent, rescaled",
               "first order: DDM-match synset, ascent, rescaled", "Koh"]
VARIANT_RUNGS = ("first order, rescaled", "single fine-tunes", "full")
COLUMNS = ["normalized", "spearman", "own-pair cos", "undo cos", "norm ratio", "norm rank"]
MAX_PAIRS = 8  # checkpoint pairs the own-pair cosine averages over (evenly spaced when there are more)
FINETUNE_CHUNK = 8  # models per vectorized ascent fine-tune on real clusters


def rescale(direction: Tensor, reference: Tensor) -> Tensor:
    """Rows of ``direction`` [K, P] with the norms of the rows of ``reference`` [K, P]."""
    norms = direction.norm(dim=1, keepdim=True).clamp_min(1e-30)
    return direction / norms * reference.norm(dim=1, keepdim=True)


def row_cosine(a: Tensor, b: Tensor) -> Tensor:
    """Cosine of matching rows of a and b [K, P] -> [K]."""
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-30)


def query_jacobian(model: torch.nn.Module, params: Params, queries: Tensor) -> Tensor:
    """d probabilities / d theta at ``params``: queries [n_q, ...] -> [n_q * C, P], on the CPU.

    One query at a time (an eval-mode network's outputs for a query depend on that query alone).
    ``jacrev`` over the whole batch vmaps every one of the n_q * C backward passes over all n_q
    queries: its activations were [n_q * C, n_q, ...], which on MNIST small in float64 (40 queries,
    ConvNet width 32) is 4.2 GB per feature map and drove the ladder to a 21.7 GB peak."""
    def probabilities(current: Params, query: Tensor) -> Tensor:
        return to_probabilities(functional_call(model, current, (query[None],)))[0]

    jacobian_of = jacrev(probabilities)
    rows = []
    for query in queries:
        jacobian = jacobian_of(params, query)
        rows.append(torch.cat([jacobian[name].flatten(1) for name in params], 1).cpu())
    return torch.cat(rows)


def first_order(jacobian: Tensor, delta: Tensor, reference: Tensor) -> Tensor:
    """Predicted probabilities reference + J delta_k: jacobian [n_q * C, P], delta [K, P] -> [K, n_q, C]."""
    return reference + (delta.double() @ jacobian.double().T).view(len(delta), *reference.shape)


class LadderState:
    """What every rung of one seed shares: the oracle, theta_tau's Jacobian, the real gradients."""

    def __init__(self, ctx: RunContext, stages: Stages, seed: int) -> None:
        self.ctx, self.stages, self.seed = ctx, stages, seed
        self.oracle = exact_oracle(ctx, stages, seed)
        self.target, self.data, self.clustering = stages.target, stages.data, stages.clustering
        self.model = self.target.model
        self.device = next(self.model.parameters()).device
        self.params = {name: p.detach() for name, p in self.model.named_parameters()}
        queries = self.oracle.queries.images.to(self.device)
        self.jacobian = query_jacobian(self.model, self.params, queries)
        self.sizes = self.clustering.sizes().double()
        train = stages.config.train
        self.undo = train.lr * train.epochs / train.batch_size * self.cluster_sums(self.target, -1)

    def cluster_sums(self, target: Any, checkpoint: int) -> Tensor:
        """sum_{i in D_k} grad l_i at a trajectory checkpoint of ``target``: [K, P] (CPU, float64)."""
        means = self.cluster_means(target, checkpoint)
        return means * self.sizes[:, None]

    def cluster_means(self, target: Any, checkpoint: int) -> Tensor:
        params = params_from_flat(target.model, target.trajectory[checkpoint].to(self.device))
        grads = per_cluster_gradients(target.model, params, self.data.train_x.to(self.device),
                                      self.data.train_y.to(self.device), self.clustering.cluster_ids,
                                      self.clustering.n_clusters)
        return flat_rows(grads).double().cpu()

    def trajectory_undo(self) -> Tensor:
        """lr / B * sum_t (epochs between checkpoints t and t+1) * sum_{i in D_k} grad l_i(theta_t)."""
        train, steps = self.stages.config.train, self.target.checkpoint_steps
        per_epoch = -(-len(self.data.train_y) // train.batch_size)
        total = torch.zeros_like(self.undo)
        for t in range(len(steps) - 1):
            total += (steps[t + 1] - steps[t]) / per_epoch * self.cluster_sums(self.target, t)
        return train.lr / train.batch_size * total

    def synthetic_means(self, target: Any, synset: Synset, checkpoint: int) -> Tensor:
        """Gradient of each cluster's synthetic mean loss at a checkpoint: [K, P] (CPU, float64)."""
        params = params_from_flat(target.model, target.trajectory[checkpoint].to(self.device))
        return flat_rows(synthetic_gradients(target.model, params, synset)).double().cpu()

    def score(self, scores: Tensor) -> dict[str, dict[str, float]]:
        """normalized Dist1 and Spearman of Dist1 scores [K, n_q] (the oracle's shape, checked)."""
        exact = self.oracle.exact("dist1")
        if scores.shape != exact.shape:
            raise ValueError(f"a rung scored {tuple(scores.shape)}, the oracle {tuple(exact.shape)}")
        located = locate_score(scores, exact)
        return {"normalized": {"value": located.normalized}, "spearman": {"value": located.spearman}}

    def score_first_order(self, delta: Tensor) -> dict[str, dict[str, float]]:
        predicted = first_order(self.jacobian, delta, self.oracle.reference)
        return self.score(((predicted - self.oracle.reference) ** 2).sum(-1))


def ascent_on_real(state: LadderState, lr: float, steps: int) -> Tensor:
    """Dist1 scores [K, n_q] of theta_tau fine-tuned by ascent on each real cluster, with DDM's budget:
    sample weights -1 / mean |D|, so the first-order step is budget times the undo step."""
    clustering, data, device = state.clustering, state.data, state.device
    members = [clustering.members(k) for k in range(clustering.n_clusters)]
    width = max(len(rows) for rows in members)
    mean_size = float(state.sizes.mean())
    queries = state.oracle.queries.images.to(device)
    outputs = []
    for start in range(0, len(members), FINETUNE_CHUNK):
        chunk = members[start:start + FINETUNE_CHUNK]
        rows = torch.stack([torch.cat([m, m.new_zeros(width - len(m))]) for m in chunk])
        weights = torch.stack([(torch.arange(width) < len(m)).to(data.train_x.dtype) for m in chunk])
        weights = weights * (-1.0 / mean_size)
        stacked = finetune_batched(state.model, state.params, data.train_x[rows].to(device),
                                   data.train_y[rows].to(device), weights.to(device), steps=steps, lr=lr)
        with torch.no_grad():
            outputs.append(to_probabilities(predict_batched(state.model, stacked, queries)).cpu())
    removed = torch.cat(outputs).double()
    return ((removed - state.oracle.reference) ** 2).sum(-1)


def ideal_rows(state: LadderState, ddm: DDMAttributor) -> CellValues:
    """The oracle and the idealized rungs (real data, perfect matching, first order)."""
    exact = state.oracle.exact("dist1")
    cells: CellValues = {"exact retraining": state.score(exact),
                         "exact linear response (metagradient)": state.score(state.ctx.fit(
                             "metagradient", state.stages).attribute(state.oracle.queries, "dist1")),
                         "first order: undo at θτ": state.score_first_order(state.undo),
                         "first order: perfect reverse matching": state.score_first_order(
                             state.trajectory_undo())}
    unlearner = ddm.unlearner
    cells["fine-tune: ascent on the real cluster"] = state.score(
        ascent_on_real(state, unlearner.lr, unlearner.steps))
    initial = undistilled_synset(state.stages.config, state.data, state.clustering)
    cells["first order: one real image, ascent, rescaled"] = state.score_first_order(
        rescale(state.synthetic_means(state.target, initial, -1), state.undo))
    match = state.ctx.fit("ddm_match", state.stages)
    cells["first order: DDM-match synset, ascent, rescaled"] = {
        **state.score_first_order(rescale(state.synthetic_means(state.target, match.synset, -1), state.undo)),
        **synset_diagnostics(state, match)}
    koh = state.ctx.fit("koh", state.stages)
    cells["Koh"] = state.score(koh.attribute(state.oracle.queries, "dist1"))
    return cells


def synset_diagnostics(state: LadderState, ddm: DDMAttributor) -> dict[str, dict[str, float]]:
    """own-pair cos, undo cos, norm ratio and norm rank of ``ddm``'s synset and fine-tune."""
    target, synset = ddm.target, ddm.synset
    sign = -1.0 if synset.mode == "reverse" else 1.0
    pairs = distilled_pairs(ddm)
    picks = np.unique(np.linspace(0, len(pairs) - 1, min(MAX_PAIRS, len(pairs))).round().astype(int))
    own = [row_cosine(sign * state.synthetic_means(target, synset, pairs[i][1]),
                      state.cluster_means(target, pairs[i][0])).mean() for i in picks]
    synthetic_tau = state.synthetic_means(target, synset, -1)
    unlearner = ddm.unlearner
    step = unlearner.lr * unlearner.steps * unlearner.weights.double().cpu() * synthetic_tau.norm(dim=1)
    undo_norm = state.undo.norm(dim=1)
    return {"own-pair cos": {"value": float(torch.stack(own).mean())},
            "undo cos": {"value": float(row_cosine(sign * synthetic_tau, state.undo).mean())},
            "norm ratio": {"value": float((step / undo_norm.clamp_min(1e-30)).median())},
            "norm rank": {"value": float(spearmanr(step.numpy(), undo_norm.numpy()).statistic)}}


def variant_rows(state: LadderState, name: str, ddm: DDMAttributor) -> CellValues:
    """One DDM variant: its synset to first order, its single fine-tunes, DDM-full."""
    queries = state.oracle.queries
    direction = -state.synthetic_means(ddm.target, ddm.synset, -1)  # descent on S_k, as DDM fine-tunes
    diagnostics = synset_diagnostics(state, ddm)
    first, singles, full = (f"{name}: {rung}" for rung in VARIANT_RUNGS)
    return {first: {**state.score_first_order(rescale(direction, state.undo)), **diagnostics},
            singles: state.score(ddm.scores_of_singles(queries, "dist1")),
            full: state.score(ddm.attribute(queries, "dist1"))}


@TARGETS.register("ladder")
class Ladder(BenchTarget):
    name = "ladder"
    retrains = True
    title = "Signal ladder: where DDM's attribution signal is lost (Dist1 against exact retraining)"
    rows = IDEAL_RUNGS + [f"{variant}: {rung}" for variant in VARIANTS for rung in VARIANT_RUNGS]
    columns = COLUMNS

    def notes(self, ctx: RunContext) -> list[str]:
        variants = "; ".join(f"{name}: {overrides or 'the run config'}"
                             for name, overrides in VARIANTS.items())
        dense = f"checkpoint_every {DENSE_CHECKPOINTS}"
        return [f"config: {config_summary(ctx.config)}; {ctx.n_queries} queries per seed",
                "normalized: Dist1 of the located cluster, (method - random) / (oracle - random); spearman: "
                "per query over the K clusters, against exact retraining",
                "diagnostic columns: see bench/ladder.py; own-pair cos should approach 1",
                f"variants (overrides of the run config; '+' rows add one change to the row above, "
                f"{dense} being the preset's dense trajectory): {variants}"]

    def run_seed(self, ctx: RunContext, seed: int) -> tuple[CellValues, dict[str, Any]]:
        stages = ctx.stages(ctx.seeded(seed))
        state = LadderState(ctx, stages, seed)
        seconds: dict[str, float] = {}
        start = time.perf_counter()
        cells = ideal_rows(state, ctx.fit("ddm", stages))
        seconds["ideal rungs"] = time.perf_counter() - start
        for name, overrides in VARIANTS.items():
            start = time.perf_counter()
            variant = ctx.stages(ctx.seeded(seed, **overrides))
            cells.update(variant_rows(state, name, ctx.fit("ddm", variant)))
            seconds[name] = time.perf_counter() - start
        floors = {"oracle": floor_series(ctx, stages, state.oracle, ["dist1"])}
        return cells, {"seconds": seconds, "floors": floors}

    def plot(self, result: Result, path: Path) -> bool:
        plot_ladder(result, path)
        return True


def plot_ladder(result: Result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in result.rows if row in result.cells]
    figure, axes = plt.subplots(1, 2, figsize=(12, 0.28 * len(rows) + 1.5), sharey=True)
    for axis, column in zip(axes, ("normalized", "spearman"), strict=True):
        means = [result.cells[row][column].mean if column in result.cells[row] else float("nan")
                 for row in rows]
        errors = [result.cells[row][column].std if column in result.cells[row] else 0.0 for row in rows]
        axis.barh(range(len(rows)), means, xerr=errors, color="tab:blue", alpha=0.8)
        axis.axvline(0, color="grey", lw=0.5)
        axis.set_title(f"{column} (Dist1, against exact retraining)", fontsize=9)
    axes[0].set_yticks(range(len(rows)), rows, fontsize=7)
    axes[0].invert_yaxis()
    save_figure(figure, path, f"signal ladder: {result.dataset}, scale {result.scale}, seeds {result.seeds}")
