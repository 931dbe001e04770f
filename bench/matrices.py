"""Figures 3 and 8: the class-wise attribution matrix under other architectures and initializations.

Both figures show DDM's attribution matrix W (fitted per query, [K, classes]) summed over the clusters
of each training class and averaged over the queries: a classes x classes matrix whose entry (l, c) is
how much class l's training data contributes to the class-c output. Figure 3 compares architectures
(the paper: AlexNet, ResNet18_AP, Simple ViT; we add the ConvNet as the reference), Figure 8 the
kaiming / normal / xavier initializations of the ConvNet. The cells summarize each matrix: the share of
its mass on the diagonal (own-class attribution), its cosine similarity to the reference variant's
matrix, and the variant's test accuracy; the PNG shows the matrices.

Departures from the paper: the preset's scale (subset, width, epochs); Simple ViT is trained with
Adam (lr 1e-3), since it barely moves under the presets' SGD; every variant gets its own extractor,
clusters and synset, and the same queries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bench.base import TARGETS, BenchTarget, CellValues, RunContext, config_summary
from bench.render import save_figure
from bench.results import Result
from ddm.pipeline import select_queries
from ddm.train import accuracy

COLUMNS = ["diagonal share", "cosine to reference", "test accuracy"]


def class_matrix(weights: Tensor, clusters_per_class: int) -> Tensor:
    """W [n_q, K, C] -> [L, C]: summed over each class's clusters, averaged over the queries."""
    n_queries, n_clusters, n_outputs = weights.shape
    per_class = weights.reshape(n_queries, n_clusters // clusters_per_class, clusters_per_class, n_outputs)
    return per_class.sum(2).mean(0)


def diagonal_share(matrix: Tensor) -> float:
    return float(matrix.diagonal().abs().sum() / matrix.abs().sum().clamp_min(1e-30))


def cosine(a: Tensor, b: Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


class MatrixTarget(BenchTarget):
    """One row per variant (config overrides); the first variant is the reference."""

    columns = COLUMNS
    variants: dict[str, dict[str, Any]]

    def notes(self, ctx: RunContext) -> list[str]:
        return [f"config: {config_summary(ctx.config)}; {ctx.n_queries} test queries",
                f"reference: {next(iter(self.variants))}"]

    def run_seed(self, ctx: RunContext, seed: int) -> tuple[CellValues, dict[str, Any]]:
        cells: CellValues = {}
        series: dict[str, Any] = {}
        reference = None
        for row, overrides in self.variants.items():
            stages = ctx.stages(ctx.seeded(seed, **overrides))
            queries = select_queries(stages.data, ctx.n_queries, ctx.query_seed(seed))
            datamodel = ctx.fit("ddm", stages, need="datamodel").datamodel(queries)
            matrix = class_matrix(datamodel.weights, stages.clustering.clusters_per_class)
            reference = matrix if reference is None else reference
            cells[row] = {"diagonal share": {"value": diagonal_share(matrix)},
                          "cosine to reference": {"value": cosine(matrix, reference)},
                          "test accuracy": {"value": 100 * accuracy(stages.target.model, stages.data.test_x,
                                                                    stages.data.test_y)}}
            series[row] = matrix.tolist()
        return cells, series

    def plot(self, result: Result, path: Path) -> bool:
        plot_matrices(result, path)
        return True


@TARGETS.register("fig3")
class Figure3(MatrixTarget):
    name = "fig3"
    title = "Figure 3: class-wise attribution matrix across architectures"
    variants = {"ConvNet": {"arch": "convnet"}, "AlexNet": {"arch": "alexnet"},
                "ResNet18_AP": {"arch": "resnet18_ap"},
                "Simple ViT": {"arch": "simple_vit", "optimizer": "adam", "lr": 1e-3}}
    rows = list(variants)


@TARGETS.register("fig8")
class Figure8(MatrixTarget):
    name = "fig8"
    title = "Figure 8: class-wise attribution matrix under three initializations"
    variants = {"Kaiming": {"init": "kaiming"}, "Normal": {"init": "normal"}, "Xavier": {"init": "xavier"}}
    rows = list(variants)


def plot_matrices(result: Result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = result.series[str(result.seeds[0])]
    figure, axes = plt.subplots(1, len(series), figsize=(3.2 * len(series), 3.2), squeeze=False)
    for axis, (row, matrix) in zip(axes[0], series.items(), strict=True):
        values = torch.tensor(matrix)
        bound = float(values.abs().max()) or 1.0
        axis.imshow(values.numpy(), cmap="RdBu_r", vmin=-bound, vmax=bound)
        axis.set_title(row, fontsize=9)
        axis.set_xlabel("output class")
        axis.set_ylabel("training class")
    title = f"{result.title}\n{result.dataset}, scale {result.scale}, seed {result.seeds[0]}"
    save_figure(figure, path, title, dpi=110)
