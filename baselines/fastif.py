"""FastIF (Guo et al. 2020): influence restricted to each query's nearest training samples.

For each query q, only its k nearest training samples in the target's ``embed()`` space are
candidates; the rest contribute 0. Per query and output class c, s_test = (H + damping I)^-1 J_{q,c}^T
(LiSSA with FastIF's cheaper settings: fewer, larger mini-batch steps), then
dy_{k,q,c} = (1/n) sum_{i in D_k and kNN(q)} s_test_{q,c} . grad l_i, with per-sample gradients of
the candidates only. Offline (``fit``): the kNN index (training embeddings) and LiSSA's scale.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from baselines.influence import (
    InfluenceAttributor,
    LissaConfig,
    estimate_scale,
    inverse_hvp,
    lissa_batches,
    option,
    resolve_solver,
)
from ddm.attributor import METHODS, Queries
from ddm.cluster import Clustering, embed
from ddm.data import DataSplits
from ddm.target import Target

NEIGHBOR_FRACTION = 0.1
GRADIENT_CHUNK = 64  # candidate samples per vmapped per-sample-gradient call (as per_cluster_gradients)


@dataclass(frozen=True)
class FastIFConfig(LissaConfig):
    """FastIF's options: the kNN preselection and its faster s_test."""

    solver: str = option("lissa", "FastIF's s_test is LiSSA; auto | exact | lissa as for koh")
    depth: int = option(
        100, "LiSSA steps: FastIF's speed-up is fewer recursion steps on larger mini-batches (each "
        "step's HVP is then less noisy); 100 x 512 keeps n_q x classes right-hand sides near 30 s")
    batch_size: int = option(512, "samples per LiSSA mini-batch HVP (FastIF: larger than Koh & Liang's)")
    neighbors: int | None = option(
        None, "k: candidates per query by kNN in embed() space; None = 10% of the training set. A "
        "cluster is 1% of the set at K = 100, so 10% holds about ten clusters' worth of the nearest "
        "samples (the same-class, look-alike clusters that dominate) and skips 90% of the gradients")


@METHODS.register("fastif")
class FastIFAttributor(InfluenceAttributor):
    """kNN-preselected influence functions (per-query s_test)."""

    name = "fastif"
    Options = FastIFConfig

    def fit(self, target: Target, data: DataSplits, clustering: Clustering) -> None:
        super().fit(target, data, clustering)
        stored = self.cached(lambda: self._index(data))
        self.train_embeddings = stored["embeddings"].to(self.problem.device)
        self.scale = stored["scale"]

    def _index(self, data: DataSplits) -> dict[str, Tensor | float | None]:
        """Training embeddings [N, D] (the kNN index) and the LiSSA scale (None = not needed)."""
        embeddings = embed(self.target.model, data.train_x)
        scale = self.options.scale
        if scale is None and resolve_solver(self.options, self.problem.n_params) == "lissa":
            first = lissa_batches(self.problem.n, self.options)[0, 0].to(self.problem.device)
            scale = estimate_scale(self.problem, first, self.options.damping, self.options.seed,
                                   self.progress)
        return {"embeddings": embeddings, "scale": scale}

    def n_neighbors(self) -> int:
        k = self.options.neighbors or math.ceil(NEIGHBOR_FRACTION * self.problem.n)
        return min(k, self.problem.n)

    def neighbours(self, images: Tensor) -> Tensor:
        """Rows of the k nearest training samples of every query: int64 [n_q, k]."""
        queries = embed(self.target.model, images).to(self.problem.device)
        distances = torch.cdist(queries, self.train_embeddings)
        return distances.topk(self.n_neighbors(), dim=1, largest=False).indices

    def s_test(self, queries: Queries) -> Tensor:
        """(H + damping I)^-1 J_{q,c}^T for every query and class: [n_q, classes, P]."""
        jacobian = self.problem.output_jacobian(self.query_inputs(queries))
        options = dataclasses.replace(self.options, scale=self.scale)
        solved = inverse_hvp(self.problem, jacobian.flatten(0, 1), options, progress=self.progress,
                             desc="fastif LiSSA")
        return solved.view_as(jacobian)

    def candidate_influence(self, rows: Tensor, s_test: Tensor) -> Tensor:
        """sum over D_k and kNN(q) of s_test_{q,c} . grad l_i: rows [n_q, k] -> [K, n_q, classes]."""
        n_queries = len(rows)
        candidate = torch.zeros(self.problem.n, n_queries, dtype=torch.bool, device=rows.device)
        candidate[rows, torch.arange(n_queries, device=rows.device)[:, None]] = True
        union = candidate.any(1).nonzero().flatten()
        total = s_test.new_zeros(self.clustering.n_clusters, n_queries, s_test.shape[1])
        for start in range(0, len(union), GRADIENT_CHUNK):
            part = union[start:start + GRADIENT_CHUNK]
            dots = torch.einsum("mp,qcp->mqc", self.problem.sample_gradients(part), s_test)
            total.index_add_(0, self.cluster_ids[part], dots * candidate[part, :, None])
        return total

    def predict_removals(self, queries: Queries) -> Tensor:
        """softmax(f(x; theta_tau)) + the kNN-restricted influence: [K, n_queries, classes]."""
        rows = self.neighbours(queries.images)
        change = self.candidate_influence(rows, self.s_test(queries)) / self.problem.n
        return self.shifted(queries, change)
