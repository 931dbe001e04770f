"""Influence functions with a Kronecker-factored curvature from kronfluence (Grosse et al. 2023):
EK-FAC and K-FAC.

kronfluence's ``Analyzer`` fits the factors of every ``nn.Linear`` and ``nn.Conv2d`` of a copy of
theta_tau's network on the training set (its other parameters, e.g. normalization scales, are not
tracked: the library's choice), then scores every (query item, training sample) pair as
``grad f(query)^T (G + lambda I)^-1 grad l_i`` with G the factored Fisher of the mean training loss
(the true Fisher, labels sampled from the model, kronfluence's default) and f = p_c (each class of
each query, ``baselines.library``). Removing sample i moves theta by ``(1 / N) G^-1 grad l_i`` to first
order, so p_c changes by ``+score / N``.

Options: the strategy (``ekfac`` for the method "ekfac", ``kfac`` for "kfac") and the damping,
``None`` = kronfluence's heuristic, 0.1 times the mean eigenvalue (its default is 1e-8, which leaves
directions the data barely touches undamped). The factors are the offline stage (``fit``, timed as
offline by the tables), fitted into a scratch directory that lives as long as the attributor; scoring
queries against them is the online stage. They are not cached across processes yet.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from baselines.influence import option
from baselines.library import LibraryAttributor, model_copy, probability_of
from ddm.attributor import METHODS, Queries
from ddm.errors import ConfigError


@dataclass(frozen=True)
class KFACOptions:
    """Options of the kronfluence methods."""

    damping: float | None = option(None, "lambda; none = kronfluence's heuristic (0.1 x mean eigenvalue)")
    batch_size: int = option(64, "training and query items per batch")
    seed: int = option(0, "seed of the labels sampled for the true Fisher")

    def __post_init__(self) -> None:
        if self.damping is not None and not 0 <= self.damping < float("inf"):
            raise ConfigError(f"damping must be finite and >= 0 (or none), got {self.damping}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")


def _task(n_classes: int) -> Any:
    from kronfluence.task import Task

    class ClassProbabilityTask(Task):
        """Training loss: summed cross-entropy (labels sampled from the model when asked); measurement:
        the summed probability of each item's one-hot class."""

        def compute_train_loss(self, batch: Any, model: nn.Module, sample: bool = False) -> Tensor:
            images, labels = batch
            logits = model(images)
            if sample:
                with torch.no_grad():
                    labels = torch.multinomial(torch.softmax(logits.detach(), -1), 1).flatten()
            return nn.functional.cross_entropy(logits, labels, reduction="sum")

        def compute_measurement(self, batch: Any, model: nn.Module) -> Tensor:
            images, one_hot = batch
            return probability_of(model(images), one_hot).sum()

    return ClassProbabilityTask()


class KroneckerInfluence(LibraryAttributor):
    """EK-FAC or K-FAC influence from kronfluence, per class of each query."""

    module = "kronfluence"
    Options = KFACOptions
    strategy = "ekfac"

    def fit(self, target, data, clustering) -> None:
        """The offline stage: the factors of every layer, fitted on the training set into a scratch
        directory kept while this attributor lives (``predict_removals`` only scores against them)."""
        from kronfluence.analyzer import Analyzer, prepare_model
        from kronfluence.arguments import FactorArguments

        super().fit(target, data, clustering)
        self.n_classes = int(data.info.num_classes)
        self.task = _task(self.n_classes)
        model = prepare_model(model_copy(self.target), self.task)
        scratch = tempfile.mkdtemp(prefix="ddm-kronfluence-")
        weakref.finalize(self, shutil.rmtree, scratch, ignore_errors=True)  # removed with the attributor
        torch.manual_seed(self.options.seed)  # the sampled Fisher labels
        with self.quiet():
            self.analyzer = Analyzer(self.name, model, self.task, cpu=not torch.cuda.is_available(),
                                     disable_tqdm=True, output_dir=scratch)
            self.analyzer.fit_all_factors("factors", self.train_set(),
                                          per_device_batch_size=self.options.batch_size,
                                          factor_args=FactorArguments(strategy=self.strategy))

    def train_set(self) -> TensorDataset:
        return TensorDataset(self.data.train_x, self.data.train_y)

    def sample_changes(self, queries: Queries) -> Tensor:
        from kronfluence.arguments import ScoreArguments

        images, one_hot = self.items(queries, self.n_classes)
        size = self.options.batch_size
        train = self.train_set()
        with self.quiet():
            self.analyzer.compute_pairwise_scores("scores", "factors", TensorDataset(images, one_hot), train,
                                                  per_device_query_batch_size=size,
                                                  per_device_train_batch_size=size,
                                                  score_args=ScoreArguments(damping_factor=self.options.damping),
                                                  overwrite_output_dir=True)
            scores = self.analyzer.load_pairwise_scores("scores")["all_modules"]  # [n_q * L, N]
        return self.by_class(scores.T.to(torch.float64) / len(train), len(queries))


@METHODS.register("ekfac")
class EKFACAttributor(KroneckerInfluence):
    """EK-FAC influence (kronfluence)."""

    name = "ekfac"
    strategy = "ekfac"


@METHODS.register("kfac")
class KFACAttributor(KroneckerInfluence):
    """K-FAC influence (kronfluence)."""

    name = "kfac"
    strategy = "kfac"
