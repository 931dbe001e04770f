"""Datasets: ``load_dataset(name, ...)`` gives normalized train / validation / test splits.

Registered names (in ``DATASETS``, the CLI's choices): digits, mnist, fashion-mnist, cifar10,
cifar100, tinyimagenet. ``dataset_status()`` says which are present, where, and how to get the rest.
"""

# Importing each module registers its datasets; the order here is the order `data list` shows.
# isort: off
from ddm.data import digits as _digits  # noqa: F401  (registers "digits")
from ddm.data import mnist as _mnist  # noqa: F401  (registers "mnist", "fashion-mnist")
from ddm.data import cifar as _cifar  # noqa: F401  (registers "cifar10", "cifar100")
from ddm.data import tinyimagenet as _tinyimagenet  # noqa: F401  (registers "tinyimagenet")
# isort: on
from ddm.data.base import (
    DATASETS,
    DatasetInfo,
    DatasetSource,
    DatasetStatus,
    DataSplits,
    RawSplits,
    dataset_status,
    load_dataset,
)

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "DataSplits",
    "DatasetSource",
    "DatasetStatus",
    "RawSplits",
    "dataset_status",
    "load_dataset",
]
