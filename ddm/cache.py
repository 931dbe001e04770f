"""Content-addressed artifact cache: one directory per (kind, config), written atomically.

Layout: ``<root>/<kind>/<key>/`` holds ``config.json`` (the full config the key was derived from),
the payload files, and ``manifest.json`` (size and SHA-256 of every payload file), written last.
An entry counts as complete only when its manifest exists. Loading re-checks the config and every
file's size and hash, so a truncated or edited entry is reported (``CacheError``), never reused.
A per-entry lock file serializes concurrent writers of the same entry; unfinished work is kept in
``partial.pt`` so an interrupted stage resumes instead of starting over.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from ddm.errors import CacheError
from ddm.paths import home

MANIFEST = "manifest.json"
CONFIG = "config.json"
PARTIAL = "partial.pt"


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_key(kind: str, config: Mapping[str, Any]) -> str:
    """A short stable key of a config: the first 16 hex digits of its SHA-256."""
    blob = canonical_json({"kind": kind, "config": config}).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see either the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class CacheEntry:
    """One cached artifact: a directory named by the hash of its config."""

    def __init__(self, root: Path, kind: str, config: Mapping[str, Any]) -> None:
        self.kind = kind
        self.config = json.loads(canonical_json(config))
        self.key = config_key(kind, self.config)
        self.path = root / kind / self.key

    def __repr__(self) -> str:
        return f"CacheEntry({self.kind}/{self.key})"

    def is_complete(self) -> bool:
        return (self.path / MANIFEST).exists()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive lock on this entry (blocks while another process holds it)."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path.parent / f"{self.key}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _check_config(self) -> None:
        stored_path = self.path / CONFIG
        if not stored_path.exists():
            return
        try:
            stored = json.loads(stored_path.read_text())
        except json.JSONDecodeError as err:
            raise CacheError(f"{stored_path} is not valid JSON ({err}); delete {self.path}") from err
        if stored != self.config:
            raise CacheError(
                f"cache entry {self.path} was written for a different configuration; "
                f"refusing to reuse it. Delete that directory to rebuild."
            )

    def save(self, files: Mapping[str, bytes], meta: Mapping[str, Any] | None = None) -> None:
        """Write payload files and then the manifest (which marks the entry complete)."""
        self._check_config()
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / CONFIG, json.dumps(self.config, indent=2, sort_keys=True))
        manifest: dict[str, Any] = {"files": {}, "meta": dict(meta or {})}
        for name, data in files.items():
            atomic_write_bytes(self.path / name, data)
            manifest["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        atomic_write_text(self.path / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))
        with contextlib.suppress(FileNotFoundError):
            (self.path / PARTIAL).unlink()

    def manifest(self) -> dict[str, Any]:
        path = self.path / MANIFEST
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise CacheError(f"cache entry {self.path} is incomplete (no {MANIFEST})") from None
        except json.JSONDecodeError as err:
            raise CacheError(f"{path} is corrupted ({err}); delete {self.path}") from err

    def verify(self) -> dict[str, Any]:
        """Check config, sizes and hashes of every payload file; return the manifest."""
        self._check_config()
        manifest = self.manifest()
        for name, expected in manifest["files"].items():
            path = self.path / name
            if not path.exists() or path.stat().st_size != expected["bytes"]:
                raise CacheError(f"cache file {path} is missing or truncated; delete {self.path}")
            if _sha256(path) != expected["sha256"]:
                raise CacheError(f"cache file {path} is corrupted (hash mismatch); delete {self.path}")
        return manifest

    def load_torch(self, name: str) -> Any:
        """Load a verified payload file written with :func:`torch_bytes`."""
        self.verify()
        return torch.load(self.path / name, map_location="cpu", weights_only=False)

    def save_partial(self, state: Any) -> None:
        """Keep unfinished work (atomically) so an interrupted stage can resume."""
        self._check_config()
        atomic_write_text(self.path / CONFIG, json.dumps(self.config, indent=2, sort_keys=True))
        atomic_write_bytes(self.path / PARTIAL, torch_bytes(state))

    def load_partial(self) -> Any | None:
        """The unfinished work of an interrupted run, or None. A corrupt partial is discarded."""
        path = self.path / PARTIAL
        if not path.exists():
            return None
        self._check_config()
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception:  # an unreadable partial only costs recomputation
            path.unlink(missing_ok=True)
            return None

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class ArtifactCache:
    """Entries under ``root`` (default ``$DDM_BENCH_HOME`` or ``~/.cache/ddm-bench``)."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else home()

    def entry(self, kind: str, config: Mapping[str, Any]) -> CacheEntry:
        return CacheEntry(self.root, kind, config)
