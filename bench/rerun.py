"""The command that regenerates a committed result (``ddm-bench report --commands``).

A result records what its run was (target, dataset, scale, seeds, queries, query seeds, protocol,
the whole config and every method's options), not the command line that made it. To regenerate a
table under new code, or every stale one in a chain, a reader needs that command line back. This
module rebuilds it: the preset's fields the result changed become ``--set FIELD=VALUE``, method
options that differ from their defaults become ``--option METHOD.FIELD=VALUE``, so running it
records the config the result recorded (``tests/test_rerun.py`` checks this for every committed
result). A field the result did not record (it predates the field) takes the default a rerun
records; ``--keep-committed`` is never added: a regeneration recomputes every seed.
"""

from __future__ import annotations

import shlex
from typing import Any

from bench.results import Result
from ddm.config import preset

DEFAULT_QUERIES, DEFAULT_RETRAIN_SEEDS = 20, 3  # `ddm-bench run`'s defaults (bench/cli.py)


def format_value(value: Any) -> str:
    """``value`` as ``--set`` / ``--option`` parse it back (``parse_value``): none, true/false,
    ``repr`` for floats (exact round trip)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    """Every field of a config dict by its (unique) name, the sections dropped."""
    return {name: value for section, fields in config.items() if isinstance(fields, dict)
            and section != "methods" for name, value in fields.items()}


def config_assignments(result: Result) -> list[str]:
    """``FIELD=VALUE`` for every config field the result recorded otherwise than its preset."""
    base = _flat(preset(result.scale, result.dataset).to_dict())
    recorded = _flat(result.config)
    return [f"{name}={format_value(value)}" for name, value in recorded.items()
            if name in base and name != "data_fingerprint" and value != base[name]]


def option_assignments(result: Result) -> list[str]:
    """``METHOD.FIELD=VALUE`` for every method option the result recorded otherwise than its default
    (methods or fields this code no longer has are left out; ``report --check`` names them)."""
    from bench.base import default_method_keys

    defaults = default_method_keys()
    return [f"{method}.{name}={format_value(value)}"
            for method, options in result.config.get("methods", {}).items() if method in defaults
            for name, value in options.items()
            if name in defaults[method] and value != defaults[method][name]]


def rerun_command(result: Result, options: bool = True) -> list[str]:
    """The ``ddm-bench run`` arguments that recompute ``result`` (seeds 0..N-1 only: a result of
    other seeds raises ValueError, no command makes it); ``options=False`` leaves out the method
    options, for a rerun under today's defaults (a result does not record whether a value was an
    explicit ``--option`` or the default of its day)."""
    if result.seeds != list(range(len(result.seeds))):
        raise ValueError(f"seeds {result.seeds} are not 0..N-1: `run --seeds N` cannot recompute them")
    args = ["ddm-bench", "run", result.target, "--dataset", result.dataset, "--scale", result.scale,
            "--seeds", str(len(result.seeds))]
    if result.n_queries != DEFAULT_QUERIES:
        args += ["--queries", str(result.n_queries)]
    if result.query_seed_base:
        args += ["--query-seed-base", str(result.query_seed_base)]
    if result.protocol not in (None, "same-seed"):
        args += ["--protocol", result.protocol]
        if result.retrain_seeds not in (None, DEFAULT_RETRAIN_SEEDS):
            args += ["--retrain-seeds", str(result.retrain_seeds)]
    if _flat(result.config).get("data_fingerprint") is not None:
        args += ["--data-root", "DIR"]  # the files it was computed from (their digest is recorded)
    for assignment in config_assignments(result):
        args += ["--set", assignment]
    for assignment in option_assignments(result) if options else []:
        args += ["--option", assignment]
    return args


def command_line(result: Result, options: bool = True) -> str:
    return shlex.join(rerun_command(result, options))

