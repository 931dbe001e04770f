"""How a method's attribution is judged against exact retraining (the oracle).

With ``exact`` = the objective of exactly retraining without each single cluster, [K, n_q]:
- ``located_value``: mean over queries of the exact objective of the cluster the method located
  (the number in the paper's Tables 1 and 2);
- ``random_value``: its expectation for a uniformly random cluster (mean over clusters);
- ``oracle_value``: the best achievable (max over clusters);
- ``normalized``: (method - random) / (oracle - random): 0 = random, 1 = oracle;
- ``spearman``: per query, rank correlation of the method's K scores with the K exact effects;
- ``lds``: the linear datamodeling score at cluster level: Spearman, over random keep-masks, between
  predicted and exactly retrained margins of the true class, averaged over queries; a per-cluster
  method's prediction is additive in the margin (``additive_margins``, as TRAK defines the LDS).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import Tensor

EPS = 1e-12


TOP_K = (1, 5, 10)  # top-k recall of the oracle's most influential cluster


@dataclass(frozen=True)
class LocateScore:
    """Table-1/2 numbers for one method and objective (means over queries), and ``queries``: the
    per-query values behind each (located, random, oracle, spearman, top1/top5/top10), for intervals
    and paired comparisons over (seed, query)."""

    located: float
    random: float
    oracle: float
    normalized: float
    spearman: float
    queries: dict[str, list[float]] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, float]:
        return {name: value for name, value in asdict(self).items() if name != "queries"}


def located_value(exact: Tensor, located: Tensor) -> float:
    """Mean exact objective of the located clusters. exact [K, n_q]; located int64 [n_q]."""
    return float(exact.gather(0, located.view(1, -1)).mean())


def random_value(exact: Tensor) -> float:
    return float(exact.mean())


def oracle_value(exact: Tensor) -> float:
    return float(exact.max(0).values.mean())


def normalized_score(method: float, random: float, oracle: float) -> float:
    """(method - random) / (oracle - random); NaN when the oracle is no better than random."""
    gap = oracle - random
    return (method - random) / gap if abs(gap) > EPS else float("nan")


def spearman_per_query(scores: Tensor, exact: Tensor) -> np.ndarray:
    """Spearman(scores[:, q], exact[:, q]) per query (column) [n_q]; NaN where either is constant."""
    values = np.full(exact.shape[1], np.nan)
    for q in range(exact.shape[1]):
        a, b = scores[:, q].double().numpy(), exact[:, q].double().numpy()
        if np.ptp(a) > 0 and np.ptp(b) > 0:
            values[q] = spearmanr(a, b).statistic
    return values


def finite_mean(values: Any) -> float:
    """Mean of the finite entries (a query whose Spearman is undefined is skipped); NaN when none is."""
    values = np.asarray(values, dtype=np.float64)
    return float(values[np.isfinite(values)].mean()) if np.isfinite(values).any() else float("nan")


def mean_spearman(scores: Tensor, exact: Tensor) -> float:
    """Mean over queries (columns) of Spearman(scores[:, q], exact[:, q]); constant columns skipped."""
    return finite_mean(spearman_per_query(scores, exact))


def top_k_recall(scores: Tensor, exact: Tensor, k: int) -> np.ndarray:
    """Per query [n_q]: 1 when the oracle's best cluster is among the method's k highest scores."""
    best = exact.argmax(0)
    top = scores.double().topk(min(k, scores.shape[0]), dim=0).indices
    return (top == best.view(1, -1)).any(0).double().numpy()


def locate_score(scores: Tensor, exact: Tensor) -> LocateScore:
    """All Table-1/2 numbers for a method's scores [K, n_q] against exact effects [K, n_q]."""
    located = exact.gather(0, scores.argmax(0).view(1, -1))[0].double()
    queries = {"located": located, "random": exact.double().mean(0), "oracle": exact.double().max(0).values}
    queries = {name: values.tolist() for name, values in queries.items()}
    queries["spearman"] = spearman_per_query(scores, exact).tolist()
    queries.update({f"top{k}": top_k_recall(scores, exact, k).tolist() for k in TOP_K})
    method, random, oracle = (float(np.mean(queries[name])) for name in ("located", "random", "oracle"))
    spearman = queries["spearman"]
    return LocateScore(method, random, oracle, normalized_score(method, random, oracle),
                       finite_mean(spearman), queries)


def true_class_margin(probabilities: Tensor, labels: Tensor) -> Tensor:
    """log p_true - log max_{c != true} p_c: [..., n_q, classes] -> [..., n_q]."""
    index = labels.expand(*probabilities.shape[:-1]).unsqueeze(-1)
    true = probabilities.gather(-1, index).squeeze(-1)
    others = probabilities.scatter(-1, index, 0.0).max(-1).values
    return true.clamp_min(EPS).log() - others.clamp_min(EPS).log()


def lds_masks(n_clusters: int, n_masks: int, seed: int, keep_fraction: float = 0.5) -> Tensor:
    """``n_masks`` random keep-masks bool [m, K], each keeping round(keep_fraction * K) clusters."""
    generator = torch.Generator().manual_seed(seed)
    kept = round(keep_fraction * n_clusters)
    masks = torch.zeros(n_masks, n_clusters, dtype=torch.bool)
    for row in range(n_masks):
        masks[row, torch.randperm(n_clusters, generator=generator)[:kept]] = True
    return masks


def additive_prediction(single_removals: Tensor, reference: Tensor, keep: Tensor) -> Tensor:
    """Outputs for keep-masks assuming cluster effects add up (what every linear attribution implies).

    single_removals [K, n_q, C]: predicted outputs with each cluster removed; reference [n_q, C];
    keep bool [m, K] -> [m, n_q, C] = reference + sum over removed k of (single_k - reference).
    """
    effects = (single_removals - reference).to(torch.float64)
    removed = (~keep).to(torch.float64)
    return reference + torch.einsum("mk,kqc->mqc", removed, effects)


def additive_margins(single_removals: Tensor, reference: Tensor, labels: Tensor, keep: Tensor) -> Tensor:
    """True-class margins for keep-masks as TRAK's LDS predicts them: additive in the margin.

    single_removals [K, n_q, C]: predicted probabilities with each cluster removed; reference
    [n_q, C]; labels [n_q]; keep bool [m, K] -> [m, n_q] = margin(reference) + sum over removed k of
    (margin(single_k) - margin(reference)). Linear in the mask (no clamping of summed
    probabilities); every per-cluster attribution predicts joint removals this way.
    """
    base = true_class_margin(reference.to(torch.float64), labels)
    effects = true_class_margin(single_removals.to(torch.float64), labels) - base  # [K, n_q]
    return base + (~keep).to(torch.float64) @ effects


def lds_per_query(predicted_margins: Tensor, actual_margins: Tensor) -> np.ndarray:
    """Per query [n_q], the Spearman correlation across masks of predicted and actual margins (both
    [m, n_q]); NaN where either is constant."""
    return spearman_per_query(predicted_margins, actual_margins)


def lds(predicted_margins: Tensor, actual_margins: Tensor) -> float:
    """Mean over queries of Spearman across masks: both [m, n_q]."""
    return mean_spearman(predicted_margins, actual_margins)
