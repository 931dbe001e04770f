"""Typed, frozen experiment configuration and the named scale presets ``smoke``, ``small``, ``paper``.

Every field carries help text in its metadata (the CLI shows it). A preset is a function of the scale
name and the dataset, because the paper's own settings differ per dataset (Table 5: lr_net 0.001 on
MNIST, 0.01 on CIFAR/TinyImageNet; standard augmentation on the colour datasets only).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from ddm.errors import ConfigError

# The vocabulary: every string field's choices, declared once on the field (``choices=``) and read by
# validation, the CLI's choice lists and the modules that dispatch on them. A registry-backed field
# names its registry ("module:attribute", imported when a config is validated: no torch here).
SCALES = ("smoke", "small", "paper")
OPTIMIZERS = ("sgd", "adam")
LABEL_MODES = ("hard", "soft")
SCHEDULES = ("budget", "paper")
CLUSTER_SCALES = ("none", "real_norm")
PRECISIONS = ("float32", "float64")
CLUSTER_METHODS = ("kmeans", "sequential")
EMBEDDINGS = ("extractor", "target", "pixels")
PAIRINGS = ("alg1", "eq6")
WEIGHT_SCHEMES = ("inverse", "uniform", "count")
DISTILL_MODES = ("reverse", "match")  # not a field: reverse (DDM) or forward (DDM-match) matching
# Datasets whose training uses random-crop + flip augmentation (the paper's "standard augmentation").
AUGMENTED_DATASETS = frozenset({"cifar10", "cifar100", "tinyimagenet"})
# Datasets the paper trains with lr_net = 0.001 (Table 5); everything else uses 0.01.
LOW_LR_DATASETS = frozenset({"mnist", "fashion-mnist", "digits"})


def _field(default: Any, help: str, choices: tuple[str, ...] | str | None = None,
           keyed_at_default: bool = True) -> Any:
    """A config field with its help text and, for a string field, its choices: a tuple, or the
    ``"module:attribute"`` of the registry (or tuple) that holds them. A field added after artifacts
    were cached is declared ``keyed_at_default=False``: at its default it stays out of every cache
    key, so the artifacts computed before it existed keep their keys."""
    return field(default=default, metadata={"help": help, "choices": choices,
                                            "keyed_at_default": keyed_at_default})


def key_view(section: Any, omit: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields of a config section that enter a cache key (see :func:`_field`)."""
    return {spec.name: getattr(section, spec.name) for spec in dataclasses.fields(section)
            if spec.name not in omit and (spec.metadata.get("keyed_at_default", True)
                                          or getattr(section, spec.name) != spec.default)}


