"""Table 4 and Figure 7: how well fine-tuning on a synset unlearns, against exact retraining.

Table 4 reproduces the paper's unlearning check: test accuracy of theta_0 and theta_tau (normal
training), and of theta_tau fine-tuned on the *whole* synset (every cluster "removed" at once), for the
gradient-matching synset (DDM-match) and the reverse-matched one (DDM). The paper prints the synset
rows in its two columns without defining them for those rows; we keep its two published columns for
orientation and put our fine-tuned accuracy in a third, explicitly named column.

Figure 7 reproduces "DDM vs exact unlearning": for every cluster k, the change of the query
predictions when k is removed exactly (retraining under the run's protocol) against the change DDM's
single-cluster fine-tune predicts; the cells give the mean squared error of each approximation and the
Pearson correlation of predicted with exact effects (pooled over clusters, queries and classes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.base import TARGETS, BenchTarget, CellValues, RunContext, config_summary
from bench.evaluation import exact_oracle, floor_series
from bench.results import Result
from ddm.train import accuracy

UNLEARNED = "Acc(θτ + whole synset)"


@TARGETS.register("table4")
class Table4(BenchTarget):
    name = "table4"
    paper = {  # the paper's Table 4
        "mnist": {"Normal": (12.5, 95.7), "DDM-match": (12.6, 85.0), "DDM": (0.6, 95.7)},
        "cifar10": {"Normal": (12.6, 85.0), "DDM-match": (12.6, 40.2), "DDM": (15.5, 85.0)},
        "cifar100": {"Normal": (2.2, 56.1), "DDM-match": (2.2, 23.5), "DDM": (0.8, 56.1)},
        "tinyimagenet": {"Normal": (1.4, 37.5), "DDM-match": (1.4, 7.8), "DDM": (0.1, 37.5)},
    }
    paper_rows = {"DDM (paper schedule)": "DDM"}
    title = "Table 4: unlearning everything by fine-tuning on the whole synset (test accuracy, %)"
    rows = ["Normal", "DDM-match", "DDM", "DDM (paper schedule)"]
    columns = ["Acc(θ0)", "Acc(θτ)", UNLEARNED]

    def notes(self, ctx: RunContext) -> list[str]:
        return [f"config: {config_summary(ctx.config)}",
                f"'{UNLEARNED}': theta_tau fine-tuned on every synthetic image with the online stage's "
                "steps and learning rate (the same fine-tune that deletes clusters)"]

    def run_seed(self, ctx: RunContext, seed: int) -> tuple[CellValues, dict[str, Any]]:
        stages = ctx.stages(ctx.seeded(seed))
        test_x, test_y = stages.data.test_x, stages.data.test_y
        first = 100 * accuracy(stages.target.model_at(0), test_x, test_y)
        last = 100 * accuracy(stages.target.model, test_x, test_y)
        cells: CellValues = {"Normal": {"Acc(θ0)": {"value": first}, "Acc(θτ)": {"value": last}}}
        for row, method, row_stages in (("DDM-match", "ddm_match", stages), ("DDM", "ddm", stages),
                                        ("DDM (paper schedule)", "ddm", ctx.paper_stages(seed))):
            attributor = ctx.fit(method, row_stages, need="unlearning")
            cells[row] = {UNLEARNED: {"value": 100 * accuracy(attributor.unlearn_all(), test_x, test_y)}}
        return cells, {}


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double().numpy(), b.flatten().double().numpy()
    return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")


@TARGETS.register("fig7")
class Figure7(BenchTarget):
    name = "fig7"
    retrains = True
    title = "Figure 7: DDM's single-cluster unlearning against exact retraining"
    rows = ["no unlearning (target)", "DDM-match fine-tune", "DDM fine-tune",
            "DDM (paper schedule) fine-tune"]
    columns = ["MSE to exact", "Pearson of effects"]

    def notes(self, ctx: RunContext) -> list[str]:
        return [f"config: {config_summary(ctx.config)}; {ctx.n_queries} queries",
                "effects: probabilities after removing one cluster minus the target's; MSE over "
                "clusters x queries x classes"]

    def run_seed(self, ctx: RunContext, seed: int) -> tuple[CellValues, dict[str, Any]]:
        stages = ctx.stages(ctx.seeded(seed))
        oracle = exact_oracle(ctx, stages, seed)
        exact = oracle.removals - oracle.reference  # [K, n_q, C]
        singles = ~torch.eye(stages.clustering.n_clusters, dtype=torch.bool)
        cells: CellValues = {"no unlearning (target)": {
            "MSE to exact": {"value": float(exact.pow(2).mean())},
            "Pearson of effects": {"value": float("nan")}}}
        series: dict[str, Any] = {"exact": exact.flatten().tolist(),
                                  "floors": {"oracle": floor_series(ctx, stages, oracle, ["dist1"])}}
        for row, method, row_stages in (("DDM-match fine-tune", "ddm_match", stages),
                                        ("DDM fine-tune", "ddm", stages),
                                        ("DDM (paper schedule) fine-tune", "ddm", ctx.paper_stages(seed))):
            attributor = ctx.fit(method, row_stages)
            predicted = attributor.unlearner(singles, oracle.queries.images).double() - oracle.reference
            cells[row] = {"MSE to exact": {"value": float((predicted - exact).pow(2).mean())},
                          "Pearson of effects": {"value": pearson(predicted, exact)}}
            series[row] = predicted.flatten().tolist()
        return cells, series

    def plot(self, result: Result, path: Path) -> bool:
        return plot_fig7(result, path)


def plot_fig7(result: Result, path: Path) -> bool:
    """The scatter of predicted against exact effects per row; False (no figure) when the result
    holds none of this code's rows (a result of older code)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = result.series[str(result.seeds[0])]
    rows = [row for row in result.rows[1:] if row in series]
    if not rows or "exact" not in series:
        return False
    figure, axes = plt.subplots(1, len(rows), figsize=(4.5 * len(rows), 4), sharey=True, squeeze=False)
    for axis, row in zip(axes[0], rows, strict=True):
        axis.scatter(series["exact"], series[row], s=2, alpha=0.4)
        axis.set_title(f"{row}: predicted vs exact", fontsize=8)
        axis.set_xlabel("exact change of probability")
        axis.axhline(0, color="grey", lw=0.5)
        axis.axvline(0, color="grey", lw=0.5)
    axes = axes[0]
    axes[0].set_ylabel("fine-tune change of probability")
    figure.suptitle(f"{result.dataset}, scale {result.scale}, seed {result.seeds[0]}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True
