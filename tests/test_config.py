"""Scale presets and overrides."""

import dataclasses

import pytest

from ddm.config import (
    ExperimentConfig,
    ModelConfig,
    TrainConfig,
    field_help,
    preset,
    with_overrides,
)
from ddm.errors import ConfigError


def test_presets_follow_the_brief():
    smoke, small, paper = (preset(s, "mnist") for s in ("smoke", "small", "paper"))
    assert smoke.data.n_per_class <= 100 and smoke.model.width < small.model.width
    assert small.data.n_per_class == 200 and small.model.width == 32 and small.train.epochs == 5
    assert paper.data.n_per_class is None and paper.model.width == 128 and paper.train.epochs == 30


def test_paper_preset_uses_table5_learning_rates_and_augmentation():
    assert preset("paper", "mnist").train.lr == 0.001
    assert preset("paper", "cifar10").train.lr == 0.01
    assert preset("paper", "cifar10").train.augment and not preset("paper", "mnist").train.augment


def test_overrides_map_onto_fields_and_none_keeps():
    config = with_overrides(preset("smoke", "digits"), width=8, epochs=2, seed=None)
    assert config.model.width == 8 and config.train.epochs == 2
    assert config.train.seed == preset("smoke", "digits").train.seed


@pytest.mark.parametrize("bad", [{"width": 0}, {"epochs": 0}, {"lr": -1.0}, {"n_per_class": 0},
                                 {"nonsense": 3}, {"optimizer": "lbfgs"}])
def test_bad_values_are_rejected(bad):
    with pytest.raises(ConfigError):
        with_overrides(preset("smoke", "digits"), **bad)


def test_unknown_scale_lists_choices():
    with pytest.raises(ConfigError, match="smoke, small, paper"):
        preset("huge", "digits")


def test_configs_are_frozen_and_every_field_has_help():
    with pytest.raises(dataclasses.FrozenInstanceError):
        preset("smoke", "digits").train.lr = 1.0  # type: ignore[misc]
    for section in (ModelConfig, TrainConfig):
        assert all(field_help(section).values())


def test_target_key_ignores_the_scale_label():
    config = preset("smoke", "digits")
    relabelled = dataclasses.replace(config, scale="small")
    assert isinstance(config, ExperimentConfig)
    assert config.target_key() == relabelled.target_key()


def test_parse_assignment_types_values_by_field():
    from ddm.config import parse_assignment

    assert parse_assignment("lr_img=1.5") == ("lr_img", 1.5)
    assert parse_assignment("ipc=2") == ("ipc", 2)
    assert parse_assignment("real_batch=none") == ("real_batch", None)
    assert parse_assignment("include_singles=true") == ("include_singles", True)
    assert parse_assignment("pairing=eq6") == ("pairing", "eq6")
    for bad in ("ipc=two", "nofield=1", "ipc", "include_singles=maybe"):
        with pytest.raises(ConfigError):
            parse_assignment(bad)


def test_small_keeps_all_of_digits_which_has_fewer_than_200_per_class():
    from ddm.target import load_data

    config = preset("small", "digits")
    assert config.data.n_per_class is None
    assert len(load_data(config).train_y) > 1000  # every bundled training digit, no subset error


def test_every_choice_field_refuses_an_unknown_value_when_the_config_is_made():
    import dataclasses

    from ddm.config import ExperimentConfig, choice_fields, field_choices

    assert {"dataset", "arch", "init", "activation", "precision", "optimizer", "cluster_method",
            "embedding", "pairing", "distance", "synset_labels", "beta", "schedule", "cluster_scale",
            "scale"} == set(choice_fields())
    base = preset("smoke", "digits")
    for name in choice_fields():
        assert field_choices(name), name
        with pytest.raises(ConfigError, match=f"unknown {name} 'nope'; choose one of: "):
            if name == "scale":
                dataclasses.replace(base, scale="nope")
            else:
                with_overrides(base, **{name: "nope"})
    with pytest.raises(ConfigError, match="unknown dataset"):
        ExperimentConfig(data=dataclasses.replace(base.data, dataset="foo"))
