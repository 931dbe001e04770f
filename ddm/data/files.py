"""File helpers shared by the dataset readers: gzip, restricted pickles, hashes, header checks.

Every read failure becomes a :class:`DataError` naming the file, never a bare EOFError,
zlib.error or UnpicklingError.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import zlib
from pathlib import Path
from typing import Any

from ddm.errors import DataError

# Dataset pickles (CIFAR, the MNIST pickle) only hold dicts, lists, tuples and numpy arrays, so
# nothing else may be imported while unpickling: a pickle from the internet cannot run code.
_ALLOWED_GLOBALS = {
    ("_codecs", "encode"),  # protocol-2 pickles written by Python 3 store bytes this way
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


def head_bytes(path: Path, n: int) -> bytes:
    """The first ``n`` bytes of a file (of its decompressed content for ``.gz``); b"" if unreadable."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read(n)
        with open(path, "rb") as handle:
            return handle.read(n)
    except (OSError, EOFError, zlib.error):
        return b""


def pickle_header_problem(path: Path) -> str | None:
    """None when ``path`` starts like a pickle (protocol 2+ opcode, or a protocol-0/1 mark or empty
    dict/list), else what is wrong: the check behind ``data list``, reading two bytes."""
    head = head_bytes(path, 2)
    if len(head) == 2 and ((head[0] == 0x80 and 2 <= head[1] <= 5) or head[:1] in (b"(", b"}", b"]")):
        return None
    return f"{path.name} is not a pickle (starts with {head.hex() or 'nothing'})"


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a dataset pickle")
        # numpy 2 renamed numpy.core to numpy._core; old pickles name the old module
        return super().find_class(module.replace("numpy.core", "numpy._core"), name)


def read_bytes(path: Path) -> bytes:
    """The contents of ``path``, decompressed when it ends in ``.gz``."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"cannot read {path}: {err} (truncated or not a valid file; "
                        "delete it and get it again)") from err


def load_pickle(path: Path, *, encoding: str) -> Any:
    """Unpickle ``path`` (gzip when ``.gz``) allowing only containers and numpy arrays."""
    payload = read_bytes(path)
    try:
        return _ArrayUnpickler(io.BytesIO(payload), encoding=encoding).load()
    except Exception as err:  # pickle raises many types (EOFError, ValueError, ...) on bad input
        raise DataError(f"{path} is not a valid dataset pickle "
                        f"({type(err).__name__}: {err})") from err


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def first_existing(candidates: list[Path]) -> Path | None:
    """The first of ``candidates`` that is a file, or None."""
    return next((path for path in candidates if path.is_file()), None)


def as_dict_of_str(obj: Any, path: Path) -> dict[str, Any]:
    """A pickled dict with bytes or str keys, as a dict with str keys."""
    if not isinstance(obj, dict):
        raise DataError(f"{path} holds a {type(obj).__name__}, expected a dict "
                        "(wrong pickle layout)")
    return {key.decode("latin1") if isinstance(key, bytes) else key: value
            for key, value in obj.items()}
