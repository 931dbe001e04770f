"""Exact retraining without clusters: the paper's ground truth and its "exact retraining" baseline.

Two protocols, recorded in every result:
- ``same-seed`` (default): the target's theta_0 and batch order, minus the removed samples
  (``ddm.train``); isolates the effect of the deletion from retraining noise.
- ``fresh-seed``: a new initialization and batch order per retraining (seeds 1..r after the target's),
  outputs averaged over r seeds; retraining noise then becomes part of every Dist1 value, which is
  most likely what the paper's numbers measured.

Every retrained model is its own cache entry (keyed by target, removed rows, protocol and seed), so
an interrupted oracle run resumes where it stopped and a later run reuses all of it. Retrainings can
run in parallel worker processes.

Two frozen option sets, kept apart on purpose: :class:`OracleConfig` says *what* the oracle computes
(protocol, seeds; it enters cell keys and results), :class:`ExecutorConfig` says *how* retraining
runs (in this process, in worker processes, as Ray tasks; every path writes the same entries, so it
enters no key).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ddm.attributor import METHODS, Queries, RemovalPredictor
from ddm.cluster import Clustering
from ddm.config import ExperimentConfig
from ddm.data import DataSplits
from ddm.errors import ConfigError
from ddm.functional import params_from_flat
from ddm.objectives import to_probabilities
from ddm.provenance import environment
from ddm.resolver import Resolver
from ddm.stages import get_data
from ddm.target import Target, fresh_model
from ddm.train import LossFn, cross_entropy_loss, flat_params, resume_state, train, train_many

PROTOCOLS = ("same-seed", "fresh-seed")
EXECUTORS = ("local", "process", "ray")


@dataclass(frozen=True)
class OracleConfig:
    """What exact retraining computes: the protocol and, under fresh-seed, the seeds averaged."""

    protocol: str = "same-seed"
    retrain_seeds: int = 3  # fresh-seed only: retrainings averaged per removed set

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"unknown retraining protocol {self.protocol!r}; choose one of: "
                              f"{', '.join(PROTOCOLS)}")
        if isinstance(self.retrain_seeds, bool) or not isinstance(self.retrain_seeds, int) \
                or self.retrain_seeds < 1:
            raise ConfigError(f"retrain_seeds must be an integer >= 1, got {self.retrain_seeds!r}")

    def key(self) -> dict[str, object]:
        """What distinguishes cached results: the protocol, and the retrainings averaged under
        fresh-seed (same-seed has one)."""
        return {"protocol": self.protocol,
                "retrain_seeds": self.retrain_seeds if self.protocol == "fresh-seed" else 1}


@dataclass(frozen=True)
class ExecutorConfig:
    """How exact retraining runs, never what it computes. ``executor``: ``local`` (this process;
    ``batch`` > 1 vectorizes same-seed retrains, see :func:`train_specs`), ``process`` (``workers``
    local processes; ``workers`` > 1 implies it) or ``ray`` (tasks on the Ray cluster at
    ``ray_address``, or a local Ray instance, ``batch`` specs per task, ``ray_gpus`` GPUs each; see
    :mod:`baselines.distributed`)."""

    executor: str = "local"
    workers: int = 1
    batch: int = 1
    ray_address: str | None = None
    ray_gpus: float = 0.0

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ConfigError(f"unknown executor {self.executor!r}; choose one of: {', '.join(EXECUTORS)}")
        if self.batch < 1 or self.workers < 1:
            raise ConfigError(f"retrain batch and workers must be >= 1 (got {self.batch}, {self.workers})")
        if not self.ray_gpus >= 0:
            raise ConfigError(f"ray_gpus must be >= 0, got {self.ray_gpus}")


# Rounding-level perturbations of a retraining (the oracle's numerical noise floor, see
# :func:`perturbed_spec`): ``jitter`` moves every entry of theta_0 by one unit in the last place of
# the precision, in a seeded random direction; ``threads=N`` trains with N CPU threads (another
# reduction order in every step). Neither changes what a retraining means, so an oracle worth
# trusting must not move under them.
PERTURBATIONS = ("jitter", "threads=1", "threads=2")
JITTER_SEED = 7_919


@dataclass(frozen=True)
class RetrainSpec:
    """One retraining: which training rows are removed, under which protocol and seed, and under
    which rounding-level perturbation ("" for none)."""

    removed: tuple[int, ...]
    protocol: str
    seed: int
    perturb: str = ""

    def __post_init__(self) -> None:
        if self.perturb and self.perturb not in PERTURBATIONS:
            raise ConfigError(f"unknown perturbation {self.perturb!r}; choose one of: "
                              f"{', '.join(PERTURBATIONS)}")


def jitter_(model: torch.nn.Module, seed: int = JITTER_SEED) -> None:
    """Move every parameter entry one ulp up or down (seeded, in place): theta_0 at rounding level."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(ulp_jittered(param, generator))


