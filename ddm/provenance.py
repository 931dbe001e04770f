"""Code version, library versions and device: recorded beside every artifact and result."""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from ddm import __version__

OUTPUT_DIRS = ("results", "tables")  # written by `ddm-bench run`, committed as reference


@functools.cache
def code_version() -> str:
    """The git commit of this checkout (suffixed ``-dirty`` when it has uncommitted changes),
    or the package version when ddm-bench was installed without its git history.

    Changes under ``results/`` and ``tables/`` do not count: ``ddm-bench run`` rewrites those
    committed files itself, and a multi-target run would otherwise mark its own later cells dirty."""
    return git_version(Path(__file__).resolve().parent.parent)


def git_version(repo: Path) -> str:
    """:func:`code_version` of the checkout at ``repo`` (uncached)."""
    try:
        commit = _git(repo, "rev-parse", "HEAD")
        dirty = _git(repo, "status", "--porcelain", "--untracked-files=no", "--", ".",
                     *(f":(exclude){output}" for output in OUTPUT_DIRS))
    except (OSError, subprocess.CalledProcessError):
        return f"v{__version__}"
    return f"{commit}-dirty" if dirty else commit


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True, timeout=10).stdout.strip()


def peak_memory_gb() -> dict[str, float]:
    """Peak resident memory so far of this process and of its largest finished child (worker
    processes), in GB (10^9 bytes; Linux reports KiB)."""
    import resource

    kib = 1024 / 1e9
    return {"peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kib,
            "peak_rss_children_gb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * kib}


def environment(device: torch.device | str) -> dict[str, Any]:
    """Versions, code version and device."""
    import numpy

    return {
        "code_version": code_version(),
        "ddm_bench_version": __version__,
        "torch_version": str(torch.__version__),  # a plain str: TorchVersion would not load weights_only
        "numpy_version": numpy.__version__,
        "python_version": platform.python_version(),
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
