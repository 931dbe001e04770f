"""Deterministic SGD training that records the trajectory theta_0 .. theta_tau.

The batch order (and the augmentation draws) of epoch ``e`` come from a generator seeded by
``(seed, e)`` alone, so training can resume after any epoch and still match an uninterrupted run.

Retraining "without" a subset uses the same theta_0 and the same schedule: every optimizer step of
the target happens again, each on its own batch with the removed samples dropped (a batch that loses
every sample still takes the step with a zero loss gradient, so weight decay and momentum stay in
lockstep with the target). Removing nothing therefore reproduces the target bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ddm.config import TrainConfig
from ddm.errors import ConfigError, DataError, DivergedError

AUGMENT_PAD = 4  # pixels of zero padding before the random crop (standard CIFAR augmentation)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; ``cpu``/``cuda``/``cuda:N`` are taken as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available here")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None


def flat_params(model: nn.Module) -> Tensor:
    """All parameters as one detached vector [P] (the parameters' dtype) on the CPU."""
    return torch.cat([p.detach().reshape(-1).cpu() for p in model.parameters()])


def load_flat_params(model: nn.Module, vector: Tensor) -> None:
    """Inverse of :func:`flat_params`: copy a [P] vector into ``model``'s parameters.

    A copy, not ``torch.nn.utils.vector_to_parameters``, which makes every parameter a view of
    ``vector``: a model loaded from a trajectory row then wrote through to the row (and to every other
    model loaded from it, the target's own) whenever its parameters were changed in place, as the
    attribution libraries do when they load a checkpoint into the model they are given."""
    size = sum(p.numel() for p in model.parameters())
    if vector.numel() != size:
        raise ValueError(f"{vector.numel()} values for {size} parameters")
    start = 0
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(vector[start:start + param.numel()].view_as(param))
            start += param.numel()


@dataclass(frozen=True)
class EpochPlan:
    """One epoch of the target's schedule: sample order and per-position augmentation draws."""

    order: Tensor  # int64 [N] training rows in visiting order
    crops: Tensor | None  # int64 [N, 2] crop offsets (dy, dx) in [0, 2*pad], by position
    flips: Tensor | None  # bool [N] horizontal flip, by position


def epoch_plan(n: int, seed: int, epoch: int, augment: bool) -> EpochPlan:
    """The schedule of epoch ``epoch``: a function of (n, seed, epoch, augment) only."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=generator)
    if not augment:
        return EpochPlan(order, None, None)
    crops = torch.randint(0, 2 * AUGMENT_PAD + 1, (n, 2), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    return EpochPlan(order, crops, flips)


def batch_positions(n: int, batch_size: int) -> Iterator[slice]:
    """Positions of each batch within an epoch's order (the last batch may be short)."""
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def augment_batch(images: Tensor, crops: Tensor, flips: Tensor, pad: int = AUGMENT_PAD) -> Tensor:
    """Random crop after zero padding, then horizontal flip, per sample.

    images [B, C, H, W]; crops int64 [B, 2]; flips bool [B] -> [B, C, H, W].
    """
    batch, _, height, width = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    device = images.device
    rows = crops[:, 0:1].to(device) + torch.arange(height, device=device)  # [B, H]
    cols = crops[:, 1:2].to(device) + torch.arange(width, device=device)  # [B, W]
    cols = torch.where(flips.to(device)[:, None], cols.flip(1), cols)
    index = torch.arange(batch, device=device)[:, None, None]
    cropped = padded.permute(0, 2, 3, 1)[index, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    return cropped.permute(0, 3, 1, 2).contiguous()


@dataclass
class TrainState:
    """Everything needed to continue training after ``epochs_done`` epochs."""

    epochs_done: int = 0
    step: int = 0
    trajectory: list[Tensor] = field(default_factory=list)  # flat [P] vectors
    checkpoint_steps: list[int] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)
    model_state: dict[str, Tensor] | None = None
    optimizer_state: dict[str, Any] | None = None


@dataclass
class TrainResult:
    model: nn.Module  # theta_tau, in eval mode
    trajectory: Tensor  # [n_checkpoints, P] (parameters' dtype); row 0 is theta_0, the last row theta_tau
    checkpoint_steps: list[int]  # optimizer step of every trajectory row
    history: list[dict[str, float]]  # per epoch: mean loss and train accuracy on kept samples


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)


# A training loss other than cross-entropy: (logits [B, C], labels [B], images [B, ...]) -> scalar.
# Knowledge distillation (Eq. 15) and the "nasty teacher" objective use it; the images are passed so
# that a teacher can see the same (augmented) batch.
LossFn = Callable[[Tensor, Tensor, Tensor], Tensor]


def cross_entropy_loss(logits: Tensor, labels: Tensor, images: Tensor) -> Tensor:
    return F.cross_entropy(logits, labels)


