"""``ddm-bench run TARGET``: one runner for every registered target (tables, figures, timings).

The runner loops the seeds, caches each seed's cells in the artifact cache (so an interrupted
multi-seed run resumes at the seed it was on, inside it where the target keeps parts of a seed
(``BenchTarget.resume_seed``), and every expensive stage inside a seed is cached by its own key),
attaches each target's own paper values for the labelled column, writes ``results/``
and renders ``tables/``. It sits on top of ``bench/``: it imports the targets, nothing imports it
but the CLI.

Seed ``s`` replaces every seed of the config (training, clustering, distillation, perturbations) and
picks the query set; the data subset stays fixed, so seeds measure the method's own randomness and
the target's training noise.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import bench.targets  # noqa: F401  (registers every target)
from bench.base import TARGETS, BenchTarget, CellValues, RunContext
from bench.render import render_result
from bench.results import Result, find_results, load_result, numerics_tag, result_path, write_result
from bench.staleness import code_digest
from ddm.provenance import environment, peak_memory_gb
from ddm.stages import schemas
from ddm.train import resolve_device


def _missing_libraries() -> list[str]:
    """The method libraries that do not import here, sorted (empty with the ``methods`` extra)."""
    import baselines  # noqa: F401  (declares the baselines)
    from baselines.library import available
    from ddm.attributor import METHODS

    modules = {getattr(METHODS[name], "module", None) for name in METHODS.names()} - {None}
    return sorted(module for module in modules if not available(module))


def _seed_cells(target: BenchTarget, ctx: RunContext,
                seed: int) -> tuple[CellValues, dict[str, Any], str, int | None]:
    """One seed's cells, figure series, and the code version and CPU thread count that computed
    them (float32 results depend on the thread count's reduction order), cached under (target,
    config, method options, seed, queries, the code of every source `report --check` watches for
    the target) so a rerun under the same code skips the seed."""
    fields = {"target": target.name, "seed": seed, "n_queries": ctx.n_queries, "scale": ctx.config.scale,
              "methods": ctx.method_keys(), "query_seed_base": ctx.query_seed_base,
              "data_fingerprint": ctx.data_identity(),
              "oracle": ctx.oracle.key() if target.retrains else None,
              "floor_clusters": ctx.floor_clusters if target.retrains else None,
              "code": code_digest(target.name),
              # a seed computed without the methods extra lacks its libraries' rows: keyed apart, so
              # it is not reused once the extra is installed (with the extra the key is unchanged)
              **({"missing_libraries": missing} if (missing := _missing_libraries()) else {})}

    def compute(partial: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        cells, series = target.resume_seed(ctx, seed, partial)
        env = environment(resolve_device(ctx.device))
        return ({"cells": cells, "series": series, "code_version": env["code_version"]},
                {"target": target.name, "seed": seed, **env})

    stored, meta = ctx.resolver.get("cells", ctx.config, fields, compute,
                                    lambda payload, meta: (payload, meta))
    # the meta holds the computing environment (float32 results depend on the thread count)
    return stored["cells"], stored["series"], stored["code_version"], meta.get("threads")


def _normalized(data: Any) -> Any:
    """``data`` as its JSON round trip (tuples become lists), for comparing configs."""
    return json.loads(json.dumps(data))


KeptSeed = tuple[CellValues, dict[str, Any], str, int | None, float]


def committed_seeds(result: Result, ctx: RunContext) -> tuple[dict[int, KeptSeed], dict[str, Any]]:
    """The seeds of the result file already at ``result``'s path that ``result`` may keep instead of
    recomputing (``run --keep-committed``): only when that file was computed under the same
    config, methods, queries, protocol, data and stage schemas, and holds one value per seed in
    every cell and extra, so a seed added to a committed table on a fresh clone does not recompute
    the others. Returns
    ``{seed: (cells, series, code version, threads, seconds)}``, each seed as its run recorded it,
    and what the file recorded of its own run (created, wall time, peak memory)."""
    path = result_path(ctx.results_dir, result.target, result.dataset, result.scale, result.protocol,
                       numerics_tag(result.config))
    if not path.exists() or ctx.data_identity() is not None or ctx.floor_clusters is not None:
        return {}, {}
    old = load_result(path)
    same = (_normalized(old.config) == _normalized(result.config) and old.n_queries == result.n_queries
            and old.query_seed_base == result.query_seed_base and old.protocol == result.protocol
            and old.retrain_seeds == result.retrain_seeds
            # computed under the stage schemas this code has (a kept seed is stamped with them)
            and old.environment.get("stages") == schemas(TARGETS[result.target].stages))
    n = len(old.seeds)
    aligned = all(len(cell.values) == n
                  and all(len(v) == n for v in (*cell.extra.values(), *cell.queries.values()))
                  for columns in old.cells.values() for cell in columns.values())
    if not (same and aligned):
        return {}, {}
    kept = {}
    for index, seed in enumerate(old.seeds):
        cells: CellValues = {}
        for row, columns in old.cells.items():
            for column, cell in columns.items():
                cells.setdefault(row, {})[column] = {
                    "value": cell.values[index], "seconds": cell.seconds[index],
                    **{name: values[index] for name, values in cell.extra.items()}}
                if cell.queries:
                    cells[row][column]["queries"] = {name: values[index]
                                                     for name, values in cell.queries.items()}
        env = old.environment
        kept[seed] = (cells, old.series.get(str(seed), {}),
                      env.get("cells_code_versions", {}).get(str(seed), env.get("code_version")),
                      env.get("cells_threads", {}).get(str(seed), env.get("threads")),
                      env.get("seed_seconds", {}).get(str(seed), float("nan")))
    return kept, {"created": old.created, "wall_seconds": old.wall_seconds,
                  "peak_rss_gb": old.environment.get("peak_rss_gb")}


def run_target(name: str, ctx: RunContext, seeds: list[int], keep_committed: bool = False) -> Result:
    """Run ``name`` for every seed, write its result JSON/CSV and render its table. With
    ``keep_committed`` a seed the result file already holds under the same config
    (:func:`committed_seeds`) is taken from it instead of the cache or a recomputation."""
    target = TARGETS[name]()
    start = time.perf_counter()
    result = Result(target=name, dataset=ctx.config.data.dataset, scale=ctx.config.scale,
                    title=target.title, description=target.description(), rows=list(target.rows),
                    columns=list(target.columns), cells={}, seeds=list(seeds),
                    config={**ctx.config.to_dict(), "methods": ctx.method_keys()},
                    environment=environment(resolve_device(ctx.device)),
                    notes=target.notes(ctx) + ([ctx.protocol_note()] if target.retrains else []),
                    n_queries=ctx.n_queries, query_seed_base=ctx.query_seed_base,
                    protocol=ctx.protocol if target.retrains else None,
                    retrain_seeds=(ctx.oracle.retrain_seeds
                                   if target.retrains and ctx.protocol == "fresh-seed" else None))
    kept, kept_run = committed_seeds(result, ctx) if keep_committed else ({}, {})
    if kept:  # what the file they came from recorded of its own run
        result.environment["kept_from"] = {**kept_run, "kept_seeds": [s for s in seeds if s in kept]}
    for seed in seeds:
        seed_start = time.perf_counter()
        if seed in kept:
            cells, series, version, threads, seconds = kept[seed]
        else:
            cells, series, version, threads = _seed_cells(target, ctx, seed)
            # this invocation's wall time per seed (cached stages make a rerun's seeds fast)
            seconds = time.perf_counter() - seed_start
        result.environment.setdefault("cells_code_versions", {})[str(seed)] = version
        result.environment.setdefault("cells_threads", {})[str(seed)] = threads
        result.environment.setdefault("seed_seconds", {})[str(seed)] = seconds
        for row, columns in cells.items():
            for column, numbers in columns.items():
                numbers = dict(numbers)
                result.cell(row, column).add(numbers.pop("value"), numbers.pop("seconds", 0.0), **numbers)
        result.series[str(seed)] = series
    # rows this run computes (the fresh-seed noise floor, the ReLU rows of a smooth network are optional)
    result.rows = [row for row in target.rows if row in result.cells] or result.rows
    for row, columns in result.cells.items():
        for column, cell in columns.items():
            cell.paper = target.paper_value(result.dataset, row, column)
    result.environment["stages"] = schemas(target.stages)  # what `report --check` compares
    result.wall_seconds = time.perf_counter() - start
    result.environment.update(peak_memory_gb())  # of the whole invocation so far: an upper bound
    write_result(result, ctx.results_dir)
    render_result(result, ctx.tables_dir)
    return result


def render_all(results_dir: Path, tables_dir: Path) -> list[Path]:
    """Render every result under ``results_dir`` (``ddm-bench report``)."""
    written = []
    for path in find_results(results_dir):
        written += render_result(load_result(path), tables_dir)
    return written
