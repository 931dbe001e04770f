"""The IDX format of MNIST and Fashion-MNIST, and a dataset entry that reads a directory of it.

IDX: a big-endian header ``0x00 0x00 <dtype> <ndim>`` then ``ndim`` int32 sizes, then the data.
Images are ``0x00000803`` (uint8, n x rows x cols), labels ``0x00000801`` (uint8, n).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ddm.data.base import ArrayImages, DatasetSource, DatasetStatus, RawSplits, missing_data_error
from ddm.data.files import first_existing, head_bytes, read_bytes
from ddm.errors import DataError

IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IDX_UBYTE = 0x08
IDX_NDIM = {"images": 3, "labels": 1}
VAL_FRACTION = 6  # the last 1/6 of IDX train is validation: 10,000 of the standard 60,000


def read_idx(path: Path, kind: str) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw): uint8 [n, rows, cols] for images, [n] for labels."""
    payload = read_bytes(path)
    ndim = IDX_NDIM[kind]
    magic = 0x800 | ndim
    if len(payload) < 4 or payload[:2] != b"\0\0" or payload[2] != IDX_UBYTE or payload[3] != ndim:
        found = payload[:4].hex() if len(payload) >= 4 else f"only {len(payload)} bytes"
        raise DataError(f"{path} is not an IDX {kind} file: magic number should be "
                        f"0x{magic:08x}, found {found}")
    header = 4 + 4 * ndim
    if len(payload) < header:
        raise DataError(f"{path} is truncated: {len(payload)} bytes, shorter than its header")
    dims = tuple(int(size) for size in np.frombuffer(payload, ">i4", count=ndim, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(payload) != expected:
        raise DataError(f"{path} is truncated or corrupted: its header says {dims} "
                        f"({expected} bytes) but the file has {len(payload)} bytes")
    return np.frombuffer(payload, np.uint8, offset=header).reshape(dims)


def idx_header_problem(path: Path, kind: str) -> str | None:
    """None when ``path``'s header is an IDX ``kind`` header (and, uncompressed, its size matches
    the header's dimensions), else what is wrong: the check behind ``data list``."""
    ndim = IDX_NDIM[kind]
    head = head_bytes(path, 4 + 4 * ndim)
    if len(head) < 4 + 4 * ndim or head[:2] != b"\0\0" or head[2] != IDX_UBYTE or head[3] != ndim:
        return f"{path.name} is not an IDX {kind} file (header {head[:4].hex() or 'empty'})"
    if path.suffix != ".gz":
        dims = np.frombuffer(head, ">i4", count=ndim, offset=4)
        if path.stat().st_size != 4 + 4 * ndim + int(np.prod(dims, dtype=np.int64)):
            return f"{path.name} is truncated: its header says {tuple(int(d) for d in dims)}"
    return None


def idx_problem(files: dict[str, Path]) -> str:
    """The first header problem among the four IDX files ("" when none)."""
    problems = (idx_header_problem(path, role.split("_")[1]) for role, path in files.items())
    return next((problem for problem in problems if problem), "")


def idx_files(directory: Path) -> dict[str, Path] | None:
    """The four IDX files in ``directory`` (each raw or ``.gz``), or None if any is missing."""
    files = {}
    for role, stem in IDX_NAMES.items():
        found = first_existing([directory / stem, directory / f"{stem}.gz"])
        if found is None:
            return None
        files[role] = found
    return files


def read_idx_splits(files: dict[str, Path]) -> tuple[np.ndarray, ...]:
    """(train_x, train_y, test_x, test_y) from the four IDX files; images [n, 1, rows, cols]."""
    arrays = []
    for split in ("train", "test"):
        images = read_idx(files[f"{split}_images"], "images")
        labels = read_idx(files[f"{split}_labels"], "labels")
        if len(images) != len(labels):
            raise DataError(f"{files[f'{split}_images']} has {len(images)} images but "
                            f"{files[f'{split}_labels']} has {len(labels)} labels")
        arrays += [images[:, None], labels.astype(np.int64)]
    return tuple(arrays)


@dataclass(frozen=True)
class IdxSource(DatasetSource):
    """An MNIST-like dataset stored as the four IDX files, in the torchvision layout or flat.

    ``signature``: the first ten labels of the standard 60,000-image training file, to catch
    MNIST and Fashion-MNIST files swapped in a flat directory (their file names are identical).
    """

    name: str
    subdir: str  # torchvision's folder: <root>/<subdir>/raw/
    class_names: tuple[str, ...]
    how_to_get: str
    signature: tuple[int, ...]
    system_dirs: tuple[Path, ...] = field(default=())

    def idx_dirs(self, data_root: Path | None) -> list[Path]:
        """Where to look, in order: torchvision layout, flat data_root, system-wide copies."""
        roots = [] if data_root is None else [data_root / self.subdir / "raw", data_root]
        return roots + list(self.system_dirs)

    def find_idx(self, data_root: Path | None) -> tuple[Path, dict[str, Path]] | None:
        for directory in self.idx_dirs(data_root):
            files = idx_files(directory)
            if files is not None:
                return directory, files
        return None

    def looked(self, data_root: Path | None) -> list[str]:
        stems = ", ".join(f"{stem}[.gz]" for stem in IDX_NAMES.values())
        return [f"{directory}/ (IDX files {stems})" for directory in self.idx_dirs(data_root)]

    def status(self, data_root: Path | None) -> DatasetStatus:
        found = self.find_idx(data_root)
        where = str(found[0]) if found else ""
        problem = idx_problem(found[1]) if found else ""
        return DatasetStatus(self.name, found is not None and not problem, where, self.how_to_get, problem)

    def load_raw(self, data_root: Path | None) -> RawSplits:
        found = self.find_idx(data_root)
        if found is None:
            raise missing_data_error(self.name, self.looked(data_root), self.how_to_get)
        return self.raw_from_idx(*found)

    def raw_from_idx(self, directory: Path, files: dict[str, Path]) -> RawSplits:
        """Train = the first 5/6 of IDX train, validation = the last 1/6, test = IDX t10k."""
        train_x, train_y, test_x, test_y = read_idx_splits(files)
        self.check_signature(train_y, directory)
        n_train = len(train_y) - len(train_y) // VAL_FRACTION
        return RawSplits(
            train=ArrayImages(train_x[:n_train]), train_y=train_y[:n_train],
            val=ArrayImages(train_x[n_train:]), val_y=train_y[n_train:],
            test=ArrayImages(test_x), test_y=test_y,
            class_names=self.class_names, source=str(directory),
        )

    def check_signature(self, train_y: np.ndarray, directory: Path) -> None:
        if len(train_y) == 60_000 and tuple(train_y[:10]) != self.signature:
            raise DataError(f"the IDX files in {directory} are not {self.name} (their first "
                            f"training labels are {train_y[:10].tolist()}, {self.name}'s are "
                            f"{list(self.signature)}); put {self.name} under "
                            f"<data-root>/{self.subdir}/raw/")