def ulp_jittered(values: Tensor, generator: torch.Generator) -> Tensor:
    """``values`` with every entry one ulp up or down, the direction drawn from ``generator``."""
    up = torch.rand(values.shape, generator=generator) < 0.5
    toward = torch.where(up, torch.full_like(values, math.inf), torch.full_like(values, -math.inf))
    return torch.nextafter(values, toward.to(values.device))


@contextlib.contextmanager
def perturbation(model: torch.nn.Module, perturb: str):
    """Apply ``perturb`` to a fresh ``model`` (theta_0) and to the training that runs inside."""
    threads = torch.get_num_threads()
    if perturb == "jitter":
        jitter_(model)
    elif perturb.startswith("threads="):
        torch.set_num_threads(int(perturb.partition("=")[2]))
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def removed_digest(removed: Sequence[int]) -> str:
    return hashlib.sha256(",".join(map(str, sorted(removed))).encode()).hexdigest()[:24]


def retrain_fields(spec: RetrainSpec) -> dict[str, object]:
    """What tells one retraining of a target's weights from another (the ``retrained`` stage's own
    key fields; the resolver adds the weights' key)."""
    fields: dict[str, object] = {"removed": removed_digest(spec.removed), "n_removed": len(spec.removed),
                                 "protocol": spec.protocol, "seed": spec.seed}
    if spec.perturb:
        fields["perturb"] = spec.perturb
    return fields


def protocol_seeds(target: Target, oracle: OracleConfig) -> list[int]:
    """Training seeds of the retrainings: the target's own, or ``oracle.retrain_seeds`` fresh ones."""
    if oracle.protocol == "same-seed":
        return [target.config.train.seed]
    return [target.config.train.seed + 1 + r for r in range(oracle.retrain_seeds)]


def seeded(config: ExperimentConfig, seed: int) -> ExperimentConfig:
    """``config`` with training seed ``seed`` (theta_0, batch order): what a retraining trains."""
    return dataclasses.replace(config, train=dataclasses.replace(config.train, seed=seed))


def retrain(config: ExperimentConfig, data: DataSplits, spec: RetrainSpec, device: str = "cpu",
            loss_fn: LossFn = cross_entropy_loss, resumed: dict[str, Any] | None = None,
            checkpoint: Callable[[dict[str, Any]], None] | None = None) -> tuple[Tensor, dict[str, Any]]:
    """Train without ``spec.removed`` (from ``resumed``, the last state ``checkpoint`` was given);
    theta [P] and its meta. ``loss_fn`` replaces cross-entropy (knowledge-distillation students);
    the caller's key must then name the loss."""
    model_config = seeded(config, spec.seed)
    model = fresh_model(model_config, data.info.shape, data.info.num_classes)
    # A perturbed retraining starts over: a partial one may have run under other threads.
    resume = None if spec.perturb else resume_state(resumed)
    save = None if spec.perturb or checkpoint is None else (lambda state: checkpoint(vars(state)))
    with perturbation(model, spec.perturb):
        result = train(model, data.train_x, data.train_y, model_config.train,
                       removed=torch.tensor(spec.removed, dtype=torch.long), device=device, resume=resume,
                       progress=False, loss_fn=loss_fn, on_epoch_end=save)
        meta = {"removed": len(spec.removed), "perturb": spec.perturb, **environment(device)}
    return flat_params(result.model), meta


def _worker(args: tuple) -> None:
    """Process-pool entry: rebuild the data (cheap, cached on disk) and retrain one spec into the
    cache under ``root`` (resumable there, like a retraining in the main process)."""
    config, data_root, root, spec, threads = args
    torch.set_num_threads(threads)
    Retrainer(None, None, Resolver(root), config=config, data_root=data_root).theta(spec)


