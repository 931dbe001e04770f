"""Figures 4/5 and 6: what the synthetic images look like, and hierarchical tracing.

Figure 4 (and the paper's Fig. 5, privacy) shows the first cluster of each class as distilled by
gradient matching and by reverse gradient matching. The paper argues reverse-matched images reveal
less of the training data; our number for that is the L2 distance (in normalized pixel space) from
each synthetic image to its nearest real training image, over the whole synset. Both synsets start
from real images (distance 0), so the number is how far distillation moved them away.

Figure 6 reproduces hierarchical tracing (§6.2): first the class (L class-level deletions), then the
cluster within it (C cluster-level deletions), for one query and for the whole query batch, against
the flat search over all K single-cluster deletions. Cells: fine-tunes spent, how often the
hierarchical pick equals the flat one, and the exact Dist1 (x100) of the cluster each picks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bench.base import TARGETS, BenchTarget, CellValues, RunContext, config_summary
from bench.evaluation import exact_oracle, floor_series
from bench.results import Result
from ddm.metrics import located_value

SYNSETS = (("DDM-match (gradient matching)", "ddm_match"), ("DDM (reverse matching)", "ddm"))


def nearest_real_distance(synthetic: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """L2 distance of each synthetic image [S, ...] to its nearest real image [N, ...]: [S]."""
    return torch.cdist(synthetic.flatten(1).double(), real.flatten(1).double()).min(1).values


@TARGETS.register("fig4")
class Figure4(BenchTarget):
    name = "fig4"
    title = "Figure 4/5: synthetic images and their distance to the nearest real training image"
    rows = [row for row, _ in SYNSETS]
    columns = ["mean NN distance", "min NN distance"]

    def notes(self, ctx: RunContext) -> list[str]:
        return [f"config: {config_summary(ctx.config)}",
                "NN distance: L2 in normalized pixel space to the nearest real training image; larger = "
                "less of any one training image is revealed (0 = a copy)"]

    def run_seed(self, ctx: RunContext, seed: int) -> tuple[CellValues, dict[str, Any]]:
        stages = ctx.stages(ctx.seeded(seed))
        per_class = stages.clustering.clusters_per_class
        cells: CellValues = {}
        series: dict[str, Any] = {}
        for row, method in SYNSETS:
            synset = ctx.fit(method, stages).synset
            distances = nearest_real_distance(synset.images, stages.data.train_x)
            cells[row] = {"mean NN distance": {"value": float(distances.mean())},
                          "min NN distance": {"value": float(distances.min())}}
            first_of_class = synset.cluster_ids % per_class == 0
            series[method] = synset.images[first_of_class].tolist()
        return cells, series

    def plot(self, result: Result, path: Path) -> bool:
        plot_fig4(result, path)
        return True


def plot_fig4(result: Result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = result.series[str(result.seeds[0])]
    rows = [method for _, method in SYNSETS]
    count = len(series[rows[0]])
    figure, axes = plt.subplots(len(rows), count, figsize=(count * 0.9, len(rows) * 1.1), squeeze=False)
    for r, method in enumerate(rows):
        for c, image in enumerate(torch.tensor(series[method])):
            picture = image.permute(1, 2, 0)
            picture = (picture - picture.min()) / (picture.max() - picture.min() + 1e-12)
            axes[r][c].imshow(picture.squeeze(-1).numpy(), cmap="gray" if picture.shape[-1] == 1 else None)
            axes[r][c].axis("off")
        axes[r][0].set_title(method, fontsize=8, loc="left")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


@TARGETS.register("fig6")
class Figure6(BenchTarget):
    name = "fig6"
    retrains = True
    title = "Figure 6: hierarchical tracing (class, then cluster) against the flat search"
    rows = ["flat: K single deletions", "hierarchical: L + C deletions"]
    columns = ["fine-tunes", "agrees with flat", "dist1 of located ×100"]

    def notes(self, ctx: RunContext) -> list[str]:
        return [f"config: {config_summary(ctx.config)}; {ctx.n_queries} queries (the batch)",
                "fine-tunes of the hierarchical row: L + C per distinct located class"]

    def run_seed(self, ctx: RunContext, seed: int) -> tuple[CellValues, dict[str, Any]]:
        stages = ctx.stages(ctx.seeded(seed))
        oracle = exact_oracle(ctx, stages, seed)
        ddm = ctx.fit("ddm", stages, need="hierarchical search")
        n_clusters = stages.clustering.n_clusters
        flat_scores = ddm.scores_of_singles(oracle.queries, "dist1")
        flat = flat_scores.argmax(0)
        search = ddm.hierarchical(oracle.queries, "dist1")
        exact = oracle.exact("dist1")
        cells: CellValues = {
            "flat: K single deletions": {"fine-tunes": {"value": n_clusters},
                                         "agrees with flat": {"value": 1.0},
                                         "dist1 of located ×100": {
                                             "value": 100 * located_value(exact, flat)}},
            "hierarchical: L + C deletions": {
                "fine-tunes": {"value": search.finetunes},
                "agrees with flat": {"value": float((search.clusters == flat).double().mean())},
                "dist1 of located ×100": {"value": 100 * located_value(exact, search.clusters)}}}
        series = {"flat_scores_query0": flat_scores[:, 0].tolist(),
                  "located_classes": search.classes.tolist(),
                  "clusters_per_class": stages.clustering.clusters_per_class,
                  "n_classes": stages.clustering.n_classes,
                  "floors": {"oracle": floor_series(ctx, stages, oracle, ["dist1"])}}
        return cells, series

    def plot(self, result: Result, path: Path) -> bool:
        plot_fig6(result, path)
        return True


def plot_fig6(result: Result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = result.series[str(result.seeds[0])]
    per_class, n_classes = series["clusters_per_class"], series["n_classes"]
    scores = torch.tensor(series["flat_scores_query0"]).view(n_classes, per_class)
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    image = axes[0].imshow(scores.numpy(), aspect="auto", cmap="viridis")
    axes[0].set(title="one query: dist1 score per cluster", xlabel="cluster within class", ylabel="class")
    figure.colorbar(image, ax=axes[0])
    axes[1].hist(series["located_classes"], bins=range(n_classes + 1), rwidth=0.8)
    axes[1].set(title="query batch: class located first", xlabel="class", ylabel="queries")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
