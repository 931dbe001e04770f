"""Influence functions on ``torch.func``: what the koh, fastif and scaleup baselines share.

Removing training sample i moves theta_tau by about dtheta_i = (1/n) H^-1 grad l_i(theta_tau)
(Koh & Liang 2017: up-weighting sample i by eps = -1/n), with H the Hessian at theta_tau of the
training objective: the mean cross-entropy over the n training samples plus the target's weight
decay wd/2 ||theta||^2 (so H gains wd I). Removing cluster k moves theta by
dtheta_k = (1/n) H^-1 sum_{i in D_k} grad l_i, and the query probabilities by J_y dtheta_k (J_y: the
Jacobian of the softmax outputs on the queries in the parameters).

Neural-net Hessians are indefinite: theta_tau is where SGD stopped, not a minimum, and ReLU nets
have negative-curvature directions. Every method inverts H + damping I: the exact solve inverts
whatever that matrix is (a first-order formula, not a minimum's), LiSSA diverges on strongly
negative curvature and says so, and the Arnoldi method keeps only positive eigenvalues. With
``params = "head"`` the problem is a multinomial logistic regression on frozen features: convex, and
H >= wd I.

:class:`LossProblem` is that objective restricted to the chosen parameters. HVPs are forward-over-
reverse (``jvp`` of ``grad``) and vectorized over blocks of vectors; vectors travel flat, [P] or
[V, P], in the order of ``named_parameters``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, jacrev, jvp, vmap

from baselines.solvers import StepHVP, damped_solve, hessian_matrix, lissa, top_eigenpairs
from ddm.attributor import Queries, RemovalPredictor
from ddm.cluster import Clustering, embed
from ddm.data import DataSplits
from ddm.errors import ConfigError, DataError
from ddm.functional import Params, model_params, per_cluster_gradients, per_sample_gradients
from ddm.provenance import environment
from ddm.target import Target

PARAM_SETS = ("head", "all")
SOLVERS = ("auto", "exact", "lissa")
SCALE_MARGIN = 2.0  # auto LiSSA scale = 2 x top eigenvalue: contracts for all curvature in (0, 2 scale)
SCALE_ITERATIONS = 10  # Arnoldi steps for that estimate: the top Ritz value converges first
CONVEX_MARGIN = 2.0  # convexify: damping >= 2 x |most negative eigenvalue| (a Ritz value underestimates it)
# (vectors x samples) per vmapped call, bounding activation memory: a head sample holds a few
# numbers per vector, a ConvNet-32 sample about a megabyte of activations and tangents.
SAMPLE_VECTORS = {"head": 1 << 16, "all": 1 << 11}


def _load_jvp_decompositions() -> None:
    """Forward-mode AD loads torch's jvp decompositions on first use, and that import warns that
    ``torch.jit.script`` is deprecated (a FutureWarning inside torch, not ours to fix). Loading them
    once here with that warning silenced keeps HVPs usable where warnings are errors (pytest)."""
    with warnings.catch_warnings(), contextlib.suppress(ImportError):
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
        importlib.import_module("torch._decomp.decompositions_for_jvp")


_load_jvp_decompositions()


def option(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class InfluenceConfig:
    """Options every influence baseline shares."""

    params: str = option(
        "head", "head: only the final linear layer (weight, bias) on frozen features, as Koh & Liang do "
        "for deep nets; convex, so H > 0, and cheap (5k parameters at the small scale, where one HVP over "
        "all 24k costs seconds per 64 images on 2 CPU cores) | all: every parameter")
    damping: float = option(
        0.01, "lambda in (H + lambda I)^-1. H's smallest eigenvalues are about the weight decay (5e-4) in "
        "directions the data barely touches; inverting them amplifies noise 2000x. 0.01 caps that at "
        "100x (the common LiSSA default, e.g. pytorch-influence-functions)")
    seed: int = option(0, "seed of LiSSA's mini-batches and of Arnoldi's start vector")
    sample_vectors_per_call: int | None = option(
        None, "memory bound: vectors x samples per vmapped HVP call; None = 65536 (head), 2048 (all)")

    def __post_init__(self) -> None:
        validate_options(self)  # every instance is checked where it is made, before any work


@dataclass(frozen=True)
class LissaConfig(InfluenceConfig):
    """Inverse-HVP options: exact dense solve for few parameters, LiSSA otherwise (Koh & Liang)."""

    solver: str = option("auto", "auto (exact when the parameter count <= exact_max_params) | exact | lissa")
    exact_max_params: int = option(
        6000, "auto picks the exact solve up to this many parameters (float64 H <= 290 MB; P HVPs plus an "
        "O(P^3) solve). It covers the small scale's 5130-parameter head: exact took 59 s there on 2 CPU "
        "cores, LiSSA (300 x 256) 42 s with dtheta 30% off the exact one")
    depth: int = option(
        300, "LiSSA recursion steps. Truncation damps curvature below ~scale/depth further; 300 keeps "
        "K = 100 right-hand sides near 40 s at the small scale (Koh & Liang ran thousands on a GPU)")
    batch_size: int = option(256, "samples per LiSSA mini-batch HVP (the whole set when larger)")
    repeats: int = option(1, "independent LiSSA runs averaged (different mini-batch streams)")
    scale: float | None = option(
        None, "LiSSA divides H by this; must exceed H's top eigenvalue or the recursion diverges. None = "
        "2 x (top eigenvalue + damping), estimated by 10 Arnoldi steps on the first mini-batch")


def validate_options(options: InfluenceConfig) -> None:
    """Reject option values that cannot work, naming the option."""
    if options.params not in PARAM_SETS:
        raise ConfigError(f"unknown params {options.params!r}; choose one of: {', '.join(PARAM_SETS)}")
    if not options.damping >= 0 or options.damping == float("inf"):
        raise ConfigError(f"damping must be finite and >= 0, got {options.damping}")
    positive = ["sample_vectors_per_call"]
    if isinstance(options, LissaConfig):
        if options.solver not in SOLVERS:
            raise ConfigError(f"unknown solver {options.solver!r}; choose one of: {', '.join(SOLVERS)}")
        positive += ["depth", "batch_size", "repeats", "exact_max_params"]
        if options.scale is not None and not 0 < options.scale < float("inf"):
            raise ConfigError(f"scale must be finite and > 0 (or None to estimate it), got {options.scale}")
    positive += [name for name in ("neighbors", "top_eigen", "iterations", "hvp_batch")
                 if hasattr(options, name)]
    for name in positive:
        value = getattr(options, name)
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")


def flatten(tree: Params, batch_dims: int = 0) -> Tensor:
    """{name: [*batch, *shape]} -> [*batch, P], in the dict's order."""
    return torch.cat([value.reshape(*value.shape[:batch_dims], -1) for value in tree.values()], -1)


