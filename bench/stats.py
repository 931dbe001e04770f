"""Intervals and paired comparisons over (seed, query) values (issue 22).

A table cell holds, per seed, one value per test query (``Cell.queries``). Two sources of variation
stand behind its mean: the seed (the target, its clustering, distillation and query set are redrawn)
and the queries within a seed. The interval resamples both, in that order, as a two-stage
(hierarchical) bootstrap: draw as many seeds as there are, with replacement; then, within each drawn
seed, draw as many of its queries as it has, with replacement; the statistic of the pooled draws is
one bootstrap replicate. The 95 % interval is the 2.5th and 97.5th percentile of ``RESAMPLES``
replicates (the percentile bootstrap), drawn with a fixed generator seed so a table renders the same
interval every time.

With a single seed only the queries are resampled: the interval then says nothing about the seed's
own randomness, and the tables say how many seeds stand behind each cell.

A paired comparison of two rows uses the same (seed, query) pairs: per pair the difference a - b,
its mean with the same interval, and the win rate (the share of pairs where a > b, ties counting
half).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 4000  # bootstrap replicates (the percentile's Monte-Carlo error is ~0.01 of the width)
LEVEL = 0.95
BOOTSTRAP_SEED = 0  # the generator of every interval (rendering is deterministic)

PerSeed = Sequence[Sequence[float]] | Sequence[np.ndarray]  # per seed: one value per query
Statistic = Callable[[np.ndarray], float]  # pooled draws [n, d] -> number


@dataclass(frozen=True)
class Interval:
    """A statistic of the pooled (seed, query) values and its bootstrap interval."""

    estimate: float
    low: float
    high: float
    seeds: int
    queries: int  # pooled (seed, query) values

    def to_dict(self) -> dict[str, float | int]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high,
                "seeds": self.seeds, "queries": self.queries}


def _columns(per_seed: Sequence[PerSeed]) -> list[np.ndarray]:
    """Stack several per-seed series into one [n_q, d] array per seed, dropping queries where any
    series is not finite (a query whose Spearman is undefined is left out, not imputed)."""
    arrays = []
    for seed_values in zip(*per_seed, strict=True):
        stacked = np.stack([np.asarray(values, dtype=np.float64) for values in seed_values], axis=1)
        arrays.append(stacked[np.isfinite(stacked).all(axis=1)])
    return [array for array in arrays if len(array)]


def bootstrap(series: Sequence[PerSeed], statistic: Statistic, resamples: int = RESAMPLES,
              seed: int = BOOTSTRAP_SEED, level: float = LEVEL) -> Interval | None:
    """``statistic`` of the pooled values of ``series`` (each: per seed, one value per query; aligned
    query for query) with its two-stage bootstrap interval; None when no value is finite."""
    arrays = _columns(series)
    if not arrays:
        return None
    estimate = float(statistic(np.concatenate(arrays)))
    generator = np.random.default_rng(seed)
    replicates = np.empty(resamples)
    for b in range(resamples):
        drawn = generator.integers(len(arrays), size=len(arrays))
        pooled = [arrays[s][generator.integers(len(arrays[s]), size=len(arrays[s]))] for s in drawn]
        replicates[b] = statistic(np.concatenate(pooled))
    finite = replicates[np.isfinite(replicates)]
    if not len(finite):
        return Interval(estimate, math.nan, math.nan, len(arrays), sum(map(len, arrays)))
    tail = (1 - level) / 2
    low, high = np.quantile(finite, [tail, 1 - tail])
    return Interval(estimate, float(low), float(high), len(arrays), sum(map(len, arrays)))


def mean_interval(per_seed: PerSeed, **options) -> Interval | None:
    """The mean over (seed, query) values with its interval."""
    return bootstrap([per_seed], lambda pooled: float(pooled[:, 0].mean()), **options)


def ratio_of_means(method: PerSeed, random: PerSeed, oracle: PerSeed, **options) -> Interval | None:
    """Normalized score as the ratio of means, (mean method - mean random) / (mean oracle - mean
    random), with its interval: the ratio of per-seed ratios' mean is not used, since a seed whose
    oracle is barely above random swings it without bound."""
    def ratio(pooled: np.ndarray) -> float:
        gap = (pooled[:, 2] - pooled[:, 1]).mean()
        return float((pooled[:, 0] - pooled[:, 1]).mean() / gap) if abs(gap) > 1e-12 else math.nan

    return bootstrap([method, random, oracle], ratio, **options)


@dataclass(frozen=True)
class Paired:
    """Row a against row b on the same (seed, query) pairs."""

    difference: Interval  # mean of a - b, with its interval
    win_rate: float  # share of pairs where a > b (ties count half)


def paired(a: PerSeed, b: PerSeed, **options) -> Paired | None:
    """Mean difference a - b over the shared (seed, query) pairs, its interval and a's win rate."""
    differences = [np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64)
                   for x, y in zip(a, b, strict=True)]
    interval = mean_interval(differences, **options)
    if interval is None:
        return None
    pooled = np.concatenate([d[np.isfinite(d)] for d in differences])
    return Paired(interval, float(((pooled > 0) + 0.5 * (pooled == 0)).mean()))
