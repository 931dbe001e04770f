"""TinyImageNet (``tiny-imagenet-200``): 200 classes of 64 x 64 RGB JPEGs.

Splits: our validation = the last 1/10 (50 of 500, by sorted file name) of each training class; our
test = the official validation set (the official test set has no labels). Only the JPEGs that are
kept are decoded; the full-training-split channel statistics need every training image once, so
they are cached under ``data_cache()/tinyimagenet/``, keyed by the training files' names and sizes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ddm.data.base import (
    DATASETS,
    DatasetSource,
    DatasetStatus,
    Images,
    RawSplits,
    missing_data_error,
    stats_of_chunks,
)
from ddm.errors import DataError
from ddm.io import atomic_write_bytes
from ddm.paths import data_cache

FOLDER = "tiny-imagenet-200"
SIZE = 64
VAL_FRACTION = 10  # the last 1/10 of each training class (50 of 500) is our validation split
JPEG_SUFFIXES = {".jpeg", ".jpg"}
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


class JpegImages(Images):
    """JPEG files decoded on demand to uint8 [n, 3, 64, 64] (grayscale files become RGB)."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (3, SIZE, SIZE)

    def take(self, rows: np.ndarray) -> np.ndarray:
        images = np.empty((len(rows), 3, SIZE, SIZE), dtype=np.uint8)
        for slot, row in enumerate(rows):
            images[slot] = decode(self.paths[row])
        return images

    def channel_stats(self, what: str) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std (float64 [3]): from the cache, else decoded once and cached."""
        key = files_key(self.paths)
        cached = data_cache() / "tinyimagenet" / f"stats-{key[:16]}.json"
        stored = read_stats(cached, key)
        if stored is not None:
            return stored
        mean, std = stats_of_chunks(self.chunks(), what)
        record = {"key": key, "n_images": len(self.paths), "mean": mean.tolist(),
                  "std": std.tolist()}
        atomic_write_bytes(cached, json.dumps(record, indent=1).encode())
        return mean, std


def decode(path: Path) -> np.ndarray:
    """One JPEG as uint8 [3, 64, 64]."""
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(f"cannot decode {path}: {err}") from err
    if rgb.size != (SIZE, SIZE):
        raise DataError(f"{path} is {rgb.size[0]} x {rgb.size[1]}, expected {SIZE} x {SIZE}")
    return np.asarray(rgb).transpose(2, 0, 1)


def files_key(paths: list[Path]) -> str:
    """SHA-256 over the files' names and sizes: cheap, and changes when the image set changes."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{path.parent.parent.name}/{path.name}\t{path.stat().st_size}\n".encode())
    return digest.hexdigest()


def read_stats(path: Path, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Cached statistics for ``key``, or None (absent or unreadable: they are recomputed)."""
    try:
        record = json.loads(path.read_text())
        if record["key"] == key:
            return np.asarray(record["mean"], np.float64), np.asarray(record["std"], np.float64)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def read_lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {path}: {err}") from err


def class_names(folder: Path, wnids: list[str]) -> tuple[str, ...]:
    """First synonym of each wnid in ``words.txt`` ("goldfish"), or the wnid itself."""
    words = folder / "words.txt"
    names = {}
    if words.is_file():
        for line in read_lines(words):
            wnid, _, text = line.partition("\t")
            names[wnid] = text.split(",")[0].strip() or wnid
    return tuple(names.get(wnid, wnid) for wnid in wnids)


def class_images(folder: Path, wnid: str) -> list[Path]:
    """The training JPEGs of one class, sorted by file name."""
    directory = folder / "train" / wnid / "images"
    if not directory.is_dir():
        raise DataError(f"{directory} is missing: wnids.txt lists {wnid} but it has no images")
    return sorted(path for path in directory.iterdir() if path.suffix.lower() in JPEG_SUFFIXES)


def split_train(folder: Path, wnids: list[str]) -> tuple[list[Path], list[int], list[Path],
                                                         list[int]]:
    """(train paths, train labels, val paths, val labels): the last 1/10 of each class is val."""
    train, train_y, val, val_y = [], [], [], []
    for label, wnid in enumerate(wnids):
        paths = class_images(folder, wnid)
        n_val = len(paths) // VAL_FRACTION
        if n_val == 0:
            raise DataError(f"class {wnid} has {len(paths)} training images in "
                            f"{folder / 'train' / wnid / 'images'}; need at least {VAL_FRACTION}")
        train += paths[:-n_val]
        train_y += [label] * (len(paths) - n_val)
        val += paths[-n_val:]
        val_y += [label] * n_val
    return train, train_y, val, val_y


def official_val(folder: Path, wnids: list[str]) -> tuple[list[Path], list[int]]:
    """The official validation set (our test split), in ``val_annotations.txt`` order."""
    annotations = folder / "val" / "val_annotations.txt"
    label_of = {wnid: label for label, wnid in enumerate(wnids)}
    paths, labels = [], []
    for number, line in enumerate(read_lines(annotations), start=1):
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in label_of:
            raise DataError(f"{annotations} line {number} is {line!r}: expected "
                            "'<file>\\t<wnid>\\t...' with a wnid listed in wnids.txt")
        paths.append(folder / "val" / "images" / fields[0])
        labels.append(label_of[fields[1]])
    return paths, labels


@dataclass(frozen=True)
class TinyImageNetSource(DatasetSource):
    name: str = "tinyimagenet"

    def roots(self, data_root: Path | None) -> list[Path]:
        return ([] if data_root is None else [data_root]) + [data_cache()]

    def find(self, data_root: Path | None) -> Path | None:
        """The first ``tiny-imagenet-200`` folder with wnids.txt, train/ and val annotations."""
        for root in self.roots(data_root):
            folder = root / FOLDER
            if ((folder / "wnids.txt").is_file() and (folder / "train").is_dir()
                    and (folder / "val" / "val_annotations.txt").is_file()):
                return folder
        return None

    def how_to_get(self) -> str:
        return (f"download {URL} and unzip it into --data-root (or {data_cache()}) so that "
                f"<data-root>/{FOLDER}/wnids.txt exists")

    def status(self, data_root: Path | None) -> DatasetStatus:
        folder = self.find(data_root)
        return DatasetStatus(self.name, folder is not None, str(folder or ""), self.how_to_get())

    def load_raw(self, data_root: Path | None) -> RawSplits:
        folder = self.find(data_root)
        if folder is None:
            looked = [f"{root / FOLDER}/ (wnids.txt, train/, val/val_annotations.txt)"
                      for root in self.roots(data_root)]
            raise missing_data_error(self.name, looked, self.how_to_get())
        wnids = [line.strip() for line in read_lines(folder / "wnids.txt")]
        train, train_y, val, val_y = split_train(folder, wnids)
        test, test_y = official_val(folder, wnids)
        return RawSplits(
            train=JpegImages(train), train_y=np.asarray(train_y, np.int64),
            val=JpegImages(val), val_y=np.asarray(val_y, np.int64),
            test=JpegImages(test), test_y=np.asarray(test_y, np.int64),
            class_names=class_names(folder, wnids), source=str(folder),
        )


TINYIMAGENET = DATASETS.register("tinyimagenet")(TinyImageNetSource())
