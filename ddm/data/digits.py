"""scikit-learn's bundled 8 x 8 digits (1,797 images): no files, no download, seconds to train.

A fixed stratified split: 60 % train / 20 % validation / 20 % test, rows kept in dataset order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from ddm.data.base import DATASETS, ArrayImages, DatasetSource, DatasetStatus, RawSplits

SOURCE = "sklearn.datasets.load_digits"
SPLIT_SEED = 0  # fixed: the split is part of the benchmark's definition, not an experiment knob
PIXEL_MAX = 16.0  # load_digits pixels are counts 0..16


def split_rows(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified (train, val, test) rows, 60/20/20 %, each sorted ascending."""
    rows = np.arange(len(labels))
    rest, test = train_test_split(rows, test_size=0.2, stratify=labels, random_state=SPLIT_SEED)
    train, val = train_test_split(rest, test_size=0.25, stratify=labels[rest],
                                  random_state=SPLIT_SEED)
    return np.sort(train), np.sort(val), np.sort(test)


@dataclass(frozen=True)
class DigitsSource(DatasetSource):
    name: str = "digits"

    def status(self, data_root: Path | None) -> DatasetStatus:
        return DatasetStatus(self.name, True, f"{SOURCE} (bundled with scikit-learn)",
                             "bundled with scikit-learn")

    def load_raw(self, data_root: Path | None) -> RawSplits:
        """Images float32 [n, 1, 8, 8] in [0, 1]; ``data_root`` is ignored (nothing to find)."""
        bunch = load_digits()
        images = (bunch.images / PIXEL_MAX).astype(np.float32)[:, None]
        labels = bunch.target.astype(np.int64)
        train, val, test = split_rows(labels)
        return RawSplits(
            train=ArrayImages(images[train]), train_y=labels[train],
            val=ArrayImages(images[val]), val_y=labels[val],
            test=ArrayImages(images[test]), test_y=labels[test],
            class_names=tuple(str(name) for name in bunch.target_names), source=SOURCE,
        )


DIGITS = DATASETS.register("digits")(DigitsSource())
