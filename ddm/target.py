"""The trained target network and its trajectory, and the data it is trained on.

Pure computation: :func:`train_target` trains (resuming from a given state) and returns the payload
the ``target`` stage saves; :func:`target_from` rebuilds the :class:`Target` from it.
``ddm.stages.get_target`` is where this meets the cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ddm.config import ExperimentConfig, torch_dtype
from ddm.data import DataSplits, load_dataset
from ddm.errors import DataError
from ddm.models import build_model
from ddm.provenance import environment
from ddm.train import TrainState, accuracy, load_flat_params, resume_state, train


@dataclass
class Target:
    """A trained target: theta_tau as a model, plus the recorded trajectory."""

    config: ExperimentConfig
    model: nn.Module  # theta_tau, eval mode
    trajectory: Tensor  # [n_checkpoints, P] in the config's precision; row 0 = theta_0, last = theta_tau
    checkpoint_steps: list[int]
    meta: dict[str, Any]  # accuracies, timings, device, versions, data source

    def model_at(self, checkpoint: int) -> nn.Module:
        """A fresh copy of the network holding trajectory row ``checkpoint`` (0 = theta_0)."""
        model = fresh_model(self.config, self.meta["in_shape"], self.meta["num_classes"])
        load_flat_params(model, self.trajectory[checkpoint])
        return model.to(next(self.model.parameters()).device).eval()


def fresh_model(config: ExperimentConfig, in_shape: tuple[int, int, int],
                num_classes: int) -> nn.Module:
    """theta_0 of ``config``: the architecture initialized with the training seed, in the config's
    activation and precision."""
    spec = config.model
    return build_model(spec.arch, tuple(in_shape), num_classes, width=spec.width, depth=spec.depth,
                       init=spec.init, seed=config.train.seed, activation=spec.activation,
                       dtype=torch_dtype(config))


def load_data(config: ExperimentConfig, data_root: str | None = None) -> DataSplits:
    """The config's data in the config's precision (normalized in float32, then cast, so float64
    images hold exactly the float32 values)."""
    spec = config.data
    data = in_precision(load_dataset(spec.dataset, data_root=data_root, n_per_class=spec.n_per_class,
                                     seed=spec.subset_seed), torch_dtype(config))
    if not all(torch.isfinite(split).all() for split in (data.train_x, data.val_x, data.test_x)):
        raise DataError(f"{spec.dataset}: the images contain non-finite values (NaN or inf); check the "
                        "files")
    data = add_noise(data, spec.noise_fraction, spec.noise_norm, spec.subset_seed,
                     relative=spec.noise_relative)
    return flip_labels(data, spec.label_noise, spec.subset_seed)


def flip_labels(data: DataSplits, fraction: float, seed: int) -> DataSplits:
    """A seeded ``fraction`` of the training labels, each moved to another class drawn uniformly
    (never its own); validation and test labels stay true. The rows are in ``data.flipped_rows``."""
    n_flipped = round(fraction * len(data.train_y))
    if n_flipped == 0:
        return data
    generator = torch.Generator().manual_seed(2_000_003 + seed)
    rows = torch.randperm(len(data.train_y), generator=generator)[:n_flipped].sort().values
    classes = data.info.num_classes
    shift = torch.randint(1, classes, (n_flipped,), generator=generator)
    train_y = data.train_y.clone()
    train_y[rows] = (train_y[rows] + shift) % classes
    return dataclasses.replace(data, train_y=train_y, flipped_rows=rows)


def in_precision(data: DataSplits, dtype: torch.dtype) -> DataSplits:
    """``data`` with its images (train, validation, test) cast to ``dtype``."""
    if data.train_x.dtype == dtype:
        return data
    return dataclasses.replace(data, train_x=data.train_x.to(dtype), val_x=data.val_x.to(dtype),
                               test_x=data.test_x.to(dtype))


def data_fingerprint(data: DataSplits) -> str:
    """A digest of the loaded arrays (images and labels of every split)."""
    digest = hashlib.sha256()
    for tensor in (data.train_x, data.train_y, data.val_x, data.val_y, data.test_x, data.test_y):
        digest.update(str((tensor.dtype, tuple(tensor.shape))).encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


def add_noise(data: DataSplits, fraction: float, norm: float, seed: int,
              relative: float | None = None) -> DataSplits:
    """Gaussian noise on a seeded ``fraction`` of the training images (Table 6): of L2 norm ``norm``,
    or, with ``relative`` set, ``relative`` times each noisy image's own L2 norm.

    Validation and test images stay clean; the noisy rows are recorded in ``data.noisy_rows``."""
    n_noisy = round(fraction * len(data.train_y))
    if n_noisy == 0:
        return data
    generator = torch.Generator().manual_seed(1_000_003 + seed)
    rows = torch.randperm(len(data.train_y), generator=generator)[:n_noisy].sort().values
    # Drawn in float32 whatever the precision, so both precisions add the same noise.
    noise = torch.randn((n_noisy, *data.train_x.shape[1:]), generator=generator).to(data.train_x.dtype)
    train_x = data.train_x.clone()
    sizes = (torch.full((n_noisy,), float(norm), dtype=train_x.dtype) if relative is None
             else relative * train_x[rows].flatten(1).norm(dim=1))
    noise *= (sizes / noise.flatten(1).norm(dim=1).clamp_min(1e-12)).view(-1, *[1] * (noise.dim() - 1))
    train_x[rows] += noise
    return dataclasses.replace(data, train_x=train_x, noisy_rows=rows)


def target_from(config: ExperimentConfig, payload: dict[str, Any], meta: dict[str, Any],
                device: torch.device) -> Target:
    """The target a ``target`` payload holds: theta_tau (its trajectory's last row) on ``device``."""
    model = fresh_model(config, meta["in_shape"], meta["num_classes"]).to(device)
    load_flat_params(model, payload["trajectory"][-1])
    return Target(config, model.eval(), payload["trajectory"], payload["checkpoint_steps"], meta)


def train_target(config: ExperimentConfig, data: DataSplits, device: torch.device, progress: bool | None,
                 resumed: dict[str, Any] | None = None,
                 checkpoint: Callable[[dict[str, Any]], None] | None = None) -> tuple[dict[str, Any], dict]:
    """Train the target of ``config`` (from ``resumed``, the last state ``checkpoint`` was given,
    when there is one): its payload (trajectory, checkpoint steps, history) and meta."""
    info = data.info
    model = fresh_model(config, info.shape, info.num_classes)
    resume = resume_state(resumed.get("state")) if resumed else None
    elapsed_before = float(resumed.get("seconds", 0.0)) if resume is not None else 0.0
    start = time.perf_counter()

    def save_progress(state: TrainState) -> None:
        if checkpoint is not None:
            checkpoint({"state": vars(state), "seconds": elapsed_before + time.perf_counter() - start})

    result = train(model, data.train_x, data.train_y, config.train, device=device, resume=resume,
                   on_epoch_end=save_progress, progress=progress, desc=f"train {info.name}")
    seconds = elapsed_before + time.perf_counter() - start
    meta = _target_meta(config, data, result.model, seconds, device, resumed=resume is not None)
    payload = {"trajectory": result.trajectory, "checkpoint_steps": result.checkpoint_steps,
               "history": result.history}
    return payload, meta


def _target_meta(config: ExperimentConfig, data: DataSplits, model: nn.Module, seconds: float,
                 device: torch.device, resumed: bool) -> dict[str, Any]:
    info = data.info
    return {
        "test_acc": accuracy(model, data.test_x, data.test_y),
        "val_acc": accuracy(model, data.val_x, data.val_y),
        "train_seconds": seconds,
        "resumed": resumed,
        "n_train": len(data.train_y),
        "in_shape": list(info.shape),
        "num_classes": info.num_classes,
        "data_source": info.source,
        "config": config.to_dict(),
        **environment(device),
    }
