"""Render ``tables/`` from ``results/`` alone: Markdown tables (ours beside the paper's, labelled)
and PNG figures for targets that store plot series."""

from __future__ import annotations

import math
from pathlib import Path

from bench.base import TARGETS
from bench.results import Cell, Result, numerics_tag
from bench.stats import RESAMPLES, Interval, paired, ratio_of_means
from ddm.io import atomic_write_text

EXTRA_TEXT = {
    "normalized": "normalized = (method − random) / (oracle − random) against exact retraining, 0 = random, "
                  "1 = oracle",
    "spearman": "spearman = rank correlation of the method's cluster scores with the exact effects, "
                "per query",
    "oracle": "oracle = the best cluster's exact value",
    "random": "random = the exact expectation over all clusters",
    "top1": "topk = share of (seed, query) pairs whose oracle-best cluster is among the method's k "
            "highest scores",
    "top5": "",
    "top10": "",
    "removed": "removed = share of the training images actually removed (whole clusters)",
    "noisy share": "noisy share = fraction of the removed images that carried the added noise",
}
EXTRA_ORDER = tuple(EXTRA_TEXT)


def save_figure(figure, path: Path, title: str, dpi: int = 120) -> None:
    """Title, lay out, write the PNG and free the figure (every plotter ends this way)."""
    import matplotlib.pyplot as plt

    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=dpi)
    plt.close(figure)