def _sgd_step(model: nn.Module, optimizer: torch.optim.Optimizer, images: Tensor,
              labels: Tensor, loss_fn: LossFn = cross_entropy_loss) -> tuple[float, int]:
    """One optimizer step on the kept samples; returns (summed loss, correct count)."""
    optimizer.zero_grad(set_to_none=False)
    if len(labels) == 0:  # every sample of this batch was removed: zero loss gradient, same step
        for param in model.parameters():
            param.grad = torch.zeros_like(param)
        optimizer.step()
        return 0.0, 0
    logits = model(images)
    loss = loss_fn(logits, labels, images)
    loss.backward()
    optimizer.step()
    correct = int((logits.argmax(1) == labels).sum())
    return float(loss.detach()) * len(labels), correct


def train(
    model: nn.Module,
    train_x: Tensor,
    train_y: Tensor,
    cfg: TrainConfig,
    *,
    removed: Tensor | None = None,
    device: torch.device | str = "cpu",
    resume: TrainState | None = None,
    on_epoch_end: Callable[[TrainState], None] | None = None,
    progress: bool | None = None,
    desc: str = "train",
    loss_fn: LossFn = cross_entropy_loss,
) -> TrainResult:
    """Train ``model`` (holding theta_0) with SGD; record the trajectory.

    train_x [N, C, H, W], train_y int64 [N]; ``removed``: rows of the training set to leave out
    (same theta_0 and batch order otherwise). ``resume`` continues from a saved :class:`TrainState`;
    ``on_epoch_end`` receives the state after every epoch (the cache saves it to resume later).
    ``loss_fn`` replaces cross-entropy (knowledge distillation; the nasty-teacher objective).
    """
    device = torch.device(device)
    if not torch.isfinite(train_x).all():
        raise DataError("the training images contain non-finite values (NaN or inf): fix the data; "
                        "no learning rate can train on them")
    model = model.to(device)
    images, labels = train_x.to(device), train_y.to(device)
    n = len(labels)
    keep = torch.ones(n, dtype=torch.bool)
    if removed is not None and len(removed):
        keep[torch.as_tensor(removed, dtype=torch.long)] = False
    optimizer = _optimizer(model, cfg)
    state = _start_state(model, optimizer, resume)
    total_steps = cfg.epochs * -(-n // cfg.batch_size)
    # progress=None lets tqdm decide (shown on a terminal, hidden in logs and CI).
    bar = tqdm(total=total_steps, initial=state.step, desc=desc, unit="step", leave=False,
               disable=None if progress is None else not progress)
    model.train()
    for epoch in range(state.epochs_done, cfg.epochs):
        _train_epoch(model, optimizer, images, labels, keep, cfg, epoch, state, bar, loss_fn)
        state.epochs_done = epoch + 1
        if cfg.checkpoint_every == 0:
            _record(model, state)
        if on_epoch_end is not None:
            state.model_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            state.optimizer_state = optimizer.state_dict()
            on_epoch_end(state)
    bar.close()
    if state.checkpoint_steps[-1] != state.step:  # always end the trajectory at theta_tau
        _record(model, state)
    model.eval()
    return TrainResult(model, torch.stack(state.trajectory), state.checkpoint_steps, state.history)


def resume_state(partial: Any) -> TrainState | None:
    """A :class:`TrainState` from a cached partial's fields, or None when they do not fit (a
    malformed partial only costs recomputation)."""
    if not isinstance(partial, dict):
        return None
    try:
        state = TrainState(**partial)
    except TypeError:
        return None
    if not isinstance(state.model_state, dict) or not isinstance(state.optimizer_state, dict):
        return None
    return state


def _start_state(model: nn.Module, optimizer: torch.optim.Optimizer,
                 resume: TrainState | None) -> TrainState:
    if resume is None:
        state = TrainState()
        _record(model, state)  # theta_0
        return state
    model.load_state_dict(resume.model_state)
    optimizer.load_state_dict(resume.optimizer_state)
    return resume


def _record(model: nn.Module, state: TrainState) -> None:
    state.trajectory.append(flat_params(model))
    state.checkpoint_steps.append(state.step)


def _train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, images: Tensor, labels: Tensor,
                 keep: Tensor, cfg: TrainConfig, epoch: int, state: TrainState, bar: tqdm,
                 loss_fn: LossFn = cross_entropy_loss) -> None:
    plan = epoch_plan(len(labels), cfg.seed, epoch, cfg.augment)
    loss_sum, correct, seen = 0.0, 0, 0
    for positions in batch_positions(len(labels), cfg.batch_size):
        rows = plan.order[positions]
        kept = keep[rows]
        batch_images = images[rows[kept].to(images.device)]
        if cfg.augment and kept.any():
            batch_images = augment_batch(batch_images, plan.crops[positions][kept],
                                         plan.flips[positions][kept])
        batch_loss, batch_correct = _sgd_step(model, optimizer, batch_images,
                                              labels[rows[kept].to(labels.device)], loss_fn)
        loss_sum, correct, seen = loss_sum + batch_loss, correct + batch_correct, seen + int(kept.sum())
        state.step += 1
        bar.update(1)
        if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0:
            _record(model, state)
    if seen and not torch.isfinite(torch.tensor(loss_sum)):
        raise DivergedError(f"training diverged in epoch {epoch} (loss is not finite); "
                            f"lower the learning rate (lr={cfg.lr})")
    state.history.append({"epoch": epoch, "loss": loss_sum / max(seen, 1),
                          "train_acc": correct / max(seen, 1)})