@dataclass(frozen=True)
class DataConfig:
    """Which training data the target sees."""

    dataset: str = _field("digits", "registered dataset name (see `ddm-bench data list`)",
                          choices="ddm.data:DATASETS")
    n_per_class: int | None = _field(
        None, "class-balanced subset of the training split; None keeps every image"
    )
    subset_seed: int = _field(0, "seed of the class-balanced subset (which images are kept)")
    noise_fraction: float = _field(
        0.0, "fraction of training images given additive Gaussian noise (paper Table 6: 0.2)"
    )
    noise_norm: float = _field(
        0.1, "L2 norm of that noise per image, in normalized pixel units (paper Table 6: 0.1)"
    )
    noise_relative: float | None = _field(
        None, "when set, the noise's L2 norm as a multiple of each noisy image's own L2 norm "
        "(normalized units), replacing noise_norm: a size set by effect, not by units"
    )

    label_noise: float = _field(
        0.0, "fraction of training labels flipped to another class, seeded by subset_seed (the "
        "mislabel target: 0.1)", keyed_at_default=False
    )

    data_fingerprint: str | None = _field(
        None, "digest of the arrays read from --data-root (set when the data is loaded, so another "
        "data root gets other cache entries); none for bundled data, whose source is pinned"
    )

    def key(self) -> dict[str, Any]:
        """The fields as a cache key."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ModelConfig:
    """Which network, how wide, how initialized."""

    arch: str = _field("convnet", "convnet | alexnet | resnet18_ap | simple_vit", choices="ddm.models:MODELS")
    width: int = _field(
        128, "ConvNet width; the other architectures scale their channels by width/128"
    )
    depth: int | None = _field(None, "ConvNet / ViT depth; None is the architecture default")
    init: str = _field("kaiming", "weight initialization: kaiming | normal | xavier (paper Fig. 8)",
                       choices="ddm.models:INIT_SCHEMES")
    activation: str = _field(
        "relu", "relu (the paper's CNNs) | gelu (smooth). ReLU's derivative jumps at 0, so in float32 a "
        "rounding difference (another thread count) flips which units pass gradient and training "
        "carries it forward: the float32 ReLU oracle agrees with its own rerun at Spearman 0.53 on "
        "digits smoke; GELU keeps the rerun at rounding level (tables/noise_*)",
        choices="ddm.models:ACTIVATIONS")
    precision: str = _field(
        "float64", "float64 | float32: the dtype of every tensor the suite makes (data, parameters, "
        "trajectories, synsets, fine-tunes, retrainings). Default float64: its ReLU oracle is bit-identical "
        "under another thread count and moves by 1e-26 of the deletion effect when theta_0 moves by one "
        "ulp, and Table 1 recomputes to 1e-9. float32 + gelu is about 3x faster per MNIST-small model on "
        "CPU, but there a 1-thread rerun of digits-smoke Table 1 moved the oracle's cells by up to 7e-5 "
        "and DDM (paper schedule)'s located Dist1 from 0.085 to 0.003 (its float32 fine-tunes are chaotic)",
        choices=PRECISIONS)


@dataclass(frozen=True)
class TrainConfig:
    """SGD training of the target; also the exact-retraining protocol (same fields, same seed)."""

    epochs: int = _field(30, "training epochs tau (paper Table 5: 30)")
    batch_size: int = _field(256, "mini-batch size")
    lr: float = _field(0.01, "SGD learning rate lr_net (paper Table 5: 0.001 MNIST, 0.01 others)")
    optimizer: str = _field(
        "sgd", "sgd (the paper's derivation assumes SGD) | adam (simple_vit barely moves under SGD)",
        choices=OPTIMIZERS)
    momentum: float = _field(0.9, "SGD momentum (ignored by adam)")
    weight_decay: float = _field(5e-4, "L2 weight decay, as in the dataset-condensation code")
    augment: bool = _field(False, "random crop (pad 4) + horizontal flip, per sample, seeded")
    checkpoint_every: int = _field(
        0, "record the trajectory every n optimizer steps; 0 records once per epoch"
    )
    seed: int = _field(0, "seed of theta_0 and of the batch order / augmentation stream")


@dataclass(frozen=True)
class ClusterConfig:
    """How the training set is split into K = L * C clusters (paper §6.1)."""

    clusters_per_class: int = _field(10, "C: k-means clusters per class (paper: 10, so K = 10 L)")
    cluster_method: str = _field(
        "kmeans", "kmeans (per class, on embeddings) | sequential (consecutive chunks: 'w/o cluster')",
        choices=CLUSTER_METHODS)
    embedding: str = _field(
        "extractor",
        "kmeans features: extractor (a separately trained network of the same architecture; no "
        "pretrained weights can be downloaded here) | target (the target's own features) | pixels "
        "(PCA of raw pixels)", choices=EMBEDDINGS)
    cluster_seed: int = _field(0, "seed of k-means and of the extractor's training (offset by 1)")


@dataclass(frozen=True)
class DistillConfig:
    """Offline stage: synset distillation by reverse gradient matching (paper §3.2, Alg. 1)."""

    pairing: str = _field(
        "alg1", "alg1: real grad at theta_t, synthetic at theta_{t+s} | eq6: synthetic at theta_{tau-t}",
        choices=PAIRINGS)
    distance: str = _field("layerwise", "layerwise (DC per-channel cosine) | cosine | mse",
                           choices="ddm.distill:DISTANCES")
    step_length: int = _field(4, "s: checkpoints between the real and synthetic gradient (Table 5: 4)")
    distill_steps: int = _field(50, "synset update iterations (Table 5: 50)")
    lr_img: float = _field(0.1, "SGD learning rate of the reverse-matched images (Table 5: 0.1)")
    lr_img_match: float = _field(
        0.1, "SGD learning rate of the gradient-matching (DDM-match) images: DC's own 0.1. Forward "
        "matching starts near its optimum (real images) and overshoots at the larger reverse rates"
    )
    img_momentum: float = _field(0.5, "SGD momentum of the synthetic images (as in the DC code)")
    ipc: int = _field(1, "synthetic images per cluster (paper: 1)")
    real_batch: int | None = _field(
        None, "real images per cluster per step for the real gradient; None uses the whole cluster"
    )
    distill_seed: int = _field(0, "seed of the synset initialization and checkpoint sampling")
    synset_labels: str = _field(
        "soft",
        "hard: each synthetic image keeps its cluster's class as a fixed label (paper) | soft: learnable "
        "label logits per image, trained with the pixels. With a hard label c and non-negative penultimate "
        "features, CE's last-layer gradient on row c is (p_c - 1) h for real and synthetic images alike, so "
        "no pixel change can reverse it; a soft label y gives (p - y) h, whose sign y can flip. Default "
        "soft: on MNIST-small development queries the synset's own-pair cosine went from -0.65 (hard) "
        "to +0.77 (soft), see tables/ladder_*", choices=LABEL_MODES)
    soft_label_init: float = _field(
        0.0, "soft labels only: initial probability of the cluster's own class (the rest uniform over the "
        "other classes). 0 starts from the complementary label, whose gradient is already reversed "
        "(p_c - y_c > 0, p_j - y_j < 0) wherever p_j < 1/(L-1)",
    )
    lr_label: float = _field(
        0.01, "soft labels only: SGD learning rate of the label logits (on digits small 0.1 and 1.0 made "
        "the matching loss rise; 0.01 lowered it)")
    converge_tol: float | None = _field(
        None, "None runs exactly distill_steps. Otherwise distill_steps is a cap, and distillation stops "
        "once the matching loss over every checkpoint pair, checked every CONVERGE_WINDOW steps, "
        "improves on the previous check by less than this fraction",
    )


@dataclass(frozen=True)
class AttributeConfig:
    """Online stage: perturbations, fine-tunes on the synset, the linear datamodel (paper §3.3)."""

    n_perturbations: int | None = _field(None, "random perturbations |P|; None uses K (paper)")
    removal_rate: float = _field(0.2, "probability that a random perturbation removes a cluster")
    include_singles: bool = _field(
        True, "also fine-tune all K single-cluster deletions and fit W on them with the |P| random ones "
        "(the paper fits on |P| = K random perturbations only). K + 1 equations for K + 1 unknowns "
        "interpolate the fine-tunes' nonlinearity into W: on MNIST-small development queries DDM-full's "
        "Spearman went from 0.10 to 0.30 with the singles (their own: 0.31)")
    beta: str = _field("inverse", "perturbation weights beta_p: inverse | uniform | count (#zeros)",
                       choices=WEIGHT_SCHEMES)
    ridge: float = _field(0.0, "ridge penalty on W in the least-squares fit")
    finetune_steps: int = _field(10, "T: SGD steps of each fine-tune on the removed clusters' synset")
    finetune_lr: float | None = _field(
        None,
        "eta; None sets eta * T = finetune_budget * lr * epochs * mean cluster size / batch_size, a "
        "fraction of the step size a cluster contributed to the target's SGD updates",
    )
    finetune_budget: float = _field(
        0.1,
        "fraction of a cluster's training step budget the fine-tune spends (auto eta). The cosine "
        "matching fixes direction, not magnitude: at 1.0 whole-synset fine-tunes leave the linear "
        "regime (any synset wrecks the model), so smaller is safer for a linear datamodel",
    )
    finetune_chunk: int = _field(128, "fine-tunes run together in one vectorized call")
    schedule: str = _field(
        "budget", "budget: eta from finetune_budget / finetune_lr, finetune_steps steps (ours) | paper: "
        "the paper's Eq. 4-5 schedule, eta = the target's lr and T = tau (one step per trajectory "
        "interval); finetune_lr, finetune_budget and finetune_steps are then ignored", choices=SCHEDULES)
    cluster_scale: str = _field(
        "real_norm", "none: every cluster's synthetic loss has weight 1 (paper) | real_norm: weight "
        "|D_k| ||g_real_k|| / (mean |D| ||g_syn_k||) at theta_tau, so each fine-tune's first step is the "
        "budgeted fraction of that cluster's own undo step (cosine matching keeps only the direction). "
        "Default real_norm: it lifted single-cluster fine-tunes to their first-order rung on digits small",
        choices=CLUSTER_SCALES)
    hierarchical: bool = _field(
        False, "DDM-full scores by the hierarchical search (L class deletions, then C cluster deletions "
        "inside the located class, paper 6.2) instead of the linear datamodel over |P| perturbations",
    )
    attribute_seed: int = _field(0, "seed of the random perturbations")


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that determines a trained target. Saved inside every artifact."""

    scale: str = _field("smoke", "preset this config started from: smoke | small | paper", choices=SCALES)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    attribute: AttributeConfig = field(default_factory=AttributeConfig)

    def __post_init__(self) -> None:
        validate(self)  # every config is checked when it is made, before any work

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def target_key(self) -> dict[str, Any]:
        """The fields that decide the trained target (the scale label itself does not)."""
        return {"data": self.data.key(), "model": dataclasses.asdict(self.model),
                "train": dataclasses.asdict(self.train)}