def _number(value: float | None, scale: float = 1.0, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    value *= scale
    return f"{value:.{digits}g}" if abs(value) < 100 else f"{value:.1f}"


def _digits(values: list[float], most: int = 6) -> int:
    """Significant digits (3 to ``most``) that tell a column's distinct values apart: Dist3 =
    1/(1 + Dist1) is 0.99998 or 0.999995 at small scale, all "1" at 3 digits."""
    distinct = {value for value in values if math.isfinite(value)}
    for digits in range(3, most):
        if len({f"{value:.{digits}g}" for value in distinct}) == len(distinct):
            return digits
    return most


def _interval_text(interval: Interval | None, scale: float = 1.0, digits: int = 3) -> str:
    """'estimate [low, high]' (the 95 % bootstrap interval), '-' without one."""
    if interval is None:
        return "-"
    return (f"{_number(interval.estimate, scale, digits)} "
            f"[{_number(interval.low, scale, digits)}, {_number(interval.high, scale, digits)}]")


def _ours(cell: Cell | None, scale: float, digits: int = 3) -> str:
    if cell is None or not cell.values:
        return "-"
    interval = cell.interval()
    if interval is not None:  # per-query values stored: the mean with its bootstrap interval
        return _interval_text(interval, scale, digits)
    text = _number(cell.mean, scale, digits)
    return f"{text} ± {_number(cell.std, scale)}" if len(cell.values) > 1 else text


def _ratio_data(cell: Cell) -> bool:
    """Whether the cell holds what the normalized score's ratio of means needs, for every seed."""
    return all(len(cell.queries.get(key, [])) == len(cell.values) > 0
               for key in ("value", "random", "oracle"))


def _extra(cell: Cell | None, name: str) -> str:
    """A secondary number: from the per-query values with its interval where the cell has them
    (normalized: the ratio of means), else the mean of the per-seed values."""
    if cell is None:
        return "-"
    queries = cell.queries
    if name == "normalized" and _ratio_data(cell):
        return _interval_text(ratio_of_means(queries["value"], queries["random"], queries["oracle"]))
    if queries.get(name):
        return _interval_text(cell.interval(name))
    values = cell.extra.get(name)
    return _number(sum(values) / len(values)) if values else "-"


def _header(column: str, scale: float) -> str:
    return f"{column} ×{scale:g}" if scale != 1 else column


def main_table(result: Result, scales: dict[str, float], paper: bool = True) -> list[str]:
    """Ours and (``paper``) the paper's value per column."""
    header = ["Method"]
    for column in result.columns:
        label = _header(column, scales.get(column, 1.0))
        header += [f"{label} (ours)", f"{label} (paper)"] if paper else [label]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    digits = {column: _digits([result.cells[row][column].mean * scales.get(column, 1.0)
                               for row in result.rows
                               if column in result.cells.get(row, {}) and result.cells[row][column].values])
              for column in result.columns}
    for row in result.rows:
        cells = result.cells.get(row, {})
        if not cells:  # a row this run does not compute (e.g. the fresh-seed noise floor under same-seed)
            continue
        line = [row]
        for column in result.columns:
            scale = scales.get(column, 1.0)
            cell = cells.get(column)
            line += [_ours(cell, scale, digits[column])]
            line += [_number(cell.paper if cell else None)] if paper else []
        lines.append("| " + " | ".join(line) + " |")
    return lines


def extra_table(result: Result) -> list[str]:
    """Secondary numbers (normalized score vs the oracle, Spearman, ...) where the cells have them."""
    names = [name for name in EXTRA_ORDER
             if any(name in cell.extra or name in cell.queries
                    or (name == "normalized" and _ratio_data(cell))
                    for cells in result.cells.values() for cell in cells.values())]
    if not names:
        return []
    header = ["Method"] + [f"{column}: {name}" for column in result.columns for name in names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in result.rows:
        if not result.cells.get(row):
            continue
        line = [row]
        for index, column in enumerate(result.columns):
            cell = result.cells.get(row, {}).get(column)
            for name in names:
                same = _same_series(result, row, name, result.columns[:index], cell)
                line.append(f"= {same}" if same else _extra(cell, name))
        lines.append("| " + " | ".join(line) + " |")
    return lines


def effective_queries(effects: list[float]) -> float:
    """(sum |o|)^2 / sum o^2 of per-query oracle effects ``o``: the number of equally weighted
    queries that would give the same spread, n when every query's effect is equal, 1 when one
    query holds all of it (nan when all are 0). A ratio of means weighs each query by its oracle
    effect, so it rests on about this many queries."""
    total, squares = sum(abs(v) for v in effects), sum(v * v for v in effects)
    return total**2 / squares if squares > 0 else math.nan


def concentration_lines(result: Result) -> list[str]:
    """Where each column's oracle effect sits: the effective number of queries per seed and pooled
    (:func:`effective_queries`) of the oracle's gain over random per query, o - r (the weights of
    the normalized ratio of means), from the first row storing both per-query series (rows scored
    by another oracle, ``unpaired_suffix``, excluded)."""
    suffix = TARGETS[result.target].unpaired_suffix if result.target in TARGETS else None
    parts = []
    for column in result.columns:
        cell = next((cells[column] for row, cells in result.cells.items()
                     if column in cells and {"oracle", "random"} <= set(cells[column].queries)
                     and not (suffix and row.endswith(suffix))), None)
        if cell is None:
            continue
        gains = [[o - r for o, r in zip(oracle, random, strict=True)]
                 for oracle, random in zip(cell.queries["oracle"], cell.queries["random"], strict=True)]
        seeds = ", ".join(_number(effective_queries(values), digits=2) for values in gains)
        pooled = [v for values in gains for v in values]
        parts.append(f"{column}: {seeds} of {len(gains[0])} per seed, pooled "
                     f"{_number(effective_queries(pooled), digits=3)} of {len(pooled)}")
    if not parts:
        return []
    return ["Where the oracle's effect sits: the effective number of queries, (Σ|g|)² / Σg² over the "
            "oracle's per-query gain over random g = oracle − random (n when all are equal, 1 when one "
            "query holds everything). The normalized ratio of means weighs each query by g, so it rests "
            "on about this many. " + "; ".join(parts) + ".", ""]


def _same_series(result: Result, row: str, name: str, earlier: list[str], cell: Cell | None) -> str | None:
    """The earlier column whose per-query ``name`` values this cell repeats (to 1e-9): Dist3 is a
    monotone transform of Dist1, so its Spearman is Dist1's and is not printed as separate evidence."""
    if cell is None or name != "spearman" or not cell.queries.get(name):
        return None
    for column in earlier:
        other = result.cells.get(row, {}).get(column)
        series = other.queries.get(name) if other else None
        if series and len(series) == len(cell.queries[name]) and all(
                len(a) == len(b) and all(math.isclose(x, y, rel_tol=0, abs_tol=1e-9) or x != x and y != y
                                         for x, y in zip(a, b, strict=True))
                for a, b in zip(series, cell.queries[name], strict=True)):
            return column
    return None


def paired_table(result: Result, scales: dict[str, float]) -> list[str]:
    """Each of the target's ``paired_rows`` against every other row judged by the same oracle, on
    the same (seed, query) pairs: the mean difference of the cell's value with its interval, and the
    share of pairs the paired row wins (ties half)."""
    target = TARGETS[result.target] if result.target in TARGETS else None  # noqa: SIM401 (a Registry)
    if target is None or not target.paired_rows:
        return []
    lines = ["| Row | against | " + " | ".join(f"{_header(c, scales.get(c, 1.0))}: difference [95 %], wins"
                                                  for c in result.columns) + " |",
             "|" + "---|" * (2 + len(result.columns))]
    for row in (r for r in target.paired_rows if r in result.cells):
        for other in result.rows:
            if other == row or other not in result.cells or (
                    target.unpaired_suffix and other.endswith(target.unpaired_suffix)):
                continue
            texts = [_paired_text(result.cells[row].get(column), result.cells[other].get(column),
                                  scales.get(column, 1.0)) for column in result.columns]
            if any(text != "-" for text in texts):
                lines.append(f"| {row} | {other} | " + " | ".join(texts) + " |")
    return lines if len(lines) > 2 else []


def _paired_text(cell: Cell | None, other: Cell | None, scale: float) -> str:
    mine, theirs = (c.queries.get("value") if c else None for c in (cell, other))
    if not mine or not theirs or len(mine) != len(theirs) or len(mine) != len(cell.values) or any(
            len(a) != len(b) for a, b in zip(mine, theirs, strict=True)):
        return "-"
    comparison = paired(mine, theirs)
    if comparison is None:
        return "-"
    return f"{_interval_text(comparison.difference, scale)}, {comparison.win_rate:.0%}"


PERTURB_TEXT = {"jitter": "theta_0 moved by one unit in the last place (seeded)",
                "threads=1": "1 CPU thread instead of the run's", "threads=2": "2 CPU threads instead of 1"}
FLOOR_TEXT = ("Oracle self-agreement (its numerical noise floor): the target and the same removals retrained "
              "a second time with {perturb}, on {clusters} of the K = {k} clusters; Spearman = per-query "
              "rank correlation of the exact effects with the rerun's, "
              "same top = share of queries whose extreme cluster is the same, rerun/effect = mean Dist1 "
              "between a removal and its rerun over the mean deletion effect. Means over seeds.")
# The same for an oracle of joint removals (the LDS's keep-masks), whose "objectives" are its columns.
MASK_FLOOR_TEXT = ("Oracle self-agreement (its numerical noise floor): {clusters} of the {k} keep-masks of "
                   "each column retrained a second time with {perturb}; Spearman = per-query rank "
                   "correlation across those masks of the retrained true-class margins with the rerun's, "
                   "same top = share of queries whose highest-margin mask is the same, rerun/effect = mean "
                   "Dist1 between a mask's outputs and its rerun over the mean Dist1 between a mask's "
                   "outputs and the target's. Means over seeds.")


ACCURACY_FLOOR_TEXT = ("Oracle self-agreement (its numerical noise floor): each method's largest removal "
                       "set ({clusters} distinct sets for {k} methods, first seed) retrained a second time "
                       "with {perturb}; largest gap = the largest difference of test accuracy between a "
                       "set's two retrainings (percentage points, over sets and seeds), same prediction = "
                       "share of test images both retrainings classify alike (mean over sets and seeds).")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


_EFFECTS = (("spearman", "Spearman", _mean), ("top_agree", "same top", _mean),
            ("relative_dist1", "rerun/effect", _mean))
# A floor's unit (what was retrained twice) -> its explanation, what its "objectives" are, and per
# measured field: its key, its header, how seeds combine.
FLOOR_UNITS = {"clusters": (FLOOR_TEXT, "objective", _EFFECTS),
               "masks": (MASK_FLOOR_TEXT, "column", _EFFECTS),
               "accuracy": (ACCURACY_FLOOR_TEXT, "measure",
                            (("max_accuracy_gap", "largest gap (points)", max),
                             ("prediction_agreement", "same prediction", _mean)))}


def floor_table(result: Result) -> list[str]:
    """The numerical floors each seed stored (``series[seed]["floors"]``), combined over seeds."""
    floors: dict[str, list[dict]] = {}
    for series in result.series.values():
        for label, floor in (series.get("floors") or {}).items():
            floors.setdefault(label, []).append(floor)
    if not floors:
        return []
    first = next(iter(floors.values()))[0]
    perturb = PERTURB_TEXT.get(first["perturb"], first["perturb"])
    text, kind, fields = FLOOR_UNITS[first.get("unit", "clusters")]
    lines = [text.format(perturb=perturb, clusters=first["clusters"], k=first["n_clusters"]), "",
             f"| oracle | numerics | {kind} | " + " | ".join(header for _, header, _ in fields) + " |",
             "|---" * (3 + len(fields)) + "|"]
    for label, per_seed in floors.items():
        for objective in per_seed[0]["objectives"]:
            text = [_number(combine([floor["objectives"][objective][name] for floor in per_seed]), digits=4)
                    for name, _, combine in fields]
            lines.append(f"| {label} | {per_seed[0]['numerics']} | {objective} | " + " | ".join(text) + " |")
    return lines + [""]


PAPER_NOTE = ("The paper column is the published number at the paper's scale (full data, width 128, 30 "
              "epochs), printed for orientation only; '-' where the paper reports none.")
# Targets that run another benchmark's own models at its own precision (the suite's fields do not apply).
NUMERICS_NOTES = {"lds-standard": "- numerics: float32 (dattri's models and training functions, as its "
                                  "benchmark runs them; the suite's precision and activation fields do not "
                                  "apply)"}
# Targets whose "(paper)" columns are another publication's numbers (their notes say whose).
PAPER_NOTES = {"lds-standard": "The '(paper)' columns are dattri's published values at dattri's own "
                               "setting (the notes below say where they come from), printed for "
                               "orientation only; '-' where dattri reports none."}


def render_markdown(result: Result, scales: dict[str, float] | None = None) -> str:
    if scales is None:
        scales = TARGETS[result.target].column_scale if result.target in TARGETS else {}
    env = result.environment
    seconds = sum(sum(cell.seconds) for cells in result.cells.values() for cell in cells.values())
    lines = [f"# {result.title} — {result.dataset}, scale `{result.scale}`", ""]
    paper = TARGETS[result.target].paper_columns if result.target in TARGETS else True
    lines += main_table(result, scales, paper)
    intervals = any(cell.interval() for cells in result.cells.values() for cell in cells.values())
    summary = (f"Ours: mean over (seed, query) with its 95 % bootstrap interval [low, high] ({RESAMPLES} "
               "replicates; seeds resampled, then queries within each drawn seed; bench/stats.py)"
               + ("; rows without per-query values: mean ± sample std over seeds." if any(
                   not cell.interval() for cells in result.cells.values() for cell in cells.values())
                  else ".")) if intervals else "Ours: mean ± sample std over seeds."
    lines += ["", summary + (" " + PAPER_NOTES.get(result.target, PAPER_NOTE) if paper else ""), ""]
    extra = extra_table(result)
    if extra:
        how = ("means over seeds, or with per-query values their 95 % interval; normalized then the "
               "ratio of means" if intervals else "means over seeds")
        lines += [f"Secondary numbers ({how}): " + "; ".join(
            text for name, text in EXTRA_TEXT.items() if text and name in extra[0]) + ".", ""] + extra + [""]
        lines += concentration_lines(result)
    pairs = paired_table(result, scales)
    if pairs:
        lines += ["Paired comparisons over the same (seed, query) pairs: the mean difference of the "
                  "row's value minus the other's, with its 95 % bootstrap interval, and the share of "
                  "pairs the row wins (ties count half).", ""] + pairs + [""]
    lines += floor_table(result)
    query_seeds = [seed + result.query_seed_base for seed in result.seeds]
    seeds_line = f"- seeds: {result.seeds}"
    if result.query_seed_base:
        seeds_line += f" (query seeds {query_seeds})"
    per_seed = ", ".join(f"{seed}: {sec:.0f} s" for seed, sec in env.get("seed_seconds", {}).items()) or "-"
    lines += [seeds_line, NUMERICS_NOTES.get(result.target) or numerics_line(result.config.get("model", {})),
              f"- code version: `{env.get('code_version')}`, torch "
              f"{env.get('torch_version')}, device {env.get('device')} ({env.get('threads')} threads); "
              f"cells computed by code version(s) "
              f"{', '.join(sorted(set(env.get('cells_code_versions', {}).values()))) or '-'}"
              + _threads_note(env),
              f"- wall time: {result.wall_seconds:.1f} s (this invocation; cached stages reused; per seed: "
              f"{per_seed}), "
              f"{seconds:.1f} s summed over cells when computed" + _memory_note(env),
              f"- created {result.created}"]
    lines += [f"- {note}" for note in result.notes]
    lines += ["", f"Reproduce: `{reproduce_command(result)}`", ""]
    return "\n".join(lines)


def reproduce_command(result: Result) -> str:
    """The `ddm-bench run` line that recreates ``result``: its preset plus a --set per changed field."""
    from ddm.config import preset

    words = ["ddm-bench", "run", result.target, "--dataset", result.dataset, "--scale", result.scale,
             "--seeds", str(len(result.seeds))]
    if result.n_queries is not None:
        words += ["--queries", str(result.n_queries)]
    if result.query_seed_base:
        words += ["--query-seed-base", str(result.query_seed_base)]
    if result.protocol not in (None, "same-seed"):
        words += ["--protocol", result.protocol, "--retrain-seeds", str(result.retrain_seeds)]
    base = preset(result.scale, result.dataset).to_dict()
    for section, fields in result.config.items():
        if not isinstance(fields, dict) or section not in base:  # e.g. "methods": not --set fields
            continue
        for name, value in fields.items():
            if base.get(section, {}).get(name) != value:
                text = "none" if value is None else str(value).lower() if isinstance(value, bool) else value
                words += ["--set", f"{name}={text}"]
    return " ".join(words)


def numerics_line(model: dict) -> str:
    """Which precision and activation computed the cells (a result older than those fields: float32, relu)."""
    if "precision" not in model:
        return ("- numerics: float32, activation relu (computed before the precision and activation fields "
                "existed, against a float32 ReLU oracle: not current under the float64 default)")
    return f"- numerics: {model['precision']}, activation {model['activation']}"


def _memory_note(env: dict) -> str:
    """'; peak resident memory X GB' when the result recorded it (this invocation's, so a rerun from
    the cache records less than the cold run did)."""
    if "peak_rss_gb" not in env:
        return ""
    children = env.get("peak_rss_children_gb", 0.0)
    extra = f" (largest worker process {children:.2f} GB)" if children > 0.01 else ""
    kept = env.get("kept_from")
    if kept:  # `run --keep-committed`: some seeds come from an earlier run's result file
        seeds = ", ".join(str(seed) for seed in kept["kept_seeds"])
        peak = kept.get("peak_rss_gb")
        extra += (f"; seed(s) {seeds} kept from the result created {kept['created']} (their per-seed "
                  f"times are that run's" + (f", its peak resident memory {peak:.2f} GB)" if peak else ")"))
    return f"; peak resident memory {env['peak_rss_gb']:.2f} GB{extra}"


def _threads_note(env: dict) -> str:
    """' with N CPU threads' for the cells' CPU thread counts (results of older code did not record them)."""
    counts = sorted({str(n) for n in env.get("cells_threads", {}).values() if n is not None})
    return f" with {' / '.join(counts)} CPU threads" if counts else ""


def table_path(root: Path, result: Result, suffix: str) -> Path:
    protocol = "" if result.protocol in (None, "same-seed") else f"_{result.protocol}"
    numerics = numerics_tag(result.config)
    return Path(root) / f"{result.target}_{result.dataset}_{result.scale}{protocol}{numerics}{suffix}"


def render_result(result: Result, tables_dir: Path) -> list[Path]:
    """Write the Markdown table (and the PNG when the target plots) for one result."""
    tables_dir = Path(tables_dir)
    tables_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if result.rows:
        path = table_path(tables_dir, result, ".md")
        atomic_write_text(path, render_markdown(result))
        written.append(path)
    path = table_path(tables_dir, result, ".png")
    if result.target in TARGETS and TARGETS[result.target]().plot(result, path):
        written.append(path)
    return written
