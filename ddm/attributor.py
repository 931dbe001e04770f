"""The one interface every attribution method implements (DDM here, the baselines in ``baselines/``).

An attributor is fitted once per target (offline, cached where it is expensive) and then scores
every training cluster for a batch of queries and an objective::

    attributor.fit(target, data, clustering)
    scores = attributor.attribute(queries, "dist1")   # [K, n_queries]
    located = scores.argmax(0)                         # the cluster each query is attributed to

A score is the method's prediction of the objective after removing that cluster (larger = the
cluster the objective asks for; see ``ddm.objectives``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor

from ddm.cluster import Clustering
from ddm.config import ExperimentConfig, parse_value
from ddm.data import DataSplits
from ddm.errors import ConfigError
from ddm.metrics import additive_prediction
from ddm.objectives import get_objective, to_probabilities
from ddm.registry import Registry
from ddm.resolver import Resolver
from ddm.target import Target
from ddm.train import predict


@dataclass(frozen=True)
class Queries:
    """The behaviour to explain: images [n, C, H, W] and their true labels int64 [n]."""

    images: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return len(self.labels)


class Attributor(ABC):
    """Base of every method. Subclasses set ``name`` and implement :meth:`fit` and :meth:`scores`.

    A method with options of its own beyond the experiment config (the influence baselines' solver
    settings, the oracle's protocol) names their frozen dataclass in ``Options``; an instance gets
    them as the ``options`` constructor argument (default: ``Options()``) and never changes them.
    Callers that cache results put ``dataclasses.asdict(options)`` into their keys."""

    name: ClassVar[str]
    Options: ClassVar[type | None] = None

    def __init__(self, config: ExperimentConfig, *, options: Any = None, resolver: Resolver | None = None,
                 progress: bool | None = None) -> None:
        self.config = config
        self.options = default_options(type(self)) if options is None else options
        if self.Options is None and options is not None:
            raise ConfigError(f"method {self.name!r} takes no options, got {type(options).__name__}")
        if self.Options is not None and not isinstance(self.options, self.Options):
            raise ConfigError(f"method {self.name!r} takes {self.Options.__name__} options, "
                              f"got {type(options).__name__}")
        self.resolver = resolver or Resolver()  # where its cached stages come from
        self.progress = progress
        self.target: Target | None = None
        self.clustering: Clustering | None = None

    def fit(self, target: Target, data: DataSplits, clustering: Clustering) -> None:
        """Offline stage. The base keeps the target and clustering; subclasses add their own work."""
        self.target, self.clustering = target, clustering

    @abstractmethod
    def scores(self, queries: Queries, objective: str) -> Tensor:
        """Method-specific scores [K, n_queries] (or [K, 1] for a global objective)."""

    def attribute(self, queries: Queries, objective: str) -> Tensor:
        """Scores [K, n_queries] for ``objective``: the predicted effect of removing each cluster."""
        if self.target is None:
            raise RuntimeError(f"{self.name}: call fit() before attribute()")
        get_objective(objective)  # unknown names fail before any work
        return self.scores(queries, objective)

    def forget(self) -> None:
        """Drop anything remembered between :meth:`attribute` calls (benchmarks time the work)."""
        return None

    def reference(self, queries: Queries) -> Tensor:
        """The target's class probabilities on the queries [n_queries, classes] (CPU)."""
        return to_probabilities(predict(self.target.model, queries.images)).to(torch.float64)


class RemovalPredictor(Attributor):
    """An attributor that predicts the outputs after each single-cluster removal; the objective is
    then evaluated on those predictions exactly as it is on exact retraining."""

    @abstractmethod
    def predict_removals(self, queries: Queries) -> Tensor:
        """Predicted class probabilities after removing each cluster: [K, n_queries, classes]."""

    def scores(self, queries: Queries, objective: str) -> Tensor:
        removed = self.removals(queries)
        return get_objective(objective)(removed, self.reference(queries), queries.labels)

    def predict_masks(self, keep: Tensor, queries: Queries) -> Tensor:
        """Predicted probabilities after removing every cluster a keep-mask drops: keep bool [m, K]
        -> [m, n_q, classes] (float64). By default the single-cluster effects added up, which is what
        a per-cluster attribution implies; a method with its own model of joint removals overrides it."""
        return additive_prediction(self.removals(queries), self.reference(queries), keep)

    def removals(self, queries: Queries) -> Tensor:
        """:meth:`predict_removals` in float64, remembered for the last query set: the objectives of
        one query set share it (for DDM, one set of |P| fine-tunes instead of one per objective)."""
        fields = {"target": id(self.target), "clustering": id(self.clustering),
                  "queries": fingerprint(queries)}
        return self.resolver.memo("removals", None, fields,
                                  lambda: self.predict_removals(queries).to(torch.float64), owner=self)

    def forget(self) -> None:
        self.resolver.forget("removals", owner=self)


# Capabilities beyond scoring: what a bench target or command may ask of a method through the
# contract. Each is checked on the registered class, before any training (:func:`require`).
@runtime_checkable
class HasDatamodel(Protocol):
    """A fitted linear datamodel for a query set (DDM's W and b, Eq. 7)."""

    def datamodel(self, queries: Queries) -> Any: ...


@runtime_checkable
class HierarchicalSearch(Protocol):
    """Locating a cluster per query with L class deletions, then C cluster deletions (paper 6.2)."""

    def hierarchical(self, queries: Queries, objective: str) -> Any: ...


@runtime_checkable
class Unlearning(Protocol):
    """The target with every cluster removed at once, as the method models it (paper Table 4)."""

    def unlearn_all(self) -> Any: ...


CAPABILITIES: dict[str, type] = {"removal prediction": RemovalPredictor, "datamodel": HasDatamodel,
                                 "hierarchical search": HierarchicalSearch, "unlearning": Unlearning}


def methods_with(capability: str) -> list[str]:
    """The registered methods that have ``capability`` (a key of ``CAPABILITIES``)."""
    return [name for name in METHODS.names() if issubclass(METHODS[name], CAPABILITIES[capability])]


def require(method: str, capability: str) -> type[Attributor]:
    """The class of registered ``method``, or a ConfigError naming the methods that have ``capability``."""
    cls = METHODS[method]
    if not issubclass(cls, CAPABILITIES[capability]):
        raise ConfigError(f"method {method!r} has no {capability}; methods with one: "
                          f"{', '.join(methods_with(capability)) or 'none'}")
    return cls


def default_options(method: type[Attributor]) -> Any:
    """``method``'s default options (None for a method without any)."""
    return None if method.Options is None else method.Options()


def parse_method_options(assignments: Iterable[str]) -> dict[str, Any]:
    """``["koh.depth=200", "koh.damping=0.1"]`` -> ``{"koh": LissaConfig(depth=200, damping=0.1)}``:
    each named method's default options with the given fields replaced (typed by their annotations
    and checked by the options class). The methods must be registered (import ``baselines``)."""
    with_options = [name for name in METHODS.names() if METHODS[name].Options is not None]
    changes: dict[str, dict[str, Any]] = {}
    for text in assignments:
        method, dot, rest = text.partition(".")
        field_name, sep, raw = rest.partition("=")
        if not dot or not sep or method not in with_options:
            raise ConfigError(f"--option expects METHOD.FIELD=VALUE with METHOD one of: "
                              f"{', '.join(with_options)}; got {text!r}")
        fields = {spec.name: spec for spec in dataclasses.fields(METHODS[method].Options)}
        if field_name not in fields:
            raise ConfigError(f"{method} has no option {field_name!r}; choose one of: {', '.join(fields)}")
        changes.setdefault(method, {})[field_name] = parse_value(f"{method}.{field_name}",
                                                                 str(fields[field_name].type), raw)
    return {method: dataclasses.replace(default_options(METHODS[method]), **fields)
            for method, fields in changes.items()}


def fingerprint(queries: Queries) -> str:
    """A digest of the query images and labels (identical queries, identical digest)."""
    digest = hashlib.sha256()
    for tensor in (queries.images, queries.labels):
        digest.update(str((tensor.dtype, tuple(tensor.shape))).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


METHODS: Registry[type[Attributor]] = Registry("method")
# DDM's own methods, imported when first looked up (the baselines declare theirs in baselines/).
METHODS.declare("ddm", "ddm.attribute")
METHODS.declare("ddm_match", "ddm.attribute")
METHODS.declare("ddm_match_ascent", "ddm.attribute")