@torch.no_grad()
def predict(model: nn.Module, images: Tensor, batch_size: int = 1024) -> Tensor:
    """Logits [N, num_classes] on the model's device, returned on the CPU."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    outputs = [model(images[i:i + batch_size].to(device)).cpu()
               for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(outputs)


def accuracy(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy of ``model`` on images [N, C, H, W] with int64 labels [N]."""
    return float((predict(model, images).argmax(1) == labels.cpu()).float().mean())


def sgd_update(params: dict[str, Tensor], grads: dict[str, Tensor], momentum: dict[str, Tensor] | None,
               cfg: TrainConfig) -> tuple[dict[str, Tensor], dict[str, Tensor] | None]:
    """One step of ``torch.optim.SGD`` (dampening 0, no Nesterov) on parameter dicts, out of place:
    the new parameters and momentum buffer (differentiable, so forward mode can run through it)."""
    steps = {name: grads[name] + cfg.weight_decay * params[name] for name in params}
    if cfg.momentum:
        momentum = steps if momentum is None else {
            name: cfg.momentum * momentum[name] + steps[name] for name in params}
        steps = momentum
    return {name: params[name] - cfg.lr * steps[name] for name in params}, momentum


def train_many(model: nn.Module, train_x: Tensor, train_y: Tensor, cfg: TrainConfig,
               removed: list[Tensor], *, device: torch.device | str = "cpu", progress: bool | None = None,
               desc: str = "retrain (vectorized)") -> Tensor:
    """Train ``len(removed)`` copies of ``model`` (holding theta_0) at once, copy b without the rows
    ``removed[b]``, on the one shared schedule of ``cfg``: final parameters [B, P] (flat, CPU).

    The same-seed semantics of :func:`train`, vectorized with ``torch.func.vmap``: every copy sees
    every batch of the target's schedule with a 0/1 weight per sample (0 = removed); its loss is the
    mean over its kept samples, so a batch that loses every row takes its step with a zero loss
    gradient (weight decay and momentum still act). SGD with momentum and weight decay is applied as
    ``torch.optim.SGD`` does (dampening 0, no Nesterov). Equal to :func:`train` to float tolerance,
    not bit for bit (batched kernels sum in another order). SGD only; no trajectory is recorded.
    """
    from torch.func import functional_call, grad, vmap

    if cfg.optimizer != "sgd":
        raise ConfigError(f"vectorized retraining implements SGD only, not {cfg.optimizer!r}")
    device = torch.device(device)
    model = model.to(device)
    images, labels = train_x.to(device), train_y.to(device)
    n, copies = len(labels), len(removed)
    keep = torch.ones(copies, n, device=device, dtype=images.dtype)
    for b, rows in enumerate(removed):
        if len(rows):
            keep[b, torch.as_tensor(rows, dtype=torch.long, device=device)] = 0.0
    params = {name: p.detach().unsqueeze(0).repeat(copies, *[1] * p.dim())
              for name, p in model.named_parameters()}
    momentum: dict[str, Tensor] | None = None

    def loss(one: dict[str, Tensor], batch_images: Tensor, batch_labels: Tensor, weights: Tensor) -> Tensor:
        logits = functional_call(model, one, (batch_images,))
        per_sample = F.cross_entropy(logits, batch_labels, reduction="none")
        return (per_sample * weights).sum() / weights.sum().clamp_min(1.0)

    step_grad = vmap(grad(loss), in_dims=(0, None, None, 0))
    bar = tqdm(total=cfg.epochs * -(-n // cfg.batch_size), desc=desc, unit="step", leave=False,
               disable=None if progress is None else not progress)
    model.train()
    for epoch in range(cfg.epochs):
        plan = epoch_plan(n, cfg.seed, epoch, cfg.augment)
        for positions in batch_positions(n, cfg.batch_size):
            rows = plan.order[positions].to(device)
            batch_images = images[rows]
            if cfg.augment:
                batch_images = augment_batch(batch_images, plan.crops[positions], plan.flips[positions])
            grads = step_grad(params, batch_images, labels[rows], keep[:, rows])
            with torch.no_grad():
                params, momentum = sgd_update(params, grads, momentum, cfg)
            bar.update(1)
        if not all(torch.isfinite(value).all() for value in params.values()):
            raise DivergedError(f"vectorized training diverged in epoch {epoch} (parameters are not "
                                     f"finite); lower the learning rate (lr={cfg.lr})")
    bar.close()
    return torch.cat([value.detach().flatten(1).cpu() for value in params.values()], 1)
