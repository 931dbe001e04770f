"""Gradient-similarity methods from dattri: TracIn-CP (Pruthi et al. 2020), Grad-Dot and Grad-Cos.

All three are dattri's ``TracInAttributor`` (the library's own implementation, with its random
projection of the gradients, ``proj_dim`` = dattri's default 512) on a ``dattri.task.AttributionTask``
whose loss is the training cross-entropy and whose target is the probability of each class of each
query (``baselines.library``):

- **TracIn-CP** sums ``w_t grad p_c(query) . grad l_i`` over the target's own recorded trajectory,
  at the start of every recorded interval (theta_0 ... theta_{tau-1}): DDM's closest peer, which also
  reads the trajectory. ``w_t = lr / (1 - momentum) * steps_t / (S * B)``: the effective SGD step,
  times the share of an epoch the interval spans (``steps_t`` of the S = ceil(N / B) steps per epoch,
  in each of which a sample enters one batch mean with weight 1 / B). Training on sample i moved
  theta by ``-sum_t w_t grad l_i(theta_t)`` to first order, so removing it changes p_c by ``+score``.
- **Grad-Dot**: the same at theta_tau only, weighted as if that gradient acted through all training.
- **Grad-Cos**: Grad-Dot with both gradients normalized (dattri's ``normalized_grad``); its magnitude
  is not a prediction of anything, only its ranking carries meaning.

Departures: none from dattri's algorithms; the per-class targets and the trajectory weights are ours
(dattri's examples use the loss as target and unit or learning-rate weights). Two changes of how it is
called, neither of what it computes: dattri 0.3.0 sums the scores into a tensor of torch's default
dtype (float32), so the call runs with the default set to the model's dtype (a float64 network keeps
float64 scores instead of float32-rounded ones, which a one-ulp difference in a gradient could flip);
and it recomputes every query gradient once per *training* batch, so training items come in batches
of ``train_batch_size`` (1024) rather than the query batch (64): on 1,000 digits, 7 checkpoints, 200
query items, the scores are bit-identical and TracIn-CP takes 1.7 s instead of 17.4 s.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from baselines.influence import option
from baselines.library import (
    LibraryAttributor,
    loader,
    model_copy,
    probability_of,
    state_dict_of,
)
from ddm.attributor import METHODS, Queries
from ddm.errors import ConfigError


@dataclass(frozen=True)
class GradientOptions:
    """Options of the dattri gradient methods."""

    proj_dim: int = option(512, "dattri's random projection of every gradient (its default, 512)")
    proj_seed: int = option(0, "seed of that projection")
    batch_size: int = option(64, "query items per gradient batch")
    train_batch_size: int = option(
        1024, "training items per gradient batch: dattri recomputes every query gradient for each "
        "training batch, so fewer, larger batches cost less (memory grows as batch x parameters)")

    def __post_init__(self) -> None:
        for name in ("proj_dim", "batch_size", "train_batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """torch's default dtype is ``dtype`` inside (restored after, also on error)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def effective_step(target) -> float:
    """lr / (1 - momentum) for SGD (its steady-state step), lr for Adam."""
    train = target.config.train
    return train.lr / (1 - train.momentum) if train.optimizer == "sgd" else train.lr


class GradientSimilarity(LibraryAttributor):
    """Base of the three: which checkpoints, with which weights, normalized or not."""

    module = "dattri"
    Options = GradientOptions
    normalized: ClassVar[bool] = False

    def checkpoints(self) -> tuple[list[Tensor], list[float]]:
        """Flat parameters of every checkpoint used and its weight."""
        raise NotImplementedError

    def sample_changes(self, queries: Queries) -> Tensor:
        from dattri.algorithm.tracin import TracInAttributor
        from dattri.task import AttributionTask

        model = model_copy(self.target)
        states, weights = self.checkpoints()
        task = AttributionTask(loss_func=_loss(model), model=model, target_func=_probability(model),
                               checkpoints=[state_dict_of(model_copy(self.target, s)) for s in states])
        projector = {"proj_dim": self.options.proj_dim, "proj_seed": self.options.proj_seed, "device": "cpu"}
        device = str(next(model.parameters()).device)  # the projection itself runs on the CPU
        normalized = self.normalized
        attributor = TracInAttributor(task, weight_list=torch.tensor(weights), normalized_grad=normalized,
                                      projector_kwargs=projector, device=device)
        images, one_hot = self.items(queries, self.reference(queries).shape[1])
        train = loader(self.data.train_x, self.data.train_y, batch_size=self.options.train_batch_size)
        dtype = next(model.parameters()).dtype
        with self.quiet(), default_dtype(dtype):  # dattri sums the scores into a default-dtype tensor
            scores = attributor.attribute(train, loader(images, one_hot, batch_size=self.options.batch_size))
        return self.by_class(scores.to(torch.float64), len(queries))

    def per_sample_step(self) -> float:
        """The weight of one optimizer step's gradient of one sample: the effective step over S * B."""
        batch = self.target.config.train.batch_size
        return effective_step(self.target) / (math.ceil(len(self.data.train_y) / batch) * batch)


@METHODS.register("tracin")
class TracInCPAttributor(GradientSimilarity):
    """TracIn-CP over the target's recorded trajectory (dattri)."""

    name = "tracin"

    def checkpoints(self) -> tuple[list[Tensor], list[float]]:
        steps = self.target.checkpoint_steps
        rows = range(len(steps) - 1)
        return ([self.target.trajectory[t] for t in rows],
                [self.per_sample_step() * (steps[t + 1] - steps[t]) for t in rows])


@METHODS.register("grad_dot")
class GradDotAttributor(GradientSimilarity):
    """Grad-Dot at theta_tau (dattri)."""

    name = "grad_dot"

    def checkpoints(self) -> tuple[list[Tensor], list[float]]:
        steps = self.target.checkpoint_steps
        return [self.target.trajectory[-1]], [self.per_sample_step() * (steps[-1] - steps[0])]


@METHODS.register("grad_cos")
class GradCosAttributor(GradDotAttributor):
    """Grad-Cos at theta_tau (dattri): Grad-Dot on normalized gradients."""

    name = "grad_cos"
    normalized = True


def _loss(model: nn.Module):
    def loss(params: dict[str, Tensor], item: tuple[Tensor, Tensor]) -> Tensor:
        image, label = item
        logits = torch.func.functional_call(model, params, (image.unsqueeze(0),))
        return torch.nn.functional.cross_entropy(logits, label.unsqueeze(0))
    return loss


def _probability(model: nn.Module):
    def probability(params: dict[str, Tensor], item: tuple[Tensor, Tensor]) -> Tensor:
        image, one_hot = item
        return probability_of(torch.func.functional_call(model, params, (image.unsqueeze(0),))[0], one_hot)
    return probability

