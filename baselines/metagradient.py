"""The linear-response ceiling: the exact derivative of the trained weights with respect to each
cluster's weight, taken through the whole recorded training (metagradients, as in MAGIC, Ilyas &
Engstrom 2025), by forward-mode differentiation of the deterministic trainer.

The training map ``theta_tau(w)``: the target's own schedule (theta_0, batch order, SGD with momentum
and weight decay, as ``ddm.train.train_many`` runs it) with a weight w_i per training sample in every
batch mean (``sum_i w_i l_i / sum_i w_i``), w = 1 the target. Removing cluster k is w_k: 1 -> 0, so its
first-order effect is ``d theta_tau = J_w (-1_k)``, one Jacobian-vector product per cluster
(``torch.func.jvp`` over the whole loop, vmapped over clusters in chunks); the query probabilities
then move by ``J_y d theta_tau`` (the chain rule, exact: no Hessian model, no linearization of the
training beyond the first order in w). Every first-order attribution predicts some approximation of
this; read each method's score against this row.

Cost: K forward-mode passes through the training, each about three trainings' work (forward over
reverse per step), so a few times exact retraining of every cluster; the offline tensor [K, P] is
cached (``influence`` stage) and the online step is K output JVPs, as Koh's. Where the oracle agrees
with itself the map is smooth (float64: a 1e-10 pixel jitter moved the outputs by 1e-11), so this
derivative is well defined; with ReLU in float32 it is not (issue 19).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call, grad, jvp, vmap
from tqdm.auto import tqdm

from baselines.influence import InfluenceAttributor, InfluenceConfig, flatten, option
from ddm.attributor import METHODS, Queries
from ddm.cluster import Clustering
from ddm.data import DataSplits
from ddm.errors import ConfigError
from ddm.target import Target, fresh_model
from ddm.train import batch_positions, epoch_plan, sgd_update


@dataclass(frozen=True)
class MetagradientOptions(InfluenceConfig):
    """Options of the metagradient ceiling (``params`` must be ``all``: the whole training is
    differentiated)."""

    params: str = option("all", "all: the training map moves every parameter")
    chunk: int = option(1, "clusters differentiated together (one vmapped forward-mode pass); one at a "
                           "time is fastest on CPU (MNIST small, 2 cores: 36.8 s per cluster at 1, 73.9 s "
                           "at 8); a GPU may gain from more")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.params != "all":
            raise ConfigError("the metagradient differentiates the whole training: params must be 'all'")
        if not isinstance(self.chunk, int) or self.chunk < 1:
            raise ConfigError(f"chunk must be an integer >= 1, got {self.chunk!r}")


def trained_weights(target: Target, images: Tensor, labels: Tensor):
    """``w [N] -> theta_tau(w)`` (parameter dict): the target's schedule with per-sample weights."""
    config, cfg = target.config, target.config.train
    if cfg.optimizer != "sgd" or cfg.augment:
        raise ConfigError("the metagradient follows SGD without augmentation (the target's own schedule)")
    model = fresh_model(config, target.meta["in_shape"], target.meta["num_classes"]).to(images.device)
    theta_0 = {name: p.detach() for name, p in model.named_parameters()}
    model.train()

    def loss(params: dict[str, Tensor], batch_images: Tensor, batch_labels: Tensor,
             weights: Tensor) -> Tensor:
        per_sample = F.cross_entropy(functional_call(model, params, (batch_images,)), batch_labels,
                                     reduction="none")
        return (per_sample * weights).sum() / weights.sum().clamp_min(1.0)

    step_grad = grad(loss)
    n = len(labels)
    orders = [epoch_plan(n, cfg.seed, epoch, False).order.to(images.device) for epoch in range(cfg.epochs)]

    def train(weights: Tensor) -> dict[str, Tensor]:
        params, momentum = dict(theta_0), None
        for order in orders:  # drawn outside: the schedule is fixed, and vmap refuses random draws
            for positions in batch_positions(n, cfg.batch_size):
                rows = order[positions]
                grads = step_grad(params, images[rows], labels[rows], weights[rows])
                params, momentum = sgd_update(params, grads, momentum, cfg)
        return params

    return train


@METHODS.register("metagradient")
class MetagradientAttributor(InfluenceAttributor):
    """The exact first-order effect of removing each cluster, through the whole training."""

    name = "metagradient"
    Options = MetagradientOptions

    @staticmethod
    def unsupported(config) -> str | None:
        """Why the training map cannot be differentiated as recorded (a table skips the row)."""
        if config.train.optimizer != "sgd" or config.train.augment:
            return "the metagradient follows SGD without augmentation (the target's own schedule)"
        return None

    def fit(self, target: Target, data: DataSplits, clustering: Clustering) -> None:
        self.data = data
        super().fit(target, data, clustering)
        stored = self.cached(self._parameter_changes, resumable=True)
        self.changes = stored["changes"].to(device=self.problem.device, dtype=self.problem.dtype)

    def _parameter_changes(self, state: dict[str, Any] | None,
                           save: Callable[[dict[str, Any]], None]) -> dict[str, Tensor]:
        """d theta_tau for removing each cluster: [K, P] (forward mode, ``chunk`` clusters at a time).
        The rows done are saved after every chunk, so a stopped fit resumes at the next cluster."""
        device = self.problem.device
        images = self.data.train_x.to(device)
        labels = self.data.train_y.to(device)
        train = trained_weights(self.target, images, labels)
        ones = torch.ones(len(labels), dtype=images.dtype, device=device)
        ids = self.clustering.cluster_ids.to(device)
        removals = -(ids[None, :] == torch.arange(self.clustering.n_clusters, device=device)[:, None]).to(
            images.dtype)  # [K, N]: the direction of each removal in weight space

        def change(direction: Tensor) -> dict[str, Tensor]:
            return jvp(train, (ones,), (direction,))[1]

        rows = [state["changes"]] if state else []
        done = len(state["changes"]) if state else 0
        starts = range(done, len(removals), self.options.chunk)
        for start in tqdm(starts, desc="metagradient (clusters)", leave=False,
                          disable=None if self.progress is None else not self.progress):
            rows.append(flatten(vmap(change)(removals[start:start + self.options.chunk]), batch_dims=1).cpu())
            save({"changes": torch.cat(rows)})
        return {"changes": torch.cat(rows)}

    def predict_removals(self, queries: Queries) -> Tensor:
        """y_k = softmax(f(x; theta_tau)) + J_y d theta_k: [K, n_queries, classes]."""
        return self.shifted(queries, self.problem.output_jvp(self.query_inputs(queries), self.changes))
