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
Statistic = Callable[[np.ndarray], np.ndarray]  # column means [..., d] -> statistic [...]
CHUNK = 500  # replicates drawn at once (bounds the gathered draws to CHUNK x seeds x queries x d)


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


def replicate_means(arrays: Sequence[np.ndarray], resamples: int = RESAMPLES,
                    seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """The column means [resamples, d] of ``resamples`` two-stage bootstrap draws from ``arrays``
    (one [n_s, d] array per seed): per replicate, as many seeds as there are, drawn with
    replacement, then within each drawn seed as many of its queries as it has, with replacement
    (query j of a seed with n queries is floor(u * n) for a uniform u). Drawn ``CHUNK`` replicates
    at a time, vectorized."""
    generator = np.random.default_rng(seed)
    sizes = np.array([len(array) for array in arrays])
    longest, width = int(sizes.max()), arrays[0].shape[1]
    padded = np.zeros((len(arrays), longest, width))
    for s, array in enumerate(arrays):
        padded[s, :len(array)] = array
    means = np.empty((resamples, width))
    for start in range(0, resamples, CHUNK):
        count = min(CHUNK, resamples - start)
        drawn = generator.integers(len(arrays), size=(count, len(arrays)))  # [count, seeds]
        n = sizes[drawn][..., None]  # each drawn seed's query count
        queries = np.floor(generator.random((count, len(arrays), longest)) * n).astype(np.int64)
        kept = np.arange(longest) < n  # the first n draws of a seed with n queries
        values = padded[drawn[..., None], np.minimum(queries, longest - 1)] * kept[..., None]
        means[start:start + count] = values.sum(axis=(1, 2)) / kept.sum(axis=(1, 2))[:, None]
    return means


def bootstrap(series: Sequence[PerSeed], statistic: Statistic, resamples: int = RESAMPLES,
              seed: int = BOOTSTRAP_SEED, level: float = LEVEL) -> Interval | None:
    """``statistic`` of the pooled values' column means (``series``: each per seed, one value per
    query, aligned query for query) with its two-stage bootstrap interval; None when no value is
    finite. Every statistic here (a mean, a ratio of means) is a function of the column means."""
    arrays = _columns(series)
    if not arrays:
        return None
    estimate = float(statistic(np.concatenate(arrays).mean(axis=0)))
    with np.errstate(divide="ignore", invalid="ignore"):
        replicates = np.asarray(statistic(replicate_means(arrays, resamples, seed)), dtype=np.float64)
    finite = replicates[np.isfinite(replicates)]
    total = sum(map(len, arrays))
    if not len(finite):
        return Interval(estimate, math.nan, math.nan, len(arrays), total)
    tail = (1 - level) / 2
    low, high = np.quantile(finite, [tail, 1 - tail])
    return Interval(estimate, float(low), float(high), len(arrays), total)


def mean_interval(per_seed: PerSeed, **options) -> Interval | None:
    """The mean over (seed, query) values with its interval."""
    return bootstrap([per_seed], lambda means: means[..., 0], **options)


def ratio_of_means(method: PerSeed, random: PerSeed, oracle: PerSeed, **options) -> Interval | None:
    """Normalized score as the ratio of means, (mean method - mean random) / (mean oracle - mean
    random), with its interval: the ratio of per-seed ratios' mean is not used, since a seed whose
    oracle is barely above random swings it without bound. NaN where the oracle's and random's
    means coincide (to 1e-12)."""
    def ratio(means: np.ndarray) -> np.ndarray:
        gap = means[..., 2] - means[..., 1]
        safe = np.where(np.abs(gap) > 1e-12, gap, np.nan)
        return (means[..., 0] - means[..., 1]) / safe

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