# Trajectory density at smoke and small (optimizer steps between checkpoints). One checkpoint per
# epoch leaves alg1 with s = 4 two pairs at 5 epochs, each spanning most of training; every 4 steps
# the pairs are ~16 steps apart and the synset's own-pair cosine rose from 0.32 to 0.50 on digits small.
DENSE_CHECKPOINTS = 4
# Synset image lr at smoke and small: with soft labels 0.01 lowered the all-pairs matching loss on
# digits small where 1.0 (the earlier hard-label preset) and 0.1 raised it.
SMALL_LR_IMG = 0.01


def _smoke(dataset: str) -> ExperimentConfig:
    # Seconds on 2 CPU cores: <= 100 images per class, a narrow ConvNet, a few epochs.
    return ExperimentConfig(
        scale="smoke",
        data=DataConfig(dataset=dataset, n_per_class=100),
        model=ModelConfig(width=16),
        train=TrainConfig(epochs=8, batch_size=32, lr=0.05, augment=dataset in AUGMENTED_DATASETS,
                          checkpoint_every=DENSE_CHECKPOINTS),
        distill=DistillConfig(distill_steps=50, lr_img=SMALL_LR_IMG),
    )


# Datasets too small for the small preset's 200 images per class: it keeps all of them instead.
WHOLE_AT_SMALL = frozenset({"digits"})  # about 104 training images per class


