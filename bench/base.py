"""What every benchmark target builds on: :class:`RunContext`, :class:`BenchTarget` and the
``TARGETS`` registry. This module imports nothing else of ``bench/``; the target modules, the
renderer and the runner import it (one direction: base <- results, render <- targets <- runner <- cli).

A target implements :meth:`BenchTarget.run_seed` for one seed and owns everything else about its
table: rows, columns, display scale, the paper's published values (for the labelled column) and, for
a figure, its plot.
"""

from __future__ import annotations

import dataclasses
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor

from baselines.exact import ExactAttributor, ExecutorConfig, OracleConfig, Retrainer, protocol_seeds
from ddm.attributor import METHODS, Attributor, default_options, require
from ddm.config import PAPER_DDM, ExperimentConfig, with_overrides
from ddm.io import atomic_write_text
from ddm.pipeline import Stages, fit_method, prepare
from ddm.registry import Registry
from ddm.resolver import Resolver
from ddm.stages import identified

if TYPE_CHECKING:  # annotations only: base imports nothing of bench/ at run time
    from bench.results import Result

CellValues = dict[str, dict[str, dict[str, Any]]]  # row -> column -> {"value", "seconds", extras...}
# The paper's published numbers of one target: dataset ("*": any) -> row -> values in column order.
PaperValues = Mapping[str, Mapping[str, Sequence[float | None]]]


def optioned_methods() -> list[str]:
    """The methods whose options every result records (``RunContext.method_keys``): those with an
    options dataclass, but the oracle (its options are the run's ``OracleConfig``)."""
    return [name for name in METHODS.names()
            if METHODS[name].Options is not None and METHODS[name] is not ExactAttributor]


def default_method_keys() -> dict[str, dict[str, Any]]:
    """What ``RunContext.method_keys`` records in a run that overrides no method option."""
    return {name: dataclasses.asdict(default_options(METHODS[name])) for name in optioned_methods()}


@dataclass
class RunContext:
    """What every target needs: the base config (seed 0), where data and artifacts live, output dirs."""

    config: ExperimentConfig
    resolver: Resolver  # every cached stage, and what this process already resolved
    data_root: str | None = None
    device: str = "auto"
    n_queries: int = 20
    # Queries of seed s are drawn with seed s + query_seed_base: the committed tables use base 0
    # (query seeds 0, 1, 2); development runs use >= 100 on the same targets and oracles.
    query_seed_base: int = 0
    progress: bool | None = None
    # Exact retraining: what it computes (same-seed: the target's theta_0 and batch order minus the
    # removed rows; fresh-seed: new seeds per removed set, outputs averaged) and how it runs.
    oracle: OracleConfig = OracleConfig()
    execution: ExecutorConfig = ExecutorConfig()
    # Options of the methods that have their own (name -> frozen dataclass); absent: the defaults.
    method_options: Mapping[str, Any] = field(default_factory=dict)
    # Clusters retrained a second time, perturbed, for the oracle's numerical floor; None: the
    # target's own choice (the locate tables: FLOOR_CLUSTERS; the noise check: all K).
    floor_clusters: int | None = None
    results_dir: Path = Path("results")
    tables_dir: Path = Path("tables")

    def seeded(self, seed: int, **overrides: Any) -> ExperimentConfig:
        """The base config with every seed set to ``seed`` and further field overrides."""
        return with_overrides(self.config, seed=seed, cluster_seed=seed, distill_seed=seed,
                              attribute_seed=seed, **overrides)

    def paper_stages(self, seed: int, **overrides: Any) -> Stages:
        """Stages of the paper's DDM read as written (``PAPER_DDM``): the same trained weights and
        clusters (the trajectory is recorded per epoch), the paper's distillation and online schedule."""
        return self.stages(self.seeded(seed, **PAPER_DDM, **overrides))

    def query_seed(self, seed: int) -> int:
        """The seed that draws seed ``seed``'s test queries."""
        return seed + self.query_seed_base

    @property
    def protocol(self) -> str:
        return self.oracle.protocol

    def options_of(self, method: str) -> Any:
        """The options method ``method`` runs with in this run (its defaults unless overridden)."""
        return self.method_options.get(method, default_options(METHODS[method]))

    def method_keys(self) -> dict[str, dict[str, Any]]:
        """Every influence-style method's options as plain dicts: part of every cell key and result,
        so changing an option (or its default) recomputes the cells instead of reusing them. The
        oracle's options enter through :meth:`OracleConfig.key` instead."""
        return {name: dataclasses.asdict(self.options_of(name)) for name in optioned_methods()}

    def fit(self, method: str, stages: Stages, progress: bool | None = None,
            need: str | None = None) -> Attributor:
        """Method ``method`` with this run's options for it, fitted on ``stages`` (offline, cached).
        ``need``: a capability (``ddm.attributor.CAPABILITIES``) the caller uses beyond scoring; a
        method without it is refused before any work."""
        if need is not None:
            require(method, need)
        return fit_method(method, stages, options=self.options_of(method),
                          progress=self.progress if progress is None else progress)

    def retrainer(self, stages: Stages) -> Retrainer:
        """Exact retraining of ``stages``' target (cached per removed set), run as this run says."""
        return Retrainer(stages.target, stages.data, self.resolver, execution=self.execution,
                         data_root=self.data_root, progress=self.progress)

    def retrain_seeds_of(self, stages: Stages) -> list[int]:
        """Training seeds of every exact retraining of ``stages``' target under this run's protocol."""
        return protocol_seeds(stages.target, self.oracle)

    def exact(self, stages: Stages) -> ExactAttributor:
        """The exact-retraining oracle of ``stages`` under this run's protocol, fitted (cached)."""
        exact = ExactAttributor(stages.config, options=self.oracle, execution=self.execution,
                                data_root=self.data_root, resolver=self.resolver, progress=self.progress)
        exact.fit(stages.target, stages.data, stages.clustering)
        return exact

    def removal_outputs(self, stages: Stages, removed_sets: list[tuple[int, ...]], queries: Tensor) -> Tensor:
        """Exact probabilities after removing each row set, under this run's protocol:
        [len(removed_sets), n_q, classes] (queries on the target's device)."""
        seeds = self.retrain_seeds_of(stages)
        return self.retrainer(stages).removal_outputs(removed_sets, self.protocol, seeds, queries)

    def protocol_note(self) -> str:
        if self.protocol == "same-seed":
            return ("exact retraining: same-seed protocol (the target's theta_0 and batch order minus the "
                    "removed rows)")
        return (f"exact retraining: fresh-seed protocol ({self.oracle.retrain_seeds} new seeds of theta_0 "
                "and batch order per removed set, outputs averaged); the noise-floor row retrains the full "
                "set")

    def data_identity(self) -> str | None:
        """Fingerprint of the data read from ``data_root`` (None for bundled data), computed once."""
        return identified(self.config, self.data_root, self.resolver).data.data_fingerprint

    def stages(self, config: ExperimentConfig) -> Stages:
        """Data, target and clusters for ``config`` (cached on disk, memoized by the resolver)."""
        return prepare(config, data_root=self.data_root, device=self.device, resolver=self.resolver,
                       progress=self.progress)


