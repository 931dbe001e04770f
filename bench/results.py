"""Results are data: one JSON (and a flat CSV) per (target, dataset, scale), written atomically.

Layout: ``results/<target>/<dataset>/<scale>/<target>.json`` and ``.csv``. A result holds, for every
cell (row x column), the per-seed values, their mean and spread, the seconds it took per seed and the
paper's value for the labelled comparison column; at the top level the config, seeds, environment
(code version, library versions, device) and the wall time of the whole run. ``tables/`` is
rendered from these files alone (``bench.render``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ddm.errors import DataError

if TYPE_CHECKING:
    from bench.stats import Interval
from ddm.io import atomic_write_text

RESULT_SCHEMA = 1
CHECKPOINTS = "checkpoints"  # results/checkpoints: run --checkpoint-dir's carried work, not a result


@dataclass
class Cell:
    """One table cell over seeds. ``extra`` holds secondary per-seed numbers (normalized score,
    Spearman, oracle, random expectation) under their names."""

    values: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    extra: dict[str, list[float]] = field(default_factory=dict)
    paper: float | None = None
    # per-query values behind the per-seed numbers: name -> per seed, one value per query (cells of
    # targets that score queries; ``bench.stats`` turns them into intervals and paired comparisons)
    queries: dict[str, list[list[float]]] = field(default_factory=dict)

    @property
    def mean(self) -> float:
        return _mean(self.values)

    @property
    def std(self) -> float:
        """Sample standard deviation over seeds (0 for a single seed)."""
        finite = [v for v in self.values if math.isfinite(v)]
        return float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0

    def add(self, value: float, seconds: float, queries: dict[str, list[float]] | None = None,
            **extra: float) -> None:
        """One seed's value, seconds, secondary numbers and (where the target scores queries) the
        per-query values behind them; a cell keeps per-query values only when every seed has them."""
        if queries is not None and len(self.queries.get(next(iter(queries), ""), [])) != len(self.values):
            queries = None  # an earlier seed had none: the series would not line up with the seeds
        self.values.append(float(value))
        self.seconds.append(float(seconds))
        for name, number in extra.items():
            self.extra.setdefault(name, []).append(float(number))
        if queries is None:
            self.queries = {}
        else:
            for name, per_query in queries.items():
                self.queries.setdefault(name, []).append([float(v) for v in per_query])

    def interval(self, name: str = "value") -> Interval | None:
        """The mean of per-query series ``name`` over (seed, query) with its bootstrap interval
        (``bench.stats``); None without per-query values for every seed."""
        from bench.stats import mean_interval

        series = self.queries.get(name)
        return mean_interval(series) if series and len(series) == len(self.values) else None

    def to_dict(self) -> dict[str, Any]:
        data = {**asdict(self), "mean": self.mean, "std": self.std, "n": len(self.values),
                "extra_mean": {name: _mean(values) for name, values in self.extra.items()}}
        if self.queries:  # the intervals a reader would otherwise recompute, beside their data
            data["intervals"] = {name: interval.to_dict() for name in self.queries
                                 if (interval := self.interval(name)) is not None}
        return data


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


@dataclass
class Result:
    """Everything one ``ddm-bench run TARGET`` produced for one dataset and scale."""

    target: str
    dataset: str
    scale: str
    title: str
    description: str
    rows: list[str]
    columns: list[str]
    cells: dict[str, dict[str, Cell]]  # row -> column -> cell
    seeds: list[int]
    config: dict[str, Any]
    environment: dict[str, Any]
    wall_seconds: float = 0.0
    n_queries: int | None = None  # test queries per seed, for targets that explain predictions
    query_seed_base: int = 0  # seed s drew its queries with seed s + query_seed_base
    protocol: str | None = None  # exact-retraining protocol of a target judged by retraining
    retrain_seeds: int | None = None  # fresh-seed: retrainings averaged per removed set
    notes: list[str] = field(default_factory=list)
    series: dict[str, Any] = field(default_factory=dict)  # figure data (lists of numbers), per target
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def cell(self, row: str, column: str) -> Cell:
        return self.cells.setdefault(row, {}).setdefault(column, Cell())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cells"] = {row: {column: cell.to_dict() for column, cell in columns.items()}
                         for row, columns in self.cells.items()}
        return {"schema": RESULT_SCHEMA, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        if data.get("schema") != RESULT_SCHEMA:
            raise DataError(f"result schema {data.get('schema')!r} is not {RESULT_SCHEMA}; rerun the target")
        fields = {key: value for key, value in data.items() if key != "schema"}
        fields["cells"] = {row: {column: Cell(cell["values"], cell["seconds"], cell["extra"], cell["paper"],
                                              cell.get("queries", {}))
                                 for column, cell in columns.items()}
                           for row, columns in data["cells"].items()}
        return cls(**fields)

    def frame(self) -> pd.DataFrame:
        """One flat row per cell (the CSV)."""
        records = []
        for row, columns in self.cells.items():
            for column, cell in columns.items():
                records.append({"target": self.target, "dataset": self.dataset, "scale": self.scale,
                                "row": row, "column": column, "mean": cell.mean, "std": cell.std,
                                "n_seeds": len(cell.values), "values": json.dumps(cell.values),
                                "seconds": sum(cell.seconds), "paper": cell.paper,
                                **{f"{name}_mean": _mean(v) for name, v in cell.extra.items()},
                                "code_version": self.environment.get("code_version")})
        return pd.DataFrame.from_records(records)


def numerics_tag(config: dict[str, Any]) -> str:
    """``""`` for the default (precision, activation) or a result older than those fields, else e.g.
    ``"_float64-relu"``: results and tables of every pair are kept side by side."""
    from ddm.config import ModelConfig

    model = config.get("model", {}) if isinstance(config, dict) else {}
    if "precision" not in model:
        return ""
    pair = (model["precision"], model["activation"])
    return "" if pair == (ModelConfig.precision, ModelConfig.activation) else f"_{pair[0]}-{pair[1]}"


def result_path(root: Path, target: str, dataset: str, scale: str, protocol: str | None = None,
                numerics: str = "") -> Path:
    """``<target>.json``, or ``<target>_fresh-seed.json`` beside it for a non-default protocol (both
    protocols' results are kept), with ``numerics`` (:func:`numerics_tag`) appended."""
    suffix = "" if protocol in (None, "same-seed") else f"_{protocol}"
    return Path(root) / target / dataset / scale / f"{target}{suffix}{numerics}.json"


def write_result(result: Result, root: Path) -> Path:
    """Write the JSON and CSV atomically; returns the JSON path."""
    path = result_path(root, result.target, result.dataset, result.scale, result.protocol,
                       numerics_tag(result.config))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result.to_dict(), indent=1, allow_nan=True) + "\n")
    atomic_write_text(path.with_suffix(".csv"), result.frame().to_csv(index=False))
    return path


def load_result(path: Path) -> Result:
    try:
        return Result.from_dict(json.loads(Path(path).read_text()))
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataError(f"{path} is not a ddm-bench result ({err}); delete it and rerun the target") from err


def find_results(root: Path) -> list[Path]:
    """Every result JSON under ``root``, sorted (not the carried work of ``run --checkpoint-dir``
    when it lives under ``root``: ``results/checkpoints``)."""
    return sorted(path for path in Path(root).glob("*/*/*/*.json") if path.parts[-4] != CHECKPOINTS)
