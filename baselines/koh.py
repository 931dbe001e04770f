"""Koh & Liang (2017) influence functions: cluster removal through an inverse Hessian.

Offline (``fit``): for every cluster k, dtheta_k = (1/n) (H + damping I)^-1 sum_{i in D_k} grad l_i at
theta_tau, by the exact dense solve for few parameters and LiSSA otherwise (all K right-hand sides
in one batched recursion), cached per (target, clustering, options). Online: the query probabilities
move by J_y dtheta_k, K Jacobian-vector products through the network.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from baselines.influence import InfluenceAttributor, LissaConfig, inverse_hvp, option, resolve_solver
from ddm.attributor import METHODS, Queries
from ddm.cluster import Clustering
from ddm.data import DataSplits
from ddm.target import Target


@METHODS.register("koh")
class KohAttributor(InfluenceAttributor):
    """Influence functions; ``options`` (a :class:`LissaConfig`) choose parameters and solver."""

    name = "koh"
    Options = LissaConfig

    def fit(self, target: Target, data: DataSplits, clustering: Clustering) -> None:
        super().fit(target, data, clustering)
        stored = self.cached(self._parameter_changes)
        self.changes = stored["changes"].to(device=self.problem.device, dtype=self.problem.dtype)

    def _parameter_changes(self) -> dict[str, Tensor | str]:
        """dtheta_k for every cluster: [K, P]."""
        sums = self.problem.cluster_gradient_sums(self.cluster_ids, self.clustering.n_clusters)
        changes = inverse_hvp(self.problem, sums, self.options, progress=self.progress, desc="koh LiSSA")
        solver = resolve_solver(self.options, self.problem.n_params)
        return {"changes": changes.cpu() / self.problem.n, "solver": solver}

    def predict_removals(self, queries: Queries) -> Tensor:
        """y_k = softmax(f(x; theta_tau)) + J_y dtheta_k: [K, n_queries, classes]."""
        return self.shifted(queries, self.problem.output_jvp(self.query_inputs(queries), self.changes))


@dataclass(frozen=True)
class LissaAllConfig(LissaConfig):
    """Koh's options with every parameter of the network."""

    params: str = option("all", "every parameter (its own method beside Koh on the head)")
    solver: str = option("lissa", "lissa (the exact solve needs one HVP over every sample per parameter: "
                         "over 12 min for one digits-smoke fit) | exact | auto")
    batch_size: int = option(1 << 30, "samples per LiSSA HVP: the whole set (mini-batch Hessians of the "
                             "whole network exceed the scale estimated on one and diverge)")
    convexify: bool = option(True, "raise the damping to 2 x the most negative eigenvalue of H (Koh & "
                             "Liang's convex quadratic approximation of a non-convex loss); off: LiSSA "
                             "diverged over the whole network on tiny digits at damping 0.01 and 0.1")


@METHODS.register("koh_all")
class KohAllAttributor(KohAttributor):
    """Koh & Liang over every parameter: the same estimate as ``koh`` without the head-only shortcut."""

    name = "koh_all"
    Options = LissaAllConfig