class BenchTarget(ABC):
    """A table or figure of the paper (or the timings). Subclasses set the class attributes and
    implement :meth:`run_seed`; the module docstring says what is reproduced and at what scale."""

    name: ClassVar[str]
    title: ClassVar[str]
    rows: ClassVar[list[str]]
    columns: ClassVar[list[str]]
    column_scale: ClassVar[dict[str, float]] = {}  # display multiplier, e.g. dist1 x 100
    retrains: ClassVar[bool] = False  # judged by exact retraining (follows --protocol)
    # The paper's published values (rendered beside ours under a "paper" heading; nothing computes
    # with them), and which of our rows stands for which of the paper's (e.g. the paper schedule).
    paper: ClassVar[PaperValues] = {}
    paper_rows: ClassVar[dict[str, str]] = {}
    paper_columns: ClassVar[bool] = True  # False: not a table of the paper, no "(paper)" columns
    # Rows compared pair by pair, over the same (seed, query) values, with every other row of the
    # same oracle (rows ending in ``unpaired_suffix`` are judged by another one)
    paired_rows: ClassVar[tuple[str, ...]] = ()
    unpaired_suffix: ClassVar[str | None] = None
    # The stages (ddm/stages.py) its cells are computed from; upstream stages follow. A result
    # records their schemas, and `ddm-bench report --check` tells when one changed under it.
    stages: ClassVar[tuple[str, ...]] = ("cells", "online", "influence", "retrained")

    @abstractmethod
    def run_seed(self, ctx: RunContext, seed: int) -> tuple[CellValues, dict[str, Any]]:
        """Cells of one seed and figure series (JSON-able lists) of that seed."""

    def resume_seed(self, ctx: RunContext, seed: int, partial: Any) -> tuple[CellValues, dict[str, Any]]:
        """:meth:`run_seed` for the runner, which hands over the cached cells' ``partial``
        (``ddm.resolver.Partial``: ``state``, ``save(state)``). A target whose seed runs for hours
        overrides it to keep each finished part, so a stopped run resumes there; by default a
        seed is one piece of work."""
        return self.run_seed(ctx, seed)

    def notes(self, ctx: RunContext) -> list[str]:
        """Lines shown under the rendered table: how this run departs from the paper."""
        return []

    def unsupported(self, config: ExperimentConfig) -> str | None:
        """Why this target cannot run on ``config`` (its dataset or scale), None when it can."""
        return None

    def description(self) -> str:
        import sys

        return (sys.modules[type(self).__module__].__doc__ or "").strip()

    def paper_value(self, dataset: str, row: str, column: str) -> float | None:
        """The paper's number for this cell, or None when the paper has none."""
        values = self.paper.get(dataset, self.paper.get("*", {})).get(self.paper_rows.get(row, row))
        index = self.columns.index(column) if column in self.columns else None
        return values[index] if values and index is not None and index < len(values) else None

    def plot(self, result: Result, path: Path) -> bool:
        """Write this target's figure of ``result`` to the PNG ``path``; False for a table only."""
        return False


TARGETS: Registry[type[BenchTarget]] = Registry("target")


def config_summary(config: ExperimentConfig) -> str:
    """One line naming the fields a reader needs to judge the scale."""
    data, model, train = config.data, config.model, config.train
    cluster, distill = config.cluster, config.distill
    return (f"{data.dataset}, {data.n_per_class or 'all'} images/class, {model.arch} width {model.width} "
            f"({model.activation}, {model.precision}), "
            f"{train.epochs} epochs (lr {train.lr}, batch {train.batch_size}), "
            f"{cluster.clusters_per_class} clusters per class "
            f"({cluster.cluster_method}, {cluster.embedding}), "
            f"{distill.distill_steps} distillation steps, ipc {distill.ipc}")


def save_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")


def replace_section(config: ExperimentConfig, section: str, **changes: Any) -> ExperimentConfig:
    return dataclasses.replace(config, **{section: dataclasses.replace(getattr(config, section), **changes)})
