"""TRAK (Park et al. 2023) from MadryLab's ``traker``.

``traker.TRAKer`` featurizes the training set with the projected gradients of the margin
(``log p_y / (1 - p_y)``, its image-classification output) of each of k models, and scores target
items against those features. The k models are the target itself and k - 1 retrainings on the full
training set from fresh seeds (seeds ``s + 1 .. s + k - 1`` of theta_0 and batch order), trained by the
suite's trainer and cached as ``retrained`` entries (the fresh-seed oracle's full-set models share
them). On the CPU traker projects with its ``BasicProjector`` (normal entries), in float32.
Departure: the projection dimension is capped at N / 2. The kernel Phi^T Phi is proj_dim square with
rank at most N, so at traker's default 2048 on a few hundred samples it is singular, and the scores are
noise (on the planted digits case of ``tests/test_library.py``, N = 300, proj_dim 2048 put another
cluster first; 128 found the planted one).

Per-class outputs: the target items carry the label ``L + c`` and our model output (a subclass of
traker's) returns p_c for them and the margin for training items (label < L), so the training
features, the out-to-loss weights and the kernel are TRAK's own. TRAK's score approximates the
change of the target output when the sample is *included* (its datamodel reading), so removing it
changes p_c by ``-score``.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

import torch
from torch import Tensor

from baselines.exact import Retrainer, RetrainSpec
from baselines.influence import option
from baselines.library import LibraryAttributor, loader, model_copy, state_dict_of
from ddm.attributor import METHODS, Queries
from ddm.errors import ConfigError


@dataclass(frozen=True)
class TRAKOptions:
    """Options of TRAK."""

    models: int = option(5, "k: the target and k - 1 fresh-seed retrainings (TRAK's paper ensembles "
                            "tens to hundreds; each costs one training of the target here)")
    proj_dim: int = option(2048, "dimension of the projected gradients (traker's default, 2048); capped "
                                 "at N / 2, since TRAK's kernel Phi^T Phi is proj_dim square of rank <= N")
    proj_seed: int = option(0, "seed of the projection")
    batch_size: int = option(64, "items per featurize / score call")

    def __post_init__(self) -> None:
        for name in ("models", "proj_dim", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")


def _output(n_classes: int):
    from trak.modelout_functions import ImageClassificationModelOutput

    class MarginOrProbability(ImageClassificationModelOutput):
        """traker's margin for a training item (label < L), p_c for a target item labelled L + c."""

        @staticmethod
        def get_output(model, weights, buffers, image: Tensor, label: Tensor) -> Tensor:
            logits = torch.func.functional_call(model, (weights, buffers), image.unsqueeze(0))[0]
            is_target = label >= n_classes
            wanted = torch.where(is_target, label - n_classes, label)
            one_hot = torch.arange(n_classes, device=logits.device) == wanted
            margin = (logits * one_hot).sum() - logits.masked_fill(one_hot, float("-inf")).logsumexp(-1)
            probability = (torch.softmax(logits, -1) * one_hot).sum()
            return torch.where(is_target, probability, margin)

    return MarginOrProbability()


@METHODS.register("trak")
class TRAKAttributor(LibraryAttributor):
    """TRAK over k models (traker)."""

    name = "trak"
    module = "trak"
    Options = TRAKOptions

    def model_states(self) -> list[Tensor]:
        """theta of each of the k models: the target's, then the fresh-seed retrainings (cached)."""
        seed = self.target.config.train.seed
        specs = [RetrainSpec((), "fresh-seed", seed + j) for j in range(1, self.options.models)]
        retrained = Retrainer(self.target, self.data, self.resolver, progress=self.progress).thetas(
            specs, desc="TRAK models") if specs else []
        return [self.target.trajectory[-1], *retrained]

    def sample_changes(self, queries: Queries) -> Tensor:
        from trak import TRAKer

        n_classes = self.reference(queries).shape[1]
        model = model_copy(self.target)
        states = [state_dict_of(model_copy(self.target, theta)) for theta in self.model_states()]
        items, one_hot = self.items(queries, n_classes)
        labels = one_hot.argmax(1) + n_classes
        size, n_train = self.options.batch_size, len(self.data.train_y)
        proj_dim = min(self.options.proj_dim, max(n_train // 2, 1))
        device = str(next(model.parameters()).device)
        with tempfile.TemporaryDirectory(prefix="ddm-trak-") as scratch, self.quiet():
            traker = TRAKer(model=model, task=_output(n_classes), train_set_size=n_train, save_dir=scratch,
                            device=device, proj_dim=proj_dim,
                            projector_seed=self.options.proj_seed, use_half_precision=False,
                            logging_level=40)
            for model_id, state in enumerate(states):
                traker.load_checkpoint(state, model_id=model_id)
                for batch in loader(self.data.train_x, self.data.train_y, batch_size=size):
                    traker.featurize(batch=[t.to(device) for t in batch], num_samples=len(batch[0]))
            traker.finalize_features()
            for model_id, state in enumerate(states):
                traker.start_scoring_checkpoint(exp_name="queries", checkpoint=state, model_id=model_id,
                                                num_targets=len(items))
                for batch in loader(items, labels, batch_size=size):
                    traker.score(batch=[t.to(device) for t in batch], num_samples=len(batch[0]))
            scores = torch.as_tensor(traker.finalize_scores(exp_name="queries")).clone()  # [N, n_q * L]
        return -self.by_class(scores.to(torch.float64), len(queries))
