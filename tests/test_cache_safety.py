"""A hostile cache cannot run code or pass for a valid entry (issue 14).

Payloads load with ``weights_only=True``; ``partial.pt`` is checked against its digest; the manifest
is checked against ``manifest.sha256``; a file the manifest does not list is never loaded.
"""

import hashlib
import json
import pickle

import pytest
import torch

from ddm.cache import MANIFEST, MANIFEST_DIGEST, PARTIAL, PARTIAL_DIGEST, ArtifactCache, torch_bytes
from ddm.errors import CacheError
from ddm.train import resume_state


class Exploit:
    """Unpickling this touches a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def crafted(marker) -> bytes:
    return pickle.dumps({"state": Exploit(marker)})


def saved_entry(tmp_path):
    entry = ArtifactCache(tmp_path / "home").entry("target", {"a": 1})
    entry.save({"trajectory.pt": torch_bytes({"trajectory": torch.zeros(2, 3), "checkpoint_steps": [0, 1]})},
               {"seconds": 1.0})
    return entry


def test_a_crafted_partial_runs_no_code_even_with_a_matching_digest(tmp_path):
    entry = ArtifactCache(tmp_path / "home").entry("retrained", {"b": 2})
    entry.save_partial({"epochs_done": 1})
    marker = tmp_path / "pwned"
    data = crafted(marker)
    (entry.path / PARTIAL).write_bytes(data)
    (entry.path / PARTIAL_DIGEST).write_text(hashlib.sha256(data).hexdigest())
    assert entry.load_partial() is None and not marker.exists()
    assert not (entry.path / PARTIAL).exists()  # discarded: it only costs recomputation


def test_a_partial_without_its_digest_is_discarded(tmp_path):
    entry = ArtifactCache(tmp_path / "home").entry("retrained", {"b": 3})
    entry.save_partial({"epochs_done": 1})
    assert entry.load_partial() == {"epochs_done": 1}
    (entry.path / PARTIAL).write_bytes(torch_bytes({"epochs_done": 7}))  # edited, digest not updated
    assert entry.load_partial() is None


def test_a_malformed_partial_resumes_nothing():
    assert resume_state({"epochs_done": 1, "bogus": 2}) is None
    assert resume_state({"epochs_done": 1, "model_state": "x", "optimizer_state": {}}) is None
    assert resume_state([1, 2]) is None


def test_a_crafted_trajectory_with_a_rewritten_manifest_runs_no_code(tmp_path):
    entry = saved_entry(tmp_path)
    marker = tmp_path / "pwned"
    data = crafted(marker)
    (entry.path / "trajectory.pt").write_bytes(data)
    manifest = json.loads((entry.path / MANIFEST).read_text())  # the attacker fixes every digest
    manifest["files"]["trajectory.pt"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    text = json.dumps(manifest, indent=2, sort_keys=True).encode()
    (entry.path / MANIFEST).write_bytes(text)
    (entry.path / MANIFEST_DIGEST).write_text(hashlib.sha256(text).hexdigest())
    with pytest.raises(CacheError, match="cannot be loaded safely"):
        entry.load_torch("trajectory.pt")
    assert not marker.exists()


def test_an_edited_manifest_is_detected(tmp_path):
    entry = saved_entry(tmp_path)
    manifest = json.loads((entry.path / MANIFEST).read_text())
    manifest["meta"]["seconds"] = 0.001
    (entry.path / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    with pytest.raises(CacheError, match="does not match its digest"):
        entry.load_torch("trajectory.pt")


def test_an_emptied_file_list_with_flipped_payload_is_detected(tmp_path):
    entry = saved_entry(tmp_path)
    payload = bytearray((entry.path / "trajectory.pt").read_bytes())
    payload[-20] ^= 0xFF
    (entry.path / "trajectory.pt").write_bytes(bytes(payload))
    manifest = json.loads((entry.path / MANIFEST).read_text())
    manifest["files"] = {}
    text = json.dumps(manifest, indent=2, sort_keys=True).encode()
    (entry.path / MANIFEST).write_bytes(text)
    with pytest.raises(CacheError, match="does not match its digest"):
        entry.load_torch("trajectory.pt")
    (entry.path / MANIFEST_DIGEST).write_text(hashlib.sha256(text).hexdigest())  # digest fixed too
    with pytest.raises(CacheError, match="does not list trajectory.pt"):
        entry.load_torch("trajectory.pt")


def test_an_entry_without_a_manifest_digest_is_refused_with_how_to_clear_it(tmp_path):
    entry = saved_entry(tmp_path)
    (entry.path / MANIFEST_DIGEST).unlink()
    with pytest.raises(CacheError, match=r"rm -r .*to rebuild it"):
        entry.verify()

