"""Deterministic training: identical reruns, exact resume, 'remove nothing' == target, removal."""

import dataclasses

import pytest
import torch
from torch import nn

from ddm.config import TrainConfig
from ddm.train import (
    TrainState,
    augment_batch,
    epoch_plan,
    flat_params,
    load_flat_params,
    resolve_device,
    train,
)

CFG = TrainConfig(epochs=3, batch_size=8, lr=0.05, momentum=0.9, weight_decay=5e-4, seed=3)


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 3))


@pytest.fixture
def tiny_data():
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(30, 1, 6, 6, generator=generator)
    labels = torch.randint(0, 3, (30,), generator=generator)
    return images, labels


def test_two_runs_give_identical_weights_and_trajectory(tiny_data):
    first = train(tiny_model(), *tiny_data, CFG, progress=False)
    second = train(tiny_model(), *tiny_data, CFG, progress=False)
    assert torch.equal(first.trajectory, second.trajectory)
    assert first.trajectory.shape == (CFG.epochs + 1, sum(p.numel() for p in tiny_model().parameters()))
    assert first.checkpoint_steps == [0, 4, 8, 12]  # 30 samples / batch 8 = 4 steps per epoch


def test_trajectory_starts_at_theta0_and_ends_at_theta_tau(tiny_data):
    theta0 = flat_params(tiny_model())
    result = train(tiny_model(), *tiny_data, CFG, progress=False)
    assert torch.equal(result.trajectory[0], theta0)
    assert torch.equal(result.trajectory[-1], flat_params(result.model))
    assert not torch.equal(result.trajectory[0], result.trajectory[-1])


def test_removing_nothing_reproduces_the_target_bit_for_bit(tiny_data):
    target = train(tiny_model(), *tiny_data, CFG, progress=False)
    retrained = train(tiny_model(), *tiny_data, CFG, removed=torch.tensor([], dtype=torch.long),
                      progress=False)
    assert torch.equal(target.trajectory, retrained.trajectory)


def test_removing_samples_changes_the_model_but_not_the_schedule(tiny_data):
    target = train(tiny_model(), *tiny_data, CFG, progress=False)
    removed = train(tiny_model(), *tiny_data, CFG, removed=torch.arange(10), progress=False)
    assert removed.checkpoint_steps == target.checkpoint_steps
    assert not torch.equal(target.trajectory[-1], removed.trajectory[-1])
    assert torch.equal(target.trajectory[0], removed.trajectory[0])


def test_removal_equals_training_on_the_masked_batches_by_hand(tiny_data):
    """The retrained model visits the target's batches in order, minus the removed rows."""
    images, labels = tiny_data
    removed = torch.tensor([0, 5, 7, 11, 29])
    cfg = dataclasses.replace(CFG, momentum=0.0, weight_decay=0.0, epochs=1)
    result = train(tiny_model(), images, labels, cfg, removed=removed, progress=False)
    model = tiny_model()
    keep = torch.ones(30, dtype=torch.bool)
    keep[removed] = False
    order = epoch_plan(30, cfg.seed, 0, augment=False).order
    for start in range(0, 30, cfg.batch_size):
        rows = order[start:start + cfg.batch_size]
        rows = rows[keep[rows]]
        model.zero_grad()
        nn.functional.cross_entropy(model(images[rows]), labels[rows]).backward()
        with torch.no_grad():
            for param in model.parameters():
                param -= cfg.lr * param.grad
    torch.testing.assert_close(flat_params(model), result.trajectory[-1], rtol=1e-5, atol=1e-6)


def test_a_batch_that_loses_every_sample_still_steps(tiny_data):
    images, labels = tiny_data
    order = epoch_plan(30, CFG.seed, 0, augment=False).order
    first_batch = order[: CFG.batch_size]
    result = train(tiny_model(), images, labels, CFG, removed=first_batch, progress=False)
    assert result.checkpoint_steps == [0, 4, 8, 12]
    assert torch.isfinite(result.trajectory).all()