def unflatten(vector: Tensor, template: Params) -> Params:
    """A flat [P] vector -> a dict shaped like ``template`` (views, so vmap-friendly)."""
    tree, offset = {}, 0
    for name, value in template.items():
        tree[name] = vector[offset:offset + value.numel()].view_as(value)
        offset += value.numel()
    return tree


@dataclass
class LossProblem:
    """The training objective mean_i CE(module(params, inputs_i), labels_i) + wd/2 ||params||^2.

    ``inputs`` [N, ...] are what ``module`` takes (images, or frozen features for the head);
    ``encode`` maps query images to such inputs. ``params`` is theta_tau restricted to the chosen set.
    """

    module: nn.Module
    params: Params
    inputs: Tensor
    labels: Tensor
    weight_decay: float
    encode: Callable[[Tensor], Tensor]
    sample_vectors_per_call: int = SAMPLE_VECTORS["head"]

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def n_params(self) -> int:
        return sum(value.numel() for value in self.params.values())

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.params.values())).dtype

    @property
    def device(self) -> torch.device:
        return self.labels.device

    def _mean_ce(self, params: Params, inputs: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(self.module, params, (inputs,)), labels)

    def probabilities(self, params: Params, inputs: Tensor) -> Tensor:
        """Softmax outputs [m, classes] of ``params`` on module inputs [m, ...]."""
        return torch.softmax(functional_call(self.module, params, (inputs,)), dim=-1)

    def hvp(self, vectors: Tensor, rows: Tensor | None = None) -> Tensor:
        """H v for vectors [V, P]: H of the mean loss over ``rows`` (all samples when None) + wd I."""
        rows = torch.arange(self.n, device=self.device) if rows is None else rows
        vector_chunk = min(len(vectors), self.sample_vectors_per_call)
        row_chunk = max(1, self.sample_vectors_per_call // vector_chunk)
        ce_grad = grad(self._mean_ce)

        def one(vector: Tensor, inputs: Tensor, labels: Tensor) -> Tensor:
            tangent = unflatten(vector, self.params)
            return flatten(jvp(lambda params: ce_grad(params, inputs, labels), (self.params,), (tangent,))[1])

        batched, out = vmap(one, in_dims=(0, None, None)), torch.zeros_like(vectors)
        for v in range(0, len(vectors), vector_chunk):
            for r in range(0, len(rows), row_chunk):
                part = rows[r:r + row_chunk]  # chunk means are weighted by chunk size
                out[v:v + vector_chunk] += batched(vectors[v:v + vector_chunk], self.inputs[part],
                                                   self.labels[part]) * len(part)
        return out / len(rows) + self.weight_decay * vectors

    def cluster_gradient_sums(self, cluster_ids: Tensor, n_clusters: int) -> Tensor:
        """sum_{i in D_k} grad l_i for every cluster: [K, P] (no weight decay: removal keeps it)."""
        means = per_cluster_gradients(self.module, self.params, self.inputs, self.labels, cluster_ids,
                                      n_clusters)
        sizes = torch.bincount(cluster_ids.to(self.device), minlength=n_clusters).to(self.dtype)
        return flatten(means, batch_dims=1) * sizes[:, None]

    def sample_gradients(self, rows: Tensor) -> Tensor:
        """grad l_i for the training samples ``rows`` [m]: [m, P]."""
        grads = per_sample_gradients(self.module, self.params, self.inputs[rows], self.labels[rows])
        return flatten({name: value.detach() for name, value in grads.items()}, batch_dims=1)

    def output_jvp(self, inputs: Tensor, tangents: Tensor) -> Tensor:
        """J_y t: how the probabilities on inputs [n_q, ...] move along tangents [V, P]: [V, n_q, C]."""

        def one(tangent: Tensor) -> Tensor:
            return jvp(lambda params: self.probabilities(params, inputs), (self.params,),
                       (unflatten(tangent, self.params),))[1]

        chunk = max(1, self.sample_vectors_per_call // max(len(inputs), 1))
        return torch.cat([vmap(one)(tangents[start:start + chunk])
                          for start in range(0, len(tangents), chunk)])

    def output_jacobian(self, inputs: Tensor) -> Tensor:
        """J_y per query: d probabilities / d params for inputs [n_q, ...] -> [n_q, classes, P]."""

        def one(item: Tensor) -> Tensor:
            jacobian = jacrev(lambda params: self.probabilities(params, item[None])[0])(self.params)
            return flatten(jacobian, batch_dims=1)

        return vmap(one)(inputs)


def target_problem(target: Target, data: DataSplits, options: InfluenceConfig) -> LossProblem:
    """The target's training objective over ``options.params``, on the target model's device.

    ``head``: the rest of the network is frozen, so the head sees fixed features (computed once)
    and everything runs in float64 (the problem is small). ``all``: the model's own dtype."""
    model, device = target.model, next(target.model.parameters()).device
    weight_decay = target.config.train.weight_decay
    budget = options.sample_vectors_per_call or SAMPLE_VECTORS[options.params]
    labels = data.train_y.to(device)
    if options.params == "all":
        def encode(images: Tensor) -> Tensor:
            return images.to(device)

        return LossProblem(model, model_params(model), encode(data.train_x), labels, weight_decay,
                           encode, budget)
    if not (isinstance(getattr(model, "head", None), nn.Linear) and hasattr(model, "embed")):
        raise ConfigError(f"params='head' needs a model with embed() and a linear head; "
                          f"{type(model).__name__} has none: use params='all'")

    def encode_features(images: Tensor) -> Tensor:
        return embed(model, images).to(device=device, dtype=torch.float64)

    head = {name: value.to(torch.float64) for name, value in model_params(model.head).items()}
    return LossProblem(model.head, head, encode_features(data.train_x), labels, weight_decay,
                       encode_features, budget)


def resolve_solver(options: LissaConfig, n_params: int) -> str:
    if options.solver != "auto":
        return options.solver
    return "exact" if n_params <= options.exact_max_params else "lissa"


def lissa_batches(n: int, options: LissaConfig) -> Tensor:
    """Mini-batch rows of every LiSSA step: int64 [repeats, depth, batch], drawn once from the seed
    (so every chunk of right-hand sides sees the same stream). The whole set when batch >= n."""
    steps = options.repeats * options.depth
    if options.batch_size >= n:
        return torch.arange(n).expand(options.repeats, options.depth, n)
    generator = torch.Generator().manual_seed(options.seed)
    rows = [torch.randperm(n, generator=generator)[:options.batch_size] for _ in range(steps)]
    return torch.stack(rows).view(options.repeats, options.depth, options.batch_size)


def estimate_scale(problem: LossProblem, rows: Tensor, damping: float, seed: int,
                   progress: bool | None = None) -> float:
    """2 x (top eigenvalue of the mini-batch Hessian H_rows + damping)."""
    values, _ = top_eigenpairs(lambda vectors: problem.hvp(vectors, rows), problem.n_params, top=1,
                               iterations=SCALE_ITERATIONS, seed=seed, dtype=problem.dtype,
                               device=problem.device, progress=progress)
    return max(SCALE_MARGIN * (max(float(values[0]), 0.0) + damping), 1e-12)


def convexifying_damping(problem: LossProblem, options: LissaConfig, progress: bool | None = None) -> float:
    """The damping actually used: ``options.damping``, raised (when ``options.convexify``) to
    CONVEX_MARGIN x the most negative eigenvalue of the full-batch Hessian (its top Ritz value of -H,
    SCALE_ITERATIONS Arnoldi steps), so that H + damping I is positive definite: Koh & Liang's
    reading of a non-convex loss, a convex quadratic approximation. 0 curvature is left alone."""
    if not getattr(options, "convexify", False):
        return options.damping
    rows = torch.arange(problem.n, device=problem.device)
    values, _ = top_eigenpairs(lambda vectors: -problem.hvp(vectors, rows), problem.n_params, top=1,
                               iterations=SCALE_ITERATIONS, seed=options.seed, dtype=problem.dtype,
                               device=problem.device, progress=progress)
    return max(options.damping, CONVEX_MARGIN * float(values[0]))


def _step_hvp(problem: LossProblem, batches: Tensor) -> StepHVP:
    return lambda vectors, step: problem.hvp(vectors, batches[step])


def inverse_hvp(problem: LossProblem, rhs: Tensor, options: LissaConfig, *,
                progress: bool | None = None, desc: str = "LiSSA") -> Tensor:
    """(H + damping I)^-1 rhs for rhs [V, P] -> [V, P], by the solver ``options`` choose."""
    damping = convexifying_damping(problem, options, progress)
    if resolve_solver(options, problem.n_params) == "exact":
        hessian = hessian_matrix(problem.hvp, problem.n_params, dtype=problem.dtype, device=problem.device,
                                 progress=progress)
        return damped_solve(hessian, rhs, damping)
    batches = lissa_batches(problem.n, options).to(problem.device)
    scale = options.scale or estimate_scale(problem, batches[0, 0], damping, options.seed, progress)
    total = torch.zeros_like(rhs)
    for repeat in range(options.repeats):
        total += lissa(_step_hvp(problem, batches[repeat]), rhs, depth=options.depth, scale=scale,
                       damping=damping, progress=progress,
                       desc=f"{desc} {repeat + 1}/{options.repeats}")
    return total / options.repeats


class InfluenceAttributor(RemovalPredictor):
    """Base of the influence baselines: builds the :class:`LossProblem` and caches offline tensors.

    Subclasses name their frozen options class in ``Options`` (an instance gets its options as the
    constructor's ``options`` argument; the options check themselves when made) and implement
    ``predict_removals``.
    """

    Options: ClassVar[type] = InfluenceConfig

    def fit(self, target: Target, data: DataSplits, clustering: Clustering) -> None:
        super().fit(target, data, clustering)
        if len(clustering.cluster_ids) != len(data.train_y):
            raise DataError(f"the clustering covers {len(clustering.cluster_ids)} samples, the training "
                            f"set has {len(data.train_y)}")
        self.problem = target_problem(target, data, self.options)
        self.cluster_ids = clustering.cluster_ids.to(self.problem.device)
        self.loaded_from_cache = False

    def cached(self, compute: Callable[..., dict[str, Tensor | float]],
               resumable: bool = False) -> dict[str, Any]:
        """The offline tensors: loaded when this exact (target, clustering, options) was fitted before
        (the ``influence`` stage, keyed by the method, its options and the clustering's digest).
        ``resumable``: ``compute(state, save)`` gets the stopped fit's state (None on a fresh start)
        and ``save(state)`` to keep its progress; the seconds recorded add up the stopped runs'."""
        self.loaded_from_cache = True

        def compute_and_time(partial: Any) -> tuple[dict[str, Any], dict[str, Any]]:
            self.loaded_from_cache = False
            start = time.perf_counter()
            state = partial.state if resumable else None
            before = float(state.pop("seconds", 0.0)) if state else 0.0

            def save(progress: dict[str, Any]) -> None:
                partial.save({**progress, "seconds": before + time.perf_counter() - start})

            result = compute(state, save) if resumable else compute()
            return result, {"seconds": before + time.perf_counter() - start,
                            "n_params": self.problem.n_params, **environment(self.problem.device)}

        fields = {"method": self.name, "options": dataclasses.asdict(self.options),
                  "grouping": self.clustering.digest()}
        return self.resolver.get("influence", self.target.config, fields, compute_and_time)

    def query_inputs(self, queries: Queries) -> Tensor:
        return self.problem.encode(queries.images)

    def shifted(self, queries: Queries, change: Tensor) -> Tensor:
        """The target's probabilities plus predicted changes [K, n_q, classes] (float64, CPU)."""
        return self.reference(queries)[None] + change.detach().cpu().to(torch.float64)
