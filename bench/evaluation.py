"""Judge attributions against exact retraining: the numbers of Tables 1/2 and the cluster-level LDS.

Plain functions over fitted attributors; the table modules call them and write results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from baselines.exact import ExactAttributor, RetrainSpec
from bench.base import RunContext
from ddm.attributor import Attributor, Queries, RemovalPredictor
from ddm.metrics import (
    LocateScore,
    additive_margins,
    lds_per_query,
    locate_score,
    mean_spearman,
    true_class_margin,
)
from ddm.objectives import get_objective
from ddm.pipeline import Stages, select_queries

# The field's methods beside DDM (issue 21): row label -> registered method. DDM-match both ways: the
# paper's ablation as written (descent) and as a removal (ascent); neither is DDM's default. The exact
# linear response (``metagradient``) is the ceiling of every first-order method, read the rows
# against it. Registered, not a row yet: ``koh_all`` (LiSSA diverges on the whole non-convex network:
# tiny digits at damping 0.01 and 0.1; the exact solve took over 12 min for one digits-smoke fit).
DDM_MATCH_DESCENT = "DDM-match (descent, as in the paper's ablation)"
DDM_MATCH_ASCENT = "DDM-match (ascent)"
LINEAR_RESPONSE = "Exact linear response (metagradient)"
FIELD_METHODS = {LINEAR_RESPONSE: "metagradient", "TRAK": "trak", "EK-FAC": "ekfac", "K-FAC": "kfac",
                 "TracIn-CP": "tracin", "Grad-Dot": "grad_dot", "Grad-Cos": "grad_cos",
                 "Representer points": "rps",
                 DDM_MATCH_DESCENT: "ddm_match", DDM_MATCH_ASCENT: "ddm_match_ascent"}


def runnable(methods: dict[str, str], config: Any = None) -> tuple[dict[str, str], list[str]]:
    """The rows whose method can run here, and one note per row skipped: the library its method
    wraps is not installed (the ``methods`` extra), or the method cannot follow ``config`` (its own
    ``unsupported(config)``, e.g. the metagradient under augmentation)."""
    import baselines  # noqa: F401  (declares the baselines)
    from baselines.library import EXTRA, available
    from ddm.attributor import METHODS

    kept, skipped = {}, []
    for row, method in methods.items():
        cls = METHODS[method]
        module = getattr(cls, "module", None)
        reason = getattr(cls, "unsupported", lambda _: None)(config) if config is not None else None
        if module is not None and not available(module):
            skipped.append(f"{row} ({method}) skipped: its library {module} is not installed ({EXTRA})")
        elif reason:
            skipped.append(f"{row} ({method}) skipped: {reason}")
        else:
            kept[row] = method
    return kept, skipped


@dataclass
class Oracle:
    """Exact single-cluster retraining outputs for a query set (computed once, shared by methods)."""

    queries: Queries
    reference: Tensor  # [n_q, C] target probabilities
    removals: Tensor  # [K, n_q, C] exact probabilities without each cluster

    def exact(self, objective: str) -> Tensor:
        """Exact objective value of removing each cluster: [K, n_q] (or [K, 1])."""
        return get_objective(objective)(self.removals, self.reference, self.queries.labels)


def exact_oracle(ctx: RunContext, stages: Stages, seed: int) -> Oracle:
    """Exact single-cluster retraining of every cluster (cached, under the run's protocol), on this
    seed's query set."""
    return build_oracle(ctx.exact(stages), select_queries(stages.data, ctx.n_queries, ctx.query_seed(seed)))


def build_oracle(exact: ExactAttributor, queries: Queries) -> Oracle:
    return Oracle(queries, exact.reference(queries), exact.predict_removals(queries).to(torch.float64))


def score_method(attributor: Attributor, oracle: Oracle, objective: str) -> LocateScore:
    """Table-1/2 numbers of one method for one objective."""
    scores = attributor.attribute(oracle.queries, objective)
    return locate_score(scores, oracle.exact(objective))


def cluster_lds(methods: dict[str, RemovalPredictor], queries: Queries, masks: Tensor, actual: Tensor,
                joint: frozenset[str] = frozenset()) -> dict[str, np.ndarray]:
    """Cluster-level LDS of every method, per query [n_q]: the Spearman correlation, across keep-masks
    [m, K], between the true-class margin a method predicts for each joint removal and the one exact
    retraining gave (``actual``: probabilities [m, n_q, classes] of the masks retrained). A method's
    prediction is its single-cluster effects added up in the margin (TRAK's LDS,
    :func:`~ddm.metrics.additive_margins`); the methods named in ``joint`` predict the masks
    themselves (:meth:`~ddm.attributor.RemovalPredictor.predict_masks`: the masks retrained)."""
    margins = true_class_margin(actual.to(torch.float64), queries.labels)
    scores = {}
    for name, method in methods.items():
        if name in joint:
            predicted = true_class_margin(method.predict_masks(masks, queries), queries.labels)
        else:
            predicted = additive_margins(method.removals(queries), method.reference(queries), queries.labels,
                                         masks)
        scores[name] = lds_per_query(predicted, margins)
    return scores


# Clusters whose removal the locate tables retrain a second time, perturbed, to measure the oracle's
# numerical floor (evenly spaced over the K clusters; ``ddm-bench oracle --check`` takes all K).
FLOOR_CLUSTERS = 20


def other_threads() -> str:
    """The thread-count perturbation of this process: the other of 1 and this process's count."""
    return "threads=1" if torch.get_num_threads() > 1 else "threads=2"


def table_perturbation(device: torch.device) -> str:
    """What the tables' numerical floor perturbs: on the CPU the thread count (what differs between
    machines of one kind: the reduction order), on a GPU theta_0 by one ulp (threads change nothing there)."""
    return other_threads() if device.type == "cpu" else "jitter"


@dataclass(frozen=True)
class FloorScore:
    """How well the exact oracle agrees with its own rerun under a rounding-level perturbation, for
    one objective (means over queries): ``spearman`` of the clusters' exact effects with the rerun's,
    ``top_agree`` the share of queries whose extreme cluster is the same, ``relative_dist1`` the mean
    Dist1 between each removal and its rerun over the mean deletion effect (mean Dist1 of a removal
    from the reference)."""

    spearman: float
    top_agree: float
    relative_dist1: float


def floor_clusters(n_clusters: int, count: int | None) -> list[int]:
    """``count`` evenly spaced cluster ids out of ``n_clusters`` (all when None or >= K)."""
    if count is None or count >= n_clusters:
        return list(range(n_clusters))
    return sorted({round(i * n_clusters / count) for i in range(count)})


def perturbed_rerun(ctx: RunContext, stages: Stages, queries: Queries, clusters: list[int],
                    perturb: str) -> tuple[Tensor, Tensor]:
    """The oracle rerun under ``perturb``: the target retrained on the full set, and the removal of
    every cluster in ``clusters``, both perturbed: (reference [n_q, C], removals [len(clusters), n_q, C])."""
    device = next(stages.target.model.parameters()).device
    images = queries.images.to(device)
    retrainer = ctx.retrainer(stages)
    seed = stages.target.config.train.seed
    reference = retrainer.outputs([RetrainSpec((), "same-seed", seed, perturb)], images,
                                  desc=f"oracle rerun ({perturb})")[0]
    removed = [tuple(stages.clustering.members(k).tolist()) for k in clusters]
    removals = retrainer.removal_outputs(removed, ctx.protocol, ctx.retrain_seeds_of(stages), images,
                                         desc=f"oracle rerun ({perturb})", perturb=perturb)
    return reference.to(torch.float64), removals.to(torch.float64)


def numerical_floor(ctx: RunContext, stages: Stages, oracle: Oracle, objectives: list[str], *,
                    clusters: int | None = FLOOR_CLUSTERS, perturb: str = "jitter") -> dict[str, FloorScore]:
    """The numerical floor of ``oracle`` (all K removals retrained) on ``clusters`` of its clusters."""
    picked = floor_clusters(len(oracle.removals), clusters)
    return floor_scores(ctx, stages, oracle.queries, oracle.reference, oracle.removals[picked], picked,
                        objectives, perturb)


def floor_record(stages: Stages, perturb: str, clusters: int, n_clusters: int, objectives: dict[str, Any],
                 unit: str | None = None) -> dict[str, Any]:
    """One self-agreement block as a result's series stores it (``series[seed]["floors"][label]``,
    rendered by ``bench/render.py`` per ``unit``: clusters when None, masks, accuracy): what was
    perturbed, how many of the ``n_clusters`` removals (masks, removal sets) were retrained again,
    and the agreement per objective."""
    model = stages.config.model
    return {"numerics": f"{model.precision}, {model.activation}", "perturb": perturb, "clusters": clusters,
            "n_clusters": n_clusters, **({"unit": unit} if unit else {}), "objectives": objectives}


def floor_series(ctx: RunContext, stages: Stages, oracle: Oracle, objectives: list[str]) -> dict[str, Any]:
    """The single-cluster oracle's self-agreement (:func:`numerical_floor` on ``FLOOR_CLUSTERS`` of its
    clusters, or the run's ``floor_clusters``, under the tables' perturbation) as a series stores it."""
    n_clusters = stages.clustering.n_clusters
    clusters = ctx.floor_clusters or FLOOR_CLUSTERS
    perturb = table_perturbation(next(stages.target.model.parameters()).device)
    floor = numerical_floor(ctx, stages, oracle, objectives, clusters=clusters, perturb=perturb)
    return floor_record(stages, perturb, min(clusters, n_clusters), n_clusters,
                        {name: vars(score) for name, score in floor.items()})


# The bar an oracle's self-agreement must pass for the numbers scored against it to mean something
# (the noise target's acceptance bar for the default numerics; float64 ReLU measures Spearman 1 and
# a rerun distance of 0 to 1e-26 of the deletion effect). For retrained removal sets judged by test
# accuracy: at most 0.1 % of test images classified otherwise, no accuracy moved by 0.1 point.
AGREEMENT_BAR = {"spearman": (">=", 0.999), "top_agree": (">=", 0.99), "relative_dist1": ("<=", 1e-6),
                 "prediction_agreement": (">=", 0.999), "max_accuracy_gap": ("<=", 0.1)}


def below_bar(record: dict[str, Any]) -> list[str]:
    """Every number of a self-agreement block (:func:`floor_record`) that misses ``AGREEMENT_BAR``,
    as "objective: name value" (empty: the oracle agrees with its rerun)."""
    missed = []
    for objective, numbers in record["objectives"].items():
        for name, value in numbers.items():
            relation, bound = AGREEMENT_BAR[name]
            if not (value >= bound if relation == ">=" else value <= bound):  # NaN misses too
                missed.append(f"{objective}: {name} {value:.6g} (bar {relation} {bound:g})")
    return missed


def floor_scores(ctx: RunContext, stages: Stages, queries: Queries, reference: Tensor, base: Tensor,
                 picked: list[int], objectives: list[str], perturb: str) -> dict[str, FloorScore]:
    """How the exact effects of removing each cluster in ``picked`` (``base``: [len(picked), n_q, C]
    against ``reference`` [n_q, C]) move when the target and those removals are retrained under
    ``perturb``: one :class:`FloorScore` per objective."""
    rerun_reference, rerun = perturbed_rerun(ctx, stages, queries, picked, perturb)
    effect = ((base - reference) ** 2).sum(-1).mean()
    relative = float(((rerun - base) ** 2).sum(-1).mean() / effect.clamp_min(1e-300))
    scores = {}
    for objective in objectives:
        exact = get_objective(objective)(base, reference, queries.labels)
        moved = get_objective(objective)(rerun, rerun_reference, queries.labels)
        top = (exact.argmax(0) == moved.argmax(0)).double().mean()
        scores[objective] = FloorScore(mean_spearman(moved, exact), float(top), relative)
    return scores
