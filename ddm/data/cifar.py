"""CIFAR-10 and CIFAR-100 from the standard "python version" pickles: 45k / 5k / 10k, 3 x 32 x 32.

Read directly (not through torchvision, whose md5 checks reject anything but the full release).
Each batch is a dict with bytes keys: b"data" uint8 [n, 3072] = the R, G and B planes of a row-major
32 x 32 image, and b"labels" (CIFAR-10) or b"fine_labels" (CIFAR-100).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ddm.data.base import (
    DATASETS,
    ArrayImages,
    DatasetSource,
    DatasetStatus,
    RawSplits,
    missing_data_error,
)
from ddm.data.files import as_dict_of_str, load_pickle, pickle_header_problem
from ddm.errors import DataError
from ddm.paths import data_cache

SHAPE = (3, 32, 32)
VAL_FRACTION = 10  # the last 1/10 of the training batches is validation: 5,000 of 50,000


@dataclass(frozen=True)
class CifarSource(DatasetSource):
    """One CIFAR variant: its folder, batch files and the dict keys of labels and class names."""

    name: str
    folder: str  # "cifar-10-batches-py" or "cifar-100-python"
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    labels_key: str
    names_key: str
    url: str

    def roots(self, data_root: Path | None) -> list[Path]:
        """``data_root`` first, then ddm-bench's data cache (a default place to unpack to)."""
        return ([] if data_root is None else [data_root]) + [data_cache()]

    def files(self, folder: Path) -> list[Path]:
        return [folder / name for name in (*self.train_files, self.test_file, self.meta_file)]

    def find(self, data_root: Path | None) -> Path | None:
        folders = [root / self.folder for root in self.roots(data_root)]
        return next((folder for folder in folders
                     if all(path.is_file() for path in self.files(folder))), None)

    def how_to_get(self) -> str:
        return (f"download {self.url}, and unpack it into --data-root (or {data_cache()}) so "
                f"that <data-root>/{self.folder}/{self.test_file} exists")

    def status(self, data_root: Path | None) -> DatasetStatus:
        folder = self.find(data_root)
        problems = (pickle_header_problem(path) for path in self.files(folder)) if folder else iter(())
        problem = next((problem for problem in problems if problem), "")
        return DatasetStatus(self.name, folder is not None and not problem, str(folder or ""),
                             self.how_to_get(), problem)

    def load_raw(self, data_root: Path | None) -> RawSplits:
        folder = self.find(data_root)
        if folder is None:
            needed = ", ".join((*self.train_files, self.test_file, self.meta_file))
            looked = [f"{root / self.folder}/ ({needed})" for root in self.roots(data_root)]
            raise missing_data_error(self.name, looked, self.how_to_get())
        train_x, train_y = self.read_batches([folder / name for name in self.train_files])
        test_x, test_y = self.read_batches([folder / self.test_file])
        n_train = len(train_y) - len(train_y) // VAL_FRACTION
        return RawSplits(
            train=ArrayImages(train_x[:n_train]), train_y=train_y[:n_train],
            val=ArrayImages(train_x[n_train:]), val_y=train_y[n_train:],
            test=ArrayImages(test_x), test_y=test_y,
            class_names=self.read_class_names(folder / self.meta_file), source=str(folder),
        )

    def read_batches(self, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
        """Images uint8 [n, 3, 32, 32] and labels int64 [n] of the batch files, concatenated."""
        batches = [self.read_batch(path) for path in paths]
        return (np.concatenate([images for images, _ in batches]),
                np.concatenate([labels for _, labels in batches]))

    def read_batch(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        batch = as_dict_of_str(load_pickle(path, encoding="bytes"), path)
        if "data" not in batch or self.labels_key not in batch:
            raise DataError(f"{path} has keys {sorted(batch)}, expected b'data' and "
                            f"b'{self.labels_key}' (wrong pickle layout)")
        data = np.asarray(batch["data"])
        labels = np.asarray(batch[self.labels_key])
        size = int(np.prod(SHAPE))
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != size:
            raise DataError(f"{path}: b'data' is {data.dtype} {data.shape}, expected uint8 "
                            f"[n, {size}] (wrong pickle layout)")
        if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{path}: {len(data)} images but labels of shape {labels.shape} "
                            f"and type {labels.dtype} (wrong pickle layout)")
        return data.reshape(-1, *SHAPE), labels.astype(np.int64)

    def read_class_names(self, path: Path) -> tuple[str, ...]:
        meta = as_dict_of_str(load_pickle(path, encoding="bytes"), path)
        if self.names_key not in meta:
            raise DataError(f"{path} has keys {sorted(meta)}, expected b'{self.names_key}' "
                            "(wrong pickle layout)")
        return tuple(name.decode() if isinstance(name, bytes) else str(name)
                     for name in meta[self.names_key])


CIFAR10 = DATASETS.register("cifar10")(CifarSource(
    name="cifar10", folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{batch}" for batch in range(1, 6)), test_file="test_batch",
    meta_file="batches.meta", labels_key="labels", names_key="label_names",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
))

CIFAR100 = DATASETS.register("cifar100")(CifarSource(
    name="cifar100", folder="cifar-100-python", train_files=("train",), test_file="test",
    meta_file="meta", labels_key="fine_labels", names_key="fine_label_names",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
))
