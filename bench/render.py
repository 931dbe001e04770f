"""Render ``tables/`` from ``results/`` alone: Markdown tables (ours beside the paper's, labelled)
and PNG figures for targets that store plot series."""

from __future__ import annotations

import math
from pathlib import Path

from bench.base import TARGETS
from bench.results import Cell, Result
from ddm.cache import atomic_write_text

EXTRA_TEXT = {
    "normalized": "normalized = (method − random) / (oracle − random) against exact retraining, 0 = random, "
                  "1 = oracle",
    "spearman": "spearman = rank correlation of the method's cluster scores with the exact effects, "
                "per query",
    "oracle": "oracle = the best cluster's exact value",
    "random": "random = the exact expectation over all clusters",
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


def _ours(cell: Cell | None, scale: float, digits: int = 3) -> str:
    if cell is None or not cell.values:
        return "-"
    text = _number(cell.mean, scale, digits)
    return f"{text} ± {_number(cell.std, scale)}" if len(cell.values) > 1 else text


def _header(column: str, scale: float) -> str:
    return f"{column} ×{scale:g}" if scale != 1 else column


def main_table(result: Result, scales: dict[str, float]) -> list[str]:
    """Ours and the paper's value per column."""
    header = ["Method"]
    for column in result.columns:
        label = _header(column, scales.get(column, 1.0))
        header += [f"{label} (ours)", f"{label} (paper)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    digits = {column: _digits([result.cells[row][column].mean * scales.get(column, 1.0)
                               for row in result.rows
                               if column in result.cells.get(row, {}) and result.cells[row][column].values])
              for column in result.columns}
    for row in result.rows:
        cells = result.cells.get(row, {})
        line = [row]
        for column in result.columns:
            scale = scales.get(column, 1.0)
            cell = cells.get(column)
            line += [_ours(cell, scale, digits[column]), _number(cell.paper if cell else None)]
        lines.append("| " + " | ".join(line) + " |")
    return lines


def extra_table(result: Result) -> list[str]:
    """Secondary numbers (normalized score vs the oracle, Spearman, ...) where the cells have them."""
    names = [name for name in EXTRA_ORDER
             if any(name in cell.extra for cells in result.cells.values() for cell in cells.values())]
    if not names:
        return []
    header = ["Method"] + [f"{column}: {name}" for column in result.columns for name in names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in result.rows:
        line = [row]
        for column in result.columns:
            cell = result.cells.get(row, {}).get(column)
            for name in names:
                values = cell.extra.get(name) if cell else None
                line.append(_number(sum(values) / len(values)) if values else "-")
        lines.append("| " + " | ".join(line) + " |")
    return lines


def render_markdown(result: Result, scales: dict[str, float] | None = None) -> str:
    if scales is None:
        scales = TARGETS[result.target].column_scale if result.target in TARGETS else {}
    env = result.environment
    seconds = sum(sum(cell.seconds) for cells in result.cells.values() for cell in cells.values())
    lines = [f"# {result.title} — {result.dataset}, scale `{result.scale}`", ""]
    lines += main_table(result, scales)
    lines += ["", "Ours: mean ± sample std over seeds. The paper column is the published number at the "
              "paper's scale (full data, width 128, 30 epochs), printed for orientation only; '-' where the "
              "paper reports none.", ""]
    extra = extra_table(result)
    if extra:
        lines += ["Secondary numbers (means over seeds): " + "; ".join(
            text for name, text in EXTRA_TEXT.items() if name in extra[0]) + ".", ""] + extra + [""]
    query_seeds = [seed + result.query_seed_base for seed in result.seeds]
    seeds_line = f"- seeds: {result.seeds}"
    if result.query_seed_base:
        seeds_line += f" (query seeds {query_seeds})"
    per_seed = ", ".join(f"{seed}: {sec:.0f} s" for seed, sec in env.get("seed_seconds", {}).items()) or "-"
    lines += [seeds_line, f"- code version: `{env.get('code_version')}`, torch "
              f"{env.get('torch_version')}, device {env.get('device')} ({env.get('threads')} threads); "
              f"cells computed by code version(s) "
              f"{', '.join(sorted(set(env.get('cells_code_versions', {}).values()))) or '-'}"
              + _threads_note(env),
              f"- wall time: {result.wall_seconds:.1f} s (this invocation; cached stages reused; per seed: "
              f"{per_seed}), "
              f"{seconds:.1f} s summed over cells when computed", f"- created {result.created}"]
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


def _threads_note(env: dict) -> str:
    """' with N CPU threads' for the cells' CPU thread counts (results of older code did not record them)."""
    counts = sorted({str(n) for n in env.get("cells_threads", {}).values() if n is not None})
    return f" with {' / '.join(counts)} CPU threads" if counts else ""


def table_path(root: Path, result: Result, suffix: str) -> Path:
    protocol = "" if result.protocol in (None, "same-seed") else f"_{result.protocol}"
    return Path(root) / f"{result.target}_{result.dataset}_{result.scale}{protocol}{suffix}"


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