def train_specs(config: ExperimentConfig, data: DataSplits, specs: Sequence[RetrainSpec],
                device: str = "cpu", batch: int = 1) -> list[Tensor]:
    """theta [P] of every spec, computed here without touching any cache (a Ray task's body).

    With ``batch`` > 1, specs sharing a seed train ``batch`` at a time in one vectorized pass
    (:func:`ddm.train.train_many`); otherwise one at a time (:func:`ddm.train.train`)."""
    thetas: dict[int, Tensor] = {}
    by_seed: dict[int, list[int]] = {}
    for index, spec in enumerate(specs):
        by_seed.setdefault(spec.seed, []).append(index)
    for seed, indices in by_seed.items():
        model_config = seeded(config, seed)
        train_config = model_config.train
        for start in range(0, len(indices), max(batch, 1)):
            chunk = indices[start:start + max(batch, 1)]
            model = fresh_model(model_config, data.info.shape, data.info.num_classes)
            removed = [torch.tensor(specs[i].removed, dtype=torch.long) for i in chunk]
            if batch > 1:
                rows = train_many(model, data.train_x, data.train_y, train_config, removed, device=device,
                                  progress=False)
                thetas.update({i: rows[j] for j, i in enumerate(chunk)})
            else:
                result = train(model, data.train_x, data.train_y, train_config, removed=removed[0],
                               device=device, progress=False)
                thetas[chunk[0]] = flat_params(result.model)
    return [thetas[i] for i in range(len(specs))]


