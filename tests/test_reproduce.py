"""The committed quickstart table reproduces on this machine (slow; CI runs it).

Recomputes seed 0 of the committed digits-smoke Table 1 (README command 1) from an empty cache and
compares every cell with the committed one: 1e-9 relative in float64, 1e-5 in float32 (reduction order
differs between thread counts and CPUs), and the same ranking of the rows in every column; the
Spearman cells of the two rows whose own numerics are chaotic within the spread measured for them
(below). A machine whose numbers drift fails here."""

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.cli import main

COMMITTED = Path(__file__).resolve().parents[1] / "results" / "table1" / "digits" / "smoke" / "table1.json"
TOLERANCE = {"float32": 1e-5, "float64": 1e-9}  # relative, per cell
ABSOLUTE = 1e-12  # cells that are 0 up to rounding (e.g. a normalized score of exactly 0)
# Two rows are chaotic in their own numerics, not in the oracle's: DDM-match's and the paper
# schedule's synset distillation grows a 1e-16 difference in the trained weights (another CPU's
# kernels: 1.3e-15 relative between an AVX-512 EPYC and the same run capped at AVX2) to 1e-3 in 50
# steps, in float64 and with GELU alike (bench/stability.py). Their Spearman cells therefore differ
# between CPUs of this kind (DDM-match dist1, seed 0: -0.016221 committed, -0.016323 on an AVX-512
# EPYC, -0.016962 there capped at AVX2), while every other cell reproduces to 1e-9. Those cells are
# held to the spread the committed stability target measured for their row when its trajectory is
# moved by one ulp: the mean + 3 sample standard deviations over its seeds of the largest shift of
# the row's Spearman cells (results/stability/digits/smoke/stability.json).
CHAOTIC_ROWS = ("DDM-match", "DDM (paper schedule)")
STABILITY = COMMITTED.parents[3] / "stability" / "digits" / "smoke" / "stability.json"


def chaotic_tolerances() -> dict[tuple[str, str, str], float]:
    """(row, objective, "spearman") -> the absolute tolerance of that cell, from the stability result."""
    cells = json.loads(STABILITY.read_text())["cells"]
    committed = json.loads(COMMITTED.read_text())
    assert json.loads(STABILITY.read_text())["config"] == committed["config"]
    tolerances = {}
    for row in CHAOTIC_ROWS:
        shift = cells[row]["cell_shift"]
        bound = shift["mean"] + 3 * shift["std"]
        tolerances.update({(row, objective, "spearman"): bound for objective in committed["columns"]})
    return tolerances


def _first_seed(cells: dict) -> dict[tuple[str, str, str], float]:
    """(row, column, "value" or an extra's name) -> seed 0's number."""
    numbers = {}
    for row, columns in cells.items():
        for column, cell in columns.items():
            numbers[(row, column, "value")] = cell["values"][0]
            numbers.update({(row, column, name): values[0] for name, values in cell["extra"].items()
                            if not name.endswith("_seconds")})  # wall times never reproduce
    return numbers


def _close(got: float, expected: float, tolerance: float) -> bool:
    if math.isnan(expected):
        return math.isnan(got)
    return math.isclose(got, expected, rel_tol=tolerance, abs_tol=ABSOLUTE)


@pytest.mark.slow
def test_seed_0_of_the_committed_digits_smoke_table1_reproduces(tmp_path):
    committed = json.loads(COMMITTED.read_text())
    precision = committed["config"]["model"]["precision"]
    result = CliRunner().invoke(main, [
        "--home", str(tmp_path / "home"), "run", "table1", "--dataset", "digits", "--scale", "smoke",
        "--seeds", "1", "--queries", str(committed["n_queries"]), "--device", "cpu",
        "--results-dir", str(tmp_path / "results"), "--tables-dir", str(tmp_path / "tables")])
    assert result.exit_code == 0, result.output
    ours = json.loads((tmp_path / "results" / "table1" / "digits" / "smoke" / "table1.json").read_text())
    assert ours["config"] == committed["config"]
    expected, got = _first_seed(committed["cells"]), _first_seed(ours["cells"])
    assert expected.keys() == got.keys()
    tolerance = TOLERANCE[precision]
    chaotic = chaotic_tolerances()
    drifted = {key: (got[key], value) for key, value in expected.items()
               if not _close(got[key], value, tolerance) and not (
                   key in chaotic and abs(got[key] - value) <= chaotic[key])}
    assert not drifted, drifted
    ranking_check(committed, expected, got, tolerance)


def ranking_check(committed: dict, expected: dict, got: dict, tolerance: float) -> None:
    """The rows' ranking in every column: any two rows apart by more than the tolerance keep their order."""
    for column in committed["columns"]:
        values = {row: v for (row, col, name), v in expected.items() if col == column and name == "value"}
        for first in values:
            for second in values:
                gap = values[first] - values[second]
                if abs(gap) > tolerance * max(abs(values[first]), abs(values[second])):
                    assert (got[(first, column, "value")] > got[(second, column, "value")]) == (gap > 0)
