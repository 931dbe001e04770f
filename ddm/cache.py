"""Content-addressed artifact cache: one directory per (kind, config), written atomically.

Layout: ``<root>/<kind>/<key>/`` holds ``config.json`` (the full config the key was derived from),
the payload files, ``manifest.json`` (size and SHA-256 of every payload file and of ``config.json``)
and ``manifest.sha256`` (the digest of the manifest itself), written last. An entry counts as
complete only when its manifest exists. Loading re-checks the manifest's digest, the config and every
file's size and hash, so a truncated or edited entry (manifest included) is reported
(``CacheError``, naming the entry and how to clear it), never reused. A per-entry lock file
serializes concurrent writers of the same entry; unfinished work is kept in ``partial.pt`` (with its
digest in ``partial.sha256``) so an interrupted stage resumes instead of starting over.

A :class:`Carry` mirrors the small entries (JSON payloads, and the partial state of their unfinished
work) as one JSON file each in a directory a user can commit (``run --checkpoint-dir``), so a long
run stopped on one machine resumes on another whose artifact cache is empty.

Tensors are loaded with ``torch.load(weights_only=True)``: payloads are tensors and plain
containers of them, so a crafted file cannot run code.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import io
import json
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch

from ddm.errors import CacheError
from ddm.io import atomic_write_bytes, atomic_write_text, torch_bytes
from ddm.paths import home

T = TypeVar("T")
MANIFEST = "manifest.json"
MANIFEST_DIGEST = "manifest.sha256"
CONFIG = "config.json"
PARTIAL = "partial.pt"
PARTIAL_DIGEST = "partial.sha256"


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_key(kind: str, config: Mapping[str, Any]) -> str:
    """A short stable key of a config: the first 16 hex digits of its SHA-256."""
    blob = canonical_json({"kind": kind, "config": config}).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


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

    def get_or_compute(self, load: Callable[[], T], compute: Callable[[], T]) -> T:
        """The one way a stage reaches its artifact: under this entry's lock, ``load()`` it when the
        entry is complete, else ``compute()`` it; ``compute`` saves the entry (it may save partial
        progress on the way, so an interrupted stage resumes). Concurrent runs wait for each other
        instead of computing the same entry twice."""
        with self.lock():
            return load() if self.is_complete() else compute()

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
        config_bytes = json.dumps(self.config, indent=2, sort_keys=True).encode()
        config_digest = hashlib.sha256(config_bytes).hexdigest()
        manifest: dict[str, Any] = {"files": {}, "meta": dict(meta or {}), "kind": self.kind,
                                    "key": self.key, "config_sha256": config_digest}
        for name, data in files.items():
            atomic_write_bytes(self.path / name, data)
            manifest["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True).encode()
        # the digest first: a manifest without its digest is never complete-and-valid
        atomic_write_text(self.path / MANIFEST_DIGEST, hashlib.sha256(manifest_bytes).hexdigest() + "\n")
        atomic_write_bytes(self.path / MANIFEST, manifest_bytes)
        for name in (PARTIAL, PARTIAL_DIGEST):
            with contextlib.suppress(FileNotFoundError):
                (self.path / name).unlink()

    def _fault(self, what: str) -> CacheError:
        return CacheError(f"cache entry {self.path} {what}; delete that directory (rm -r {self.path}) to "
                          "rebuild it")

    def manifest(self) -> dict[str, Any]:
        """The entry's manifest, after checking it against its stored digest."""
        path = self.path / MANIFEST
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CacheError(f"cache entry {self.path} is incomplete (no {MANIFEST})") from None
        try:
            digest = (self.path / MANIFEST_DIGEST).read_text().strip()
        except FileNotFoundError:
            raise self._fault(f"has no {MANIFEST_DIGEST} (edited, or an older ddm-bench's)") from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise self._fault(f"has a {MANIFEST} that does not match its digest (edited or corrupted)")
        try:
            manifest = json.loads(data)
        except json.JSONDecodeError as err:
            raise self._fault(f"has a corrupted {MANIFEST} ({err})") from err
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
            raise self._fault(f"has a malformed {MANIFEST}")
        return manifest

    def verify(self) -> dict[str, Any]:
        """Check the manifest's digest, the config, sizes and hashes of every payload file."""
        self._check_config()
        manifest = self.manifest()
        config_path = self.path / CONFIG
        if "config_sha256" in manifest and (not config_path.exists()
                                            or _sha256(config_path) != manifest["config_sha256"]):
            raise self._fault(f"has a {CONFIG} that does not match its manifest")
        for name, expected in manifest["files"].items():
            path = self.path / name
            try:
                size, digest = int(expected["bytes"]), str(expected["sha256"])
            except (KeyError, TypeError, ValueError):
                raise self._fault(f"has a malformed {MANIFEST} entry for {name}") from None
            if not path.exists() or path.stat().st_size != size:
                raise self._fault(f"file {name} is missing or truncated")
            if _sha256(path) != digest:
                raise self._fault(f"file {name} is corrupted (hash mismatch)")
        return manifest

    def load_torch(self, name: str) -> Any:
        """Load a verified payload file written with :func:`torch_bytes` (tensors and plain
        containers only: ``weights_only=True``)."""
        path = self._verified(name)
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # an unpickling refusal or a malformed file, never code execution
            raise self._fault(f"file {name} cannot be loaded safely ({type(err).__name__})") from err

    def _verified(self, name: str) -> Path:
        """The path of payload file ``name`` once the whole entry has been verified."""
        if name not in self.verify()["files"]:
            raise self._fault(f"does not list {name} in its {MANIFEST}")
        return self.path / name

    def load_json(self, name: str) -> Any:
        """Load a verified JSON payload file."""
        path = self._verified(name)
        try:
            return json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise self._fault(f"file {name} is not valid JSON ({type(err).__name__})") from err

    def save_partial(self, state: Any) -> None:
        """Keep unfinished work (atomically, with its digest) so an interrupted stage can resume."""
        self._check_config()
        atomic_write_text(self.path / CONFIG, json.dumps(self.config, indent=2, sort_keys=True))
        data = torch_bytes(state)
        atomic_write_bytes(self.path / PARTIAL, data)
        atomic_write_text(self.path / PARTIAL_DIGEST, hashlib.sha256(data).hexdigest() + "\n")

    def load_partial(self) -> Any | None:
        """The unfinished work of an interrupted run, or None. A partial without a matching digest,
        or one that does not load as plain tensors and containers, is discarded (it only costs
        recomputation)."""
        path = self.path / PARTIAL
        if not path.exists():
            return None
        self._check_config()
        digest_path = self.path / PARTIAL_DIGEST
        try:
            if not digest_path.exists() or _sha256(path) != digest_path.read_text().strip():
                raise ValueError("digest mismatch")
            state = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict):
                raise ValueError("not a dict")
            return state
        except Exception:
            path.unlink(missing_ok=True)
            digest_path.unlink(missing_ok=True)
            return None

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class ArtifactCache:
    """Entries under ``root`` (default ``$DDM_BENCH_HOME`` or ``~/.cache/ddm-bench``)."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else home()

    def entry(self, kind: str, config: Mapping[str, Any]) -> CacheEntry:
        return CacheEntry(self.root, kind, config)


class Carry:
    """Small entries mirrored as ``<root>/<kind>/<key>.json``: the entry's config (a file written for
    another config is refused, as a cache entry is), then either its payload and meta (complete)
    or its partial state: as JSON when the state survives a JSON round trip, else as torch bytes in
    base64 (loaded with ``weights_only=True``, with their digest). The artifact cache stays the
    working copy; the carry is what another machine starts from."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def path(self, entry: CacheEntry) -> Path:
        return self.root / entry.kind / f"{entry.key}.json"

    def _read(self, entry: CacheEntry) -> dict[str, Any] | None:
        path = self.path(entry)
        if not path.exists():
            return None
        try:
            record = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CacheError(f"checkpoint {path} is not valid JSON ({err}); delete it to recompute") from err
        if not isinstance(record, dict) or record.get("config") != entry.config:
            raise CacheError(f"checkpoint {path} was written for a different configuration; refusing to "
                             "reuse it. Delete it to recompute.")
        return record

    def _write(self, entry: CacheEntry, body: dict[str, Any]) -> None:
        record = {"kind": entry.kind, "key": entry.key, "config": entry.config, **body}
        text = json.dumps(record, indent=1, sort_keys=True) + "\n"
        path = self.path(entry)
        if not path.exists() or path.read_text() != text:
            atomic_write_text(path, text)

    def complete(self, entry: CacheEntry) -> tuple[Any, dict[str, Any]] | None:
        """The carried payload and meta of a complete entry, or None."""
        record = self._read(entry)
        if record is None or "payload" not in record:
            return None
        return record["payload"], record.get("meta", {})

    def keep(self, entry: CacheEntry, payload: Any, meta: Mapping[str, Any]) -> None:
        """Carry a complete entry (its partial state, if carried, is dropped)."""
        self._write(entry, {"payload": payload, "meta": dict(meta)})

    def partial(self, entry: CacheEntry) -> dict[str, Any] | None:
        """The carried unfinished work of an entry, or None."""
        record = self._read(entry)
        if record is None or "payload" in record:
            return None
        if "partial" in record:
            return record["partial"]
        data = base64.b64decode(record.get("partial_pt", ""))
        if hashlib.sha256(data).hexdigest() != record.get("partial_sha256"):
            raise CacheError(f"checkpoint {self.path(entry)} has partial state that does not match its "
                             "digest; delete it to recompute")
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)

    def keep_partial(self, entry: CacheEntry, state: dict[str, Any]) -> None:
        """Carry an entry's unfinished work."""
        try:
            plain = json.loads(json.dumps(state)) == state
        except (TypeError, ValueError):
            plain = False
        if plain:
            self._write(entry, {"partial": state})
        else:
            data = torch_bytes(state)
            self._write(entry, {"partial_pt": base64.b64encode(data).decode(),
                                "partial_sha256": hashlib.sha256(data).hexdigest()})

    def sync_partial(self, entry: CacheEntry) -> None:
        """Before an entry is computed: carry the cache's partial state, or hand the carried one to
        the cache when it has none (the cache's is this machine's latest)."""
        local = entry.load_partial()
        if local is not None:
            self.keep_partial(entry, local)
        elif (carried := self.partial(entry)) is not None:
            entry.save_partial(carried)