def test_resume_after_interruption_matches_uninterrupted_run(tiny_data):
    full = train(tiny_model(), *tiny_data, CFG, progress=False)
    saved: list[TrainState] = []

    def stop_after_first_epoch(state: TrainState) -> None:
        saved.append(dataclasses.replace(state, trajectory=list(state.trajectory),
                                         checkpoint_steps=list(state.checkpoint_steps),
                                         history=list(state.history)))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_model(), *tiny_data, CFG, on_epoch_end=stop_after_first_epoch, progress=False)
    resumed = train(tiny_model(seed=99), *tiny_data, CFG, resume=saved[0], progress=False)
    assert torch.equal(full.trajectory, resumed.trajectory)


def test_epoch_plan_depends_only_on_seed_and_epoch():
    assert torch.equal(epoch_plan(50, 1, 2, True).order, epoch_plan(50, 1, 2, True).order)
    assert not torch.equal(epoch_plan(50, 1, 2, False).order, epoch_plan(50, 1, 3, False).order)
    assert not torch.equal(epoch_plan(50, 1, 2, False).order, epoch_plan(50, 2, 2, False).order)


def test_augment_batch_crops_and_flips_exactly():
    images = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    centered = torch.tensor([[4, 4], [4, 4]])
    out = augment_batch(images, centered, torch.tensor([False, True]))
    assert torch.equal(out[0], images[0])
    assert torch.equal(out[1], images[1].flip(-1))
    shifted = augment_batch(images, torch.tensor([[5, 4], [4, 4]]), torch.tensor([False, False]))
    assert torch.equal(shifted[0, 0, :3], images[0, 0, 1:])  # moved up one row
    assert torch.equal(shifted[0, 0, 3], torch.zeros(4))  # zero padding came in


def test_augmented_training_is_deterministic(tiny_data):
    cfg = dataclasses.replace(CFG, augment=True)
    first = train(tiny_model(), *tiny_data, cfg, progress=False)
    second = train(tiny_model(), *tiny_data, cfg, progress=False)
    assert torch.equal(first.trajectory, second.trajectory)
    assert not torch.equal(first.trajectory[-1], train(tiny_model(), *tiny_data, CFG,
                                                       progress=False).trajectory[-1])


def test_checkpoint_every_n_steps(tiny_data):
    cfg = dataclasses.replace(CFG, checkpoint_every=3)
    result = train(tiny_model(), *tiny_data, cfg, progress=False)
    assert result.checkpoint_steps == [0, 3, 6, 9, 12]


def test_flat_params_round_trip():
    model, other = tiny_model(0), tiny_model(1)
    load_flat_params(other, flat_params(model))
    assert torch.equal(flat_params(other), flat_params(model))


def test_divergence_is_reported(tiny_data):
    images, labels = tiny_data
    cfg = dataclasses.replace(CFG, lr=1e30, momentum=0.0)
    with pytest.raises(FloatingPointError, match="learning rate"):
        train(tiny_model(), images * 1e10, labels, cfg, progress=False)


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


def test_adam_training_is_deterministic_and_resume_safe(tiny_data):
    cfg = dataclasses.replace(CFG, optimizer="adam", lr=0.01)
    first = train(tiny_model(), *tiny_data, cfg, progress=False)
    second = train(tiny_model(), *tiny_data, cfg, progress=False)
    assert torch.equal(first.trajectory, second.trajectory)
    assert not torch.equal(first.trajectory[-1], train(tiny_model(), *tiny_data, CFG,
                                                       progress=False).trajectory[-1])


def test_a_custom_loss_replaces_cross_entropy(tiny_data):
    """loss_fn=cross-entropy written by hand reproduces the default bit for bit; another loss differs."""
    default = train(tiny_model(), *tiny_data, CFG, progress=False)
    by_hand = train(tiny_model(), *tiny_data, CFG, progress=False,
                    loss_fn=lambda logits, labels, images: nn.functional.cross_entropy(logits, labels))
    assert torch.equal(default.trajectory, by_hand.trajectory)
    seen = []

    def halved(logits, labels, images):
        seen.append(images.shape[0])
        return 0.5 * nn.functional.cross_entropy(logits, labels)

    other = train(tiny_model(), *tiny_data, CFG, progress=False, loss_fn=halved)
    assert not torch.equal(default.trajectory[-1], other.trajectory[-1])
    assert sum(seen) == CFG.epochs * len(tiny_data[1])  # the loss sees every batch's images
