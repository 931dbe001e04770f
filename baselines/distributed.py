"""Exact retraining on a Ray cluster (``--executor ray``; ``pip install -e '.[ray]'``).

The driver puts the data in Ray's object store once, submits one task per chunk of retraining specs
(``--retrain-batch`` specs per task, vectorized when > 1) and writes each returned theta into its
cache entry itself, so workers need no shared filesystem and no cache; a rerun skips every entry that
is already complete. A task whose worker dies (killed, out of memory, node lost) is retried by Ray up
to ``RAY_TASK_RETRIES`` times; entries written before are kept, so at worst one chunk is recomputed.
Tasks ask for one CPU each, or ``ray_gpus`` of a GPU when set (a worker with a GPU trains on it).

``ray_address`` None starts a local Ray instance with this machine's CPUs (or joins the one this
process already started); "auto" or "ray://host:10001" joins an existing cluster.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ddm.config import ExperimentConfig
from ddm.data import DataSplits
from ddm.errors import ConfigError

if TYPE_CHECKING:
    from baselines.exact import Retrainer, RetrainSpec

RAY_TASK_RETRIES = 3  # Ray resubmits a task whose worker process died, this many times


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install -e '.[ray]'") from None
    return ray


def connect(address: str | None) -> Any:
    """The ``ray`` module, connected (a local instance when ``address`` is None)."""
    ray = _ray()
    if not ray.is_initialized():
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address is not None:
            options["address"] = address
        ray.init(**options)
    return ray


def _chunk_task(config: ExperimentConfig, data: DataSplits, specs: Sequence[RetrainSpec], batch: int,
                fail_marker: str | None) -> list[Tensor]:
    """One Ray task: retrain ``specs`` on this worker's device and return their thetas.

    ``fail_marker`` is a test hook: the first task to find that file missing creates it and kills
    its own worker process, as a crashed node would."""
    from baselines.exact import train_specs

    if fail_marker is not None and not Path(fail_marker).exists():
        Path(fail_marker).touch()
        os._exit(1)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return train_specs(config, data, specs, device, batch)


def ray_retrain(retrainer: Retrainer, pending: list[RetrainSpec], bar: tqdm,
                fail_marker: str | None = None) -> None:
    """Train every pending spec as Ray tasks; the retrainer stores each result as it arrives."""
    ray = connect(retrainer.execution.ray_address)
    task = ray.remote(max_retries=RAY_TASK_RETRIES)(_chunk_task)
    run = retrainer.execution
    options = {"num_gpus": run.ray_gpus} if run.ray_gpus else {"num_cpus": 1}
    data_ref = ray.put(retrainer.data)
    fail_marker = fail_marker or getattr(retrainer, "fail_marker", None)
    running = {}
    for start in range(0, len(pending), run.batch):
        chunk = pending[start:start + run.batch]
        ref = task.options(**options).remote(retrainer.config, data_ref, chunk, run.batch, fail_marker)
        running[ref] = chunk
    while running:
        done, _ = ray.wait(list(running), num_returns=1)
        for ref in done:
            chunk = running.pop(ref)
            for spec, theta in zip(chunk, ray.get(ref), strict=True):
                retrainer.store(spec, theta, "ray worker", f"ray x{len(chunk)}")
            bar.update(len(chunk))