def _small(dataset: str) -> ExperimentConfig:
    # Minutes on 2 CPU cores: 200 images per class, ConvNet width 32, 5 epochs, K = 10 L clusters.
    # Table 1 retrains the target ~130 times (K = 100 oracle models on MNIST + the clusters "DDM w/o
    # cluster" locates), ~0.8 s per epoch each here: at 10 epochs `run table1 --dataset mnist` took
    # 28 min, at 6 epochs 16 min. 5 epochs costs 0.9 points of MNIST test accuracy (97.3 -> 96.4 %).
    return ExperimentConfig(
        scale="small",
        data=DataConfig(dataset=dataset, n_per_class=None if dataset in WHOLE_AT_SMALL else 200),
        model=ModelConfig(width=32),
        train=TrainConfig(epochs=5, batch_size=64, lr=0.02, augment=dataset in AUGMENTED_DATASETS,
                          checkpoint_every=DENSE_CHECKPOINTS),
        distill=DistillConfig(distill_steps=50, lr_img=SMALL_LR_IMG),
    )


def _paper(dataset: str) -> ExperimentConfig:
    # The paper's Table 5 (for GPUs): full data, width 128, 30 epochs, lr_net per dataset.
    lr = 0.001 if dataset in LOW_LR_DATASETS else 0.01
    return ExperimentConfig(
        scale="paper",
        data=DataConfig(dataset=dataset, n_per_class=None),
        model=ModelConfig(width=128),
        train=TrainConfig(epochs=30, batch_size=256, lr=lr, augment=dataset in AUGMENTED_DATASETS),
    )


# The paper's DDM read as written, as overrides of any preset: hard labels, the Table-5 image lr,
# eta = the target's lr and T = tau, Eq. 6 pairing, one checkpoint per epoch, uniform cluster weights
# and a fixed number of distillation steps. Tables keep it as the "DDM (paper schedule)" row beside the
# default DDM, so the faithful method and the improved one stand side by side.
PAPER_DDM: dict[str, Any] = {"synset_labels": "hard", "lr_img": 0.1, "cluster_scale": "none",
                             "schedule": "paper", "pairing": "eq6", "checkpoint_every": 0,
                             "converge_tol": None, "include_singles": False, "hierarchical": False}