class Retrainer:
    """Retrain the target without given row sets; cached, resumable, run as ``execution`` says.

    Every execution path writes the same ``retrained`` entries, so they are interchangeable: a
    vectorized or Ray-trained entry equals the one-at-a-time one to float tolerance per step (see
    ``train_many``)."""

    def __init__(self, target: Target | None, data: DataSplits | None, resolver: Resolver, *,
                 execution: ExecutorConfig = ExecutorConfig(), data_root: str | None = None,
                 progress: bool | None = None, config: ExperimentConfig | None = None) -> None:
        self.target, self._data, self.resolver = target, data, resolver
        self.config = config if config is not None else target.config
        self.execution, self.data_root, self.progress = execution, data_root, progress

    @property
    def data(self) -> DataSplits:
        if self._data is None:  # a worker process loads its data only when it has to train
            self._data = get_data(self.config, self.data_root)
        return self._data

    def theta(self, spec: RetrainSpec) -> Tensor:
        """theta [P] of one spec: loaded, or trained here (resuming a partial run) and stored."""
        return self.resolver.get("retrained", self.config, retrain_fields(spec), lambda partial: retrain(
            self.config, self.data, spec, self._device(), resumed=partial.state, checkpoint=partial.save))

    def store(self, spec: RetrainSpec, theta: Tensor, device: str, how: str) -> None:
        """Keep a theta trained elsewhere (a vectorized pass, a Ray task); a no-op when another run
        stored it meanwhile."""
        meta = {"removed": len(spec.removed), "trained_by": how, **environment(device)}
        self.resolver.put("retrained", self.config, retrain_fields(spec), theta, meta)

    def thetas(self, specs: Sequence[RetrainSpec], desc: str = "exact retraining") -> list[Tensor]:
        """theta [P] of every spec, training the missing ones first."""
        pending = [spec for spec in specs
                   if not self.resolver.has("retrained", self.config, retrain_fields(spec))]
        bar = tqdm(total=len(specs), initial=len(specs) - len(pending), desc=desc, unit="model",
                   disable=None if self.progress is None else not self.progress)
        run = self.execution
        if any(spec.perturb for spec in pending):  # here, so the perturbation is this process's
            self._one_by_one(pending, bar)
        elif pending and run.executor == "ray":
            from baselines.distributed import ray_retrain

            ray_retrain(self, pending, bar)
        elif (run.executor == "process" or run.workers > 1) and len(pending) > 1:
            self._parallel(pending, bar)
        elif run.batch > 1 and len(pending) > 1:
            for start in range(0, len(pending), run.batch):
                chunk = pending[start:start + run.batch]
                thetas = train_specs(self.config, self.data, chunk, self._device(), run.batch)
                for spec, theta in zip(chunk, thetas, strict=True):
                    self.store(spec, theta, self._device(), f"vectorized x{len(chunk)}")
                bar.update(len(chunk))
        else:
            self._one_by_one(pending, bar)
        bar.close()
        return [self.theta(spec) for spec in specs]

    def _one_by_one(self, pending: list[RetrainSpec], bar: tqdm) -> None:
        for spec in pending:
            self.theta(spec)
            bar.update(1)

    def _device(self) -> str:
        return "cpu" if self.target is None else str(next(self.target.model.parameters()).device)

    def _parallel(self, pending: list[RetrainSpec], bar: tqdm) -> None:
        run = self.execution
        workers = max(run.workers, 2) if run.executor == "process" else run.workers
        threads = max(1, (os.cpu_count() or 1) // workers)
        jobs = [(self.config, self.data_root, str(self.resolver.root), spec, threads) for spec in pending]
        context = torch.multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            for _ in pool.map(_worker, jobs):
                bar.update(1)

    def removal_outputs(self, removed_sets: Sequence[Sequence[int]], protocol: str, seeds: Sequence[int],
                        queries: Tensor, desc: str = "exact retraining", perturb: str = "") -> Tensor:
        """Probabilities after retraining without each row set, averaged over the protocol's seeds:
        [len(removed_sets), n_q, classes] (what the paper's "trained from scratch" models give);
        ``perturb`` retrains every set under that rounding-level perturbation instead."""
        specs = [RetrainSpec(tuple(sorted(removed)), protocol, seed, perturb)
                 for removed in removed_sets for seed in seeds]
        outputs = self.outputs(specs, queries, desc)
        return outputs.reshape(len(removed_sets), len(seeds), *outputs.shape[1:]).mean(1)

    def outputs(self, specs: Sequence[RetrainSpec], queries: Tensor,
                desc: str = "exact retraining") -> Tensor:
        """Class probabilities of every retrained model on queries: [len(specs), n_q, classes]."""
        model = self.target.model
        rows = []
        thetas = self.thetas(specs, desc)  # trains what is missing: must run outside no_grad
        with torch.no_grad():
            for theta in thetas:
                params = params_from_flat(model, theta.to(queries.device))
                rows.append(to_probabilities(torch.func.functional_call(model, params, (queries,))).cpu())
        return torch.stack(rows)


def single_cluster_specs(clustering: Clustering, protocol: str, seeds: Sequence[int]) -> list[RetrainSpec]:
    """One spec per (cluster, seed), cluster-major."""
    return [RetrainSpec(tuple(clustering.members(k).tolist()), protocol, seed)
            for k in range(clustering.n_clusters) for seed in seeds]


@METHODS.register("exact")
class ExactAttributor(RemovalPredictor):
    """Exact retraining without each cluster (the ground truth): ``options`` (an
    :class:`OracleConfig`) say what is retrained, ``execution`` (an :class:`ExecutorConfig`) how."""

    name = "exact"
    Options = OracleConfig

    def __init__(self, config: ExperimentConfig, *, execution: ExecutorConfig = ExecutorConfig(),
                 data_root: str | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.execution, self.data_root = execution, data_root

    def fit(self, target: Target, data: DataSplits, clustering: Clustering) -> None:
        super().fit(target, data, clustering)
        self.seeds = protocol_seeds(target, self.options)
        self.specs = single_cluster_specs(clustering, self.options.protocol, self.seeds)
        self.retrainer = Retrainer(target, data, self.resolver, execution=self.execution,
                                   data_root=self.data_root, progress=self.progress)
        self.retrainer.thetas(self.specs)  # offline: every single-cluster model, cached

    def predict_removals(self, queries: Queries) -> Tensor:
        device = next(self.target.model.parameters()).device
        outputs = self.retrainer.outputs(self.specs, queries.images.to(device))
        return outputs.reshape(self.clustering.n_clusters, len(self.seeds), *outputs.shape[1:]).mean(1)

    def predict_masks(self, keep: Tensor, queries: Queries) -> Tensor:
        """Joint removals retrained exactly (cached per removed set, under this protocol)."""
        device = next(self.target.model.parameters()).device
        return self.retrainer.removal_outputs(removed_rows(self.clustering, keep), self.options.protocol,
                                              self.seeds, queries.images.to(device)).to(torch.float64)


def removed_rows(clustering: Clustering, keep: Tensor) -> list[tuple[int, ...]]:
    """Training rows each keep-mask [m, K] removes (the members of its dropped clusters)."""
    return [tuple(torch.isin(clustering.cluster_ids, (~mask).nonzero().flatten()).nonzero().flatten()
                  .tolist()) for mask in keep]
