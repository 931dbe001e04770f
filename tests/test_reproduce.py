"""The committed quickstart table reproduces on this machine (slow; CI runs it).

Recomputes seed 0 of the committed digits-smoke Table 1 (README command 1) from an empty cache and
compares every cell with the committed one: 1e-9 relative in float64, 1e-5 in float32 (reduction order
differs between thread counts and CPUs; the default GELU network keeps that at rounding level), and
the same ranking of the rows in every column. A machine whose numbers drift fails here.
"""

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.cli import main

COMMITTED = Path(__file__).resolve().parents[1] / "results" / "table1" / "digits" / "smoke" / "table1.json"
TOLERANCE = {"float32": 1e-5, "float64": 1e-9}  # relative, per cell
ABSOLUTE = 1e-12  # cells that are 0 up to rounding (e.g. a normalized score of exactly 0)
# Measured (issue 19, fourth session): these cells of seed 0 are not the same on every CPU of this
# machine kind, although every other cell is, to 1e-9, and each reproduces bit for bit on one machine
# under 1 or 2 threads. DDM-match dist1 Spearman: -0.016221 on the machine that committed the table,
# -0.016323 on an AMD EPYC with AVX-512, -0.016962 on that EPYC with ATEN_CPU_CAPABILITY=avx2,
# MKL_CBWR=COMPATIBLE and ONEDNN_MAX_CPU_ISA=AVX2. Their distillation and fine-tunes amplify the
# rounding differences of another CPU's kernels. Any other drifting cell fails the test; these
# report an xfail naming the values.
CPU_DEPENDENT = {(row, objective, "spearman") for row in ("DDM-match", "DDM (paper schedule)")
                 for objective in ("dist1", "dist2", "dist3")}


def _first_seed(cells: dict) -> dict[tuple[str, str, str], float]:
    """(row, column, "value" or an extra's name) -> seed 0's number."""
    numbers = {}
    for row, columns in cells.items():
        for column, cell in columns.items():
            numbers[(row, column, "value")] = cell["values"][0]
            numbers.update({(row, column, name): values[0] for name, values in cell["extra"].items()})
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
    drifted = {key: (got[key], value) for key, value in expected.items()
               if not _close(got[key], value, tolerance)}
    assert not (set(drifted) - CPU_DEPENDENT), drifted
    ranking_check(committed, expected, got, tolerance)
    if drifted:  # a known defect, reported on every run where it shows, never silently passed
        pytest.xfail(f"known cross-CPU drift of DDM-match's and the paper schedule's Spearman (issue 19): "
                     f"{ {key: got[key] for key in drifted} } against the committed {drifted}")


def ranking_check(committed: dict, expected: dict, got: dict, tolerance: float) -> None:
    """The rows' ranking in every column: any two rows apart by more than the tolerance keep their order."""
    for column in committed["columns"]:
        values = {row: v for (row, col, name), v in expected.items() if col == column and name == "value"}
        for first in values:
            for second in values:
                gap = values[first] - values[second]
                if abs(gap) > tolerance * max(abs(values[first]), abs(values[second])):
                    assert (got[(first, column, "value")] > got[(second, column, "value")]) == (gap > 0)
