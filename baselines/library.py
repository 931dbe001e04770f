"""What the adapters over the field's own libraries share (``traker``, ``kronfluence``, ``dattri``).

Those libraries attribute one scalar output of a query to every training sample. The adapters ask
them for L outputs per query, the probability of each class, in one call (the query set is
presented as n_q * L items, query-major, each carrying the one-hot of its class), so one call gives
the sample-level tensor tau [N, n_q, L]: the predicted change of p_c(query) when training sample i is
removed, in each library's own approximation and sign convention (each adapter states its own).

A cluster's removal is predicted by adding up its members' changes: the first-order group effect,
which ignores how removed samples interact. The prediction is added to the target's probabilities,
and every objective is then evaluated on it exactly as on exact retraining (Dist1 and Dist3 from the
probability change, Dist2 from the predicted probability of the true class, the LDS masks by adding
the single clusters up, as for every removal predictor).

The libraries are an optional extra (``pip install -e '.[methods]'``); without it these methods
refuse to run with a message naming the extra (exit 2), and a table run skips their rows and says so.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import warnings
from abc import abstractmethod
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from ddm.attributor import Queries, RemovalPredictor
from ddm.cluster import Clustering
from ddm.data import DataSplits
from ddm.errors import ConfigError
from ddm.target import Target

EXTRA = "pip install -e '.[methods]'"


class MissingLibrary(ConfigError):
    """A method's library is not installed (the ``methods`` extra)."""


def library(module: str, method: str) -> Any:
    """Import ``module`` for ``method``, or a MissingLibrary naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingLibrary(f"method {method!r} needs the {module.split('.')[0]} library ({err}); "
                             f"install the methods extra: {EXTRA}") from None


def available(module: str) -> bool:
    """Whether ``module`` imports (a table run skips the rows of a missing library)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def class_items(queries: Queries, n_classes: int) -> tuple[Tensor, Tensor]:
    """The queries as n_q * L items, query-major: images [n_q * L, ...] and one-hot rows [n_q * L, L]
    in the images' dtype (a one-hot, not an index, so the output stays free of data-dependent indexing
    under ``vmap``)."""
    images = queries.images.repeat_interleave(n_classes, 0)
    one_hot = torch.eye(n_classes, dtype=queries.images.dtype).repeat(len(queries), 1)
    return images, one_hot


def probability_of(logits: Tensor, one_hot: Tensor) -> Tensor:
    """p_c of each row: softmax(logits) [..., L] against one-hot rows [..., L] -> [...]."""
    return (torch.softmax(logits, dim=-1) * one_hot).sum(-1)


def loader(*tensors: Tensor, batch_size: int = 64) -> DataLoader:
    """An unshuffled loader over ``tensors`` (the libraries score in dataset order)."""
    return DataLoader(TensorDataset(*tensors), batch_size=batch_size, shuffle=False)


def model_copy(target: Target, state: Tensor | None = None) -> nn.Module:
    """A fresh copy of the target's network (eval mode) holding flat parameters ``state``
    (theta_tau when None): the libraries wrap, hook or reload the model they are given."""
    model = target.model_at(len(target.trajectory) - 1)
    if state is not None:
        from ddm.train import load_flat_params

        load_flat_params(model, state.to(next(model.parameters()).device))
    return model.eval()


def state_dict_of(model: nn.Module) -> dict[str, Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


@contextlib.contextmanager
def muted() -> Iterator[None]:
    """Standard error (where the libraries draw their progress bars) goes to the void inside."""
    with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
        yield


class LibraryAttributor(RemovalPredictor):
    """Base of the adapters: sample changes [N, n_q, L] from the library, summed per cluster."""

    module: ClassVar[str]  # the library's import name

    def fit(self, target: Target, data: DataSplits, clustering: Clustering) -> None:
        library(self.module, self.name)
        super().fit(target, data, clustering)
        self.data = data

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """Around a library call: its own progress bars go to the void unless progress was asked for,
        and the warnings it raises about its own use of torch (deprecations) are not ours to act on."""
        with warnings.catch_warnings(), (contextlib.nullcontext() if self.progress else muted()):
            for category in (FutureWarning, DeprecationWarning, UserWarning):
                warnings.simplefilter("ignore", category)
            yield

    label_items = False  # True inside label_changes: one item per query (its label), not one per class

    @abstractmethod
    def sample_changes(self, queries: Queries) -> Tensor:
        """tau [N, n_q, L] (float64, CPU): the predicted change of p_c(query) when sample i is removed
        (L = 1, the query's label only, while ``label_items`` is set)."""

    def items(self, queries: Queries, n_classes: int) -> tuple[Tensor, Tensor]:
        """What the library scores: every (query, class) pair (:func:`class_items`), or while
        ``label_items`` is set each query with its own label (one-hot rows [n_q, L])."""
        if self.label_items:
            return queries.images, torch.eye(n_classes, dtype=queries.images.dtype)[queries.labels.cpu()]
        return class_items(queries, n_classes)

    def label_changes(self, queries: Queries) -> Tensor:
        """tau [N, n_q] (float64, CPU): the predicted change of each query's own-label probability when
        sample i is removed, scoring one item per query instead of L (mislabel detection needs no
        other class)."""
        self.label_items = True
        try:
            tau = self.sample_changes(queries).to(torch.float64).cpu()
        finally:
            self.label_items = False
        if tau.shape[-1] == 1:
            return tau[..., 0]
        index = queries.labels.cpu().view(1, -1, 1).expand(tau.shape[0], -1, 1)
        return tau.gather(-1, index)[..., 0]  # an adapter that scores every class regardless

    def predict_removals(self, queries: Queries) -> Tensor:
        tau = self.sample_changes(queries).to(torch.float64).cpu()
        n_train = len(self.clustering.cluster_ids)
        if tau.shape[0] != n_train:
            raise RuntimeError(f"{self.name}: {tau.shape[0]} sample rows for {n_train} training samples")
        sums = torch.zeros(self.clustering.n_clusters, *tau.shape[1:], dtype=torch.float64)
        sums.index_add_(0, self.clustering.cluster_ids.cpu(), tau)
        return self.reference(queries)[None] + sums

    def by_class(self, scores: Tensor, n_queries: int) -> Tensor:
        """Library scores [N, n_q * L] (query-major items) -> [N, n_q, L]."""
        return scores.reshape(scores.shape[0], n_queries, -1)