SECTIONS = ("data", "model", "train", "cluster", "distill", "attribute")
PRESETS = {"smoke": _smoke, "small": _small, "paper": _paper}


def preset(scale: str, dataset: str) -> ExperimentConfig:
    """The named preset ``scale`` for ``dataset``."""
    if scale not in PRESETS:
        raise ConfigError(f"unknown scale {scale!r}; choose one of: {', '.join(SCALES)}")
    return PRESETS[scale](dataset)


def with_overrides(config: ExperimentConfig, **overrides: Any) -> ExperimentConfig:
    """Replace fields by name wherever they live (``width=32``, ``epochs=3``); None means keep.

    Field names are unique across the sections, so the CLI can map an option straight onto a field.
    """
    sections = {name: getattr(config, name) for name in SECTIONS}
    changes: dict[str, dict[str, Any]] = {name: {} for name in sections}
    for key, value in overrides.items():
        if value is None:
            continue
        owner = [name for name, section in sections.items() if key in _field_names(section)]
        if not owner:
            raise ConfigError(f"unknown configuration field {key!r}")
        changes[owner[0]][key] = value
    replaced = {name: dataclasses.replace(sections[name], **changes[name]) for name in sections}
    return dataclasses.replace(config, **replaced)  # validated as it is made


def _field_names(section: Any) -> set[str]:
    return {f.name for f in dataclasses.fields(section)}


SEED_LIMIT = 2**31  # seeds are mixed into torch generator seeds (seed * 1_000_003 + epoch)
POSITIVE_FLOATS = ("lr", "lr_img", "lr_img_match", "lr_label", "finetune_budget")
NON_NEGATIVE_FLOATS = ("momentum", "weight_decay", "img_momentum", "ridge", "noise_norm")
POSITIVE_INTS = ("epochs", "batch_size", "width", "clusters_per_class", "ipc", "finetune_steps",
                 "finetune_chunk", "step_length")


def _check_types_and_ranges(config: ExperimentConfig) -> None:
    """Every field: the type its annotation names, finite numbers, the generic ranges above."""
    for section in SECTIONS:
        for spec in dataclasses.fields(getattr(config, section)):
            value, annotation = getattr(getattr(config, section), spec.name), str(spec.type)
            if value is None:
                if "None" not in annotation:
                    raise ConfigError(f"{spec.name} cannot be none")
                continue
            kind = annotation.split("|")[0].strip()
            expected = {"int": int, "float": (int, float), "str": str, "bool": bool}.get(kind)
            if expected is not None and (not isinstance(value, expected)
                                         or (kind != "bool" and isinstance(value, bool))):
                raise ConfigError(f"{spec.name} expects a {annotation} value, got {value!r}")
            if kind == "float" and not math.isfinite(value):
                raise ConfigError(f"{spec.name} must be a finite number, got {value}")
            if spec.name.endswith("seed") and not 0 <= value < SEED_LIMIT:
                raise ConfigError(f"{spec.name} must be in [0, {SEED_LIMIT}), got {value}")
            if spec.name in POSITIVE_FLOATS and not value > 0:
                raise ConfigError(f"{spec.name} must be > 0, got {value}")
            if spec.name in NON_NEGATIVE_FLOATS and not value >= 0:
                raise ConfigError(f"{spec.name} must be >= 0, got {value}")
            if spec.name in POSITIVE_INTS and value < 1:
                raise ConfigError(f"{spec.name} must be >= 1, got {value}")


def field_choices(name: str) -> tuple[str, ...]:
    """The allowed values of string field ``name`` (``"scale"`` or any section's field)."""
    spec = {**all_fields(), "scale": _scale_field()}[name]
    choices = spec.metadata.get("choices")
    if choices is None:
        raise KeyError(f"{name} is not a choice field")
    if isinstance(choices, str):
        import importlib

        module, _, attribute = choices.partition(":")
        holder = getattr(importlib.import_module(module), attribute)
        choices = tuple(holder.names() if hasattr(holder, "names") else holder)
    return tuple(choices)


