"""Representer points (Yeh et al. 2018), from dattri's ``RPSAttributor``.

dattri fine-tunes the last linear layer of theta_tau's network (the ``head``, without its bias) to
the network's own softmax outputs on the training features f_i, with an L2 penalty lambda (its
``l2_strength``, default 0.003, full-batch SGD with line search for at most ``epoch`` steps). At that
optimum the representer theorem writes every logit as a sum over training samples,
``logit_c(x) = sum_i alpha_ic f_i . f(x)``, ``alpha_ic = -dL/dlogit_ic / (2 lambda N)``, and dattri
returns the term of sample i for the class asked of each test item.

The adapter asks for every class of every query (the items of ``baselines.library``, here carrying
the class index, which dattri's RPS reads), so one call gives ``r[i, q, c] = alpha_ic f_i . f_q``.
Removing sample i removes its term: the logits of query q change by ``-r[i, q, :]``, and the class
probabilities by the softmax Jacobian at the target's prediction times that change (first order).

Departures: none from dattri's algorithm. The prediction decomposes the fine-tuned head, not the
trained one, so its scale is the representer model's; the ranking is the method's claim.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from baselines.influence import option
from baselines.library import LibraryAttributor, loader, model_copy
from ddm.attributor import METHODS, Queries
from ddm.errors import ConfigError


@dataclass(frozen=True)
class RPSOptions:
    """Options of representer points."""

    l2_strength: float = option(0.003, "lambda of the head's L2 fine-tuning (dattri's default)")
    epochs: int = option(3000, "at most this many full-batch steps of that fine-tuning (dattri's default)")
    batch_size: int = option(256, "items per feature batch")

    def __post_init__(self) -> None:
        if not 0 < self.l2_strength < float("inf"):
            raise ConfigError(f"l2_strength must be finite and > 0, got {self.l2_strength}")
        for name in ("epochs", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")


@METHODS.register("rps")
class RepresenterAttributor(LibraryAttributor):
    """Representer points on the head (dattri)."""

    name = "rps"
    module = "dattri"
    Options = RPSOptions

    def sample_changes(self, queries: Queries) -> Tensor:
        from dattri.algorithm.rps import RPSAttributor
        from dattri.task import AttributionTask

        model = model_copy(self.target)
        task = AttributionTask(loss_func=_soft_cross_entropy, model=model, checkpoints=model.state_dict())
        device = str(next(model.parameters()).device)
        attributor = RPSAttributor(task, final_linear_layer_name="head", l2_strength=self.options.l2_strength,
                                   epoch=self.options.epochs, device=device)
        n_classes = self.reference(queries).shape[1]
        size = self.options.batch_size
        train = loader(self.data.train_x, self.data.train_y, batch_size=size)
        items = loader(queries.images.repeat_interleave(n_classes, 0),
                       torch.arange(n_classes).repeat(len(queries)), batch_size=size)
        with self.quiet():
            attributor.cache(train)
            terms = attributor.attribute(train, items)
        logit_change = -self.by_class(terms.detach().to(torch.float64).cpu(), len(queries))  # [N, n_q, L]
        p = self.reference(queries)  # [n_q, L]
        # softmax Jacobian: dp_c = p_c (dz_c - sum_k p_k dz_k)
        return p[None] * (logit_change - (logit_change * p[None]).sum(-1, keepdim=True))


def _soft_cross_entropy(logits: Tensor, probabilities: Tensor) -> Tensor:
    """dattri's RPS loss: cross-entropy of the head's logits against the network's own softmax."""
    return nn.functional.cross_entropy(logits, probabilities)