def _scale_field() -> dataclasses.Field:
    return next(f for f in dataclasses.fields(ExperimentConfig) if f.name == "scale")


def choice_fields() -> list[str]:
    """Every field whose value is one of a declared set of names."""
    return [name for name, spec in {**all_fields(), "scale": _scale_field()}.items()
            if spec.metadata.get("choices") is not None]


def _check_choices(config: ExperimentConfig) -> None:
    values = {"scale": config.scale, **{name: getattr(getattr(config, section), name)
                                       for section in SECTIONS
                                       for name in _field_names(getattr(config, section))}}
    for name in choice_fields():
        allowed = field_choices(name)
        if values[name] not in allowed:
            raise ConfigError(f"unknown {name} {values[name]!r}; choose one of: {', '.join(allowed)}")


def validate(config: ExperimentConfig) -> None:
    """Reject values that cannot work, with a message naming the field."""
    _check_types_and_ranges(config)
    optional_positive = {"finetune_lr": config.attribute.finetune_lr,
                         "n_perturbations": config.attribute.n_perturbations,
                         "real_batch": config.distill.real_batch}
    for name, value in optional_positive.items():
        if value is not None and not value > 0:
            raise ConfigError(f"{name} must be > 0 (or none for the default), got {value}")
    if config.distill.distill_steps < 0:
        raise ConfigError(f"distill_steps must be >= 0, got {config.distill.distill_steps}")
    if config.data.n_per_class is not None and config.data.n_per_class < 1:
        raise ConfigError(f"n_per_class must be >= 1, got {config.data.n_per_class}")
    if not 0 <= config.data.noise_fraction <= 1:
        raise ConfigError(f"noise_fraction must be in [0, 1], got {config.data.noise_fraction}")
    if not 0 <= config.data.label_noise < 1:
        raise ConfigError(f"label_noise must be in [0, 1), got {config.data.label_noise}")
    if config.data.noise_relative is not None and not config.data.noise_relative >= 0:
        raise ConfigError(f"noise_relative must be >= 0, got {config.data.noise_relative}")
    if config.train.checkpoint_every < 0:
        raise ConfigError(f"checkpoint_every must be >= 0, got {config.train.checkpoint_every}")
    _check_choices(config)
    if not 0 <= config.distill.soft_label_init < 1:
        raise ConfigError(f"soft_label_init must be in [0, 1), got {config.distill.soft_label_init}")
    if config.distill.converge_tol is not None and not config.distill.converge_tol >= 0:
        raise ConfigError(f"converge_tol must be >= 0 or None, got {config.distill.converge_tol}")
    if not 0 < config.attribute.removal_rate < 1:
        raise ConfigError(f"removal_rate must be in (0, 1), got {config.attribute.removal_rate}")


def torch_dtype(config: ExperimentConfig) -> Any:
    """The ``torch.dtype`` that ``config.model.precision`` names."""
    import torch

    return {"float32": torch.float32, "float64": torch.float64}[config.model.precision]


def field_help(section: type) -> dict[str, str]:
    """Help text of every field of a config section, for the CLI and the docs."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(section)}


def all_fields() -> dict[str, dataclasses.Field]:
    """Every configurable field by name (names are unique across the sections)."""
    sections = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig,
                "cluster": ClusterConfig, "distill": DistillConfig, "attribute": AttributeConfig}
    return {f.name: f for section in sections.values() for f in dataclasses.fields(section)}


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"lr_img=1.0"`` -> ``("lr_img", 1.0)``, typed by the field's annotation; ``none`` -> None."""
    name, sep, raw = text.partition("=")
    fields = all_fields()
    if not sep or name not in fields:
        raise ConfigError(f"--set expects FIELD=VALUE with FIELD one of: {', '.join(sorted(fields))}; "
                          f"got {text!r}")
    return name, parse_value(name, str(fields[name].type), raw)


def parse_value(name: str, annotation: str, raw: str) -> Any:
    """``raw`` typed by a field's annotation (``"int | None"``, ``"float"``, ...); ``none`` -> None."""
    if raw.lower() == "none" and "None" in annotation:
        return None
    kind = annotation.split("|")[0].strip()
    try:
        if kind == "bool":
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1")
        return {"int": int, "float": float, "str": str}[kind](raw)
    except ValueError:
        raise ConfigError(f"{name} expects a {annotation} value, got {raw!r}") from None
