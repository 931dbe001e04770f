"""The benchmark runner: results as data, rendering from results only, `run` / `list` / `report`."""

import json
import math

import pytest
from click.testing import CliRunner

from bench.cli import main
from bench.render import render_markdown
from bench.results import Cell, Result, find_results, load_result, write_result
from ddm.errors import DataError

# K = 20 clusters, 1 epoch on 200 digits: every table runs in seconds.
TINY_RUN = ["--dataset", "digits", "--scale", "smoke", "--epochs", "2", "--width", "8", "--n-per-class", "20",
            "--device", "cpu", "--queries", "4", "--set", "clusters_per_class=2", "--set", "distill_steps=3",
            "--set", "step_length=1", "--set", "embedding=pixels"]


def tiny_result(**changes):
    result = Result(target="table1", dataset="mnist", scale="small", title="T", description="d",
                    rows=["DDM-full", "Random Select"], columns=["dist1", "dist2"], cells={}, seeds=[0, 1],
                    config={"scale": "small"}, environment={"code_version": "abc"})
    for seed_value in (0.1, 0.3):
        result.cell("DDM-full", "dist1").add(seed_value, 2.0, normalized=0.5)
    result.cell("DDM-full", "dist1").paper = 10.8
    for name, value in changes.items():
        setattr(result, name, value)
    return result


def test_cell_mean_and_sample_std_by_hand():
    cell = Cell()
    for value in (1.0, 2.0, 4.0):
        cell.add(value, 1.0)
    assert cell.mean == pytest.approx(7 / 3)
    assert cell.std == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))
    single = Cell()
    single.add(5.0, 1.0)
    assert single.std == 0.0


def test_result_round_trips_through_json_and_writes_csv(tmp_path):
    path = write_result(tiny_result(), tmp_path)
    assert path == tmp_path / "table1" / "mnist" / "small" / "table1.json"
    loaded = load_result(path)
    assert loaded.cells["DDM-full"]["dist1"].values == [0.1, 0.3]
    assert loaded.cells["DDM-full"]["dist1"].extra == {"normalized": [0.5, 0.5]}
    csv = path.with_suffix(".csv").read_text().splitlines()
    assert csv[0].startswith("target,dataset,scale,row,column,mean,std") and len(csv) == 2
    assert find_results(tmp_path) == [path]


def test_a_damaged_result_is_a_clear_error(tmp_path):
    path = write_result(tiny_result(), tmp_path)
    path.write_text(path.read_text()[:50])
    with pytest.raises(DataError, match="not a ddm-bench result"):
        load_result(path)


def test_paper_values_only_where_the_paper_reports_them():
    import bench.targets  # noqa: F401
    from bench.base import TARGETS

    table1, table2, table6 = TARGETS["table1"](), TARGETS["table2"](), TARGETS["table6"]()
    assert table1.paper_value("mnist", "DDM-full", "dist1") == 10.8
    assert table1.paper_value("mnist", "DDM (paper schedule)", "dist1") == 10.8  # the paper's one DDM row
    assert table1.paper_value("mnist", "Predict-based", "dist2") is None
    assert table1.paper_value("digits", "DDM-full", "dist1") is None
    assert table1.paper_value("mnist", "DDM-full", "no such column") is None
    assert table2.paper_value("cifar100", "Koh", "dist1") == 2.6
    assert table2.paper_value("mnist", "Koh", "dist1") == 10.0
    assert table6.paper_value("digits", "DDM", "10%") == 82.0  # the paper's Table 6 names no dataset
    assert TARGETS["lds"]().paper_value("mnist", "Koh", "lds") is None


def imported_after(statement: str, prefix: str) -> list[str]:
    """Modules starting with ``prefix`` that a fresh interpreter holds after ``statement``."""
    import subprocess
    import sys

    code = f"import sys; {statement}; print(sorted(m for m in sys.modules if m.startswith({prefix!r})))"
    return json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                     check=True).stdout.replace("'", '"'))


def test_imports_run_in_one_direction():
    assert imported_after("import bench.base", "bench") == ["bench", "bench.base"]
    assert imported_after("import bench.results", "bench") == ["bench", "bench.results"]
    assert "bench.runner" not in imported_after("import bench.targets", "bench")
    # ddm never imports baselines, not even through the pipeline's fit_method
    assert imported_after("import ddm, ddm.pipeline, ddm.attribute", "baselines") == []


def test_markdown_puts_ours_beside_the_labelled_paper_column():
    text = render_markdown(tiny_result(), {"dist1": 100.0})
    assert "| Method | dist1 ×100 (ours) | dist1 ×100 (paper) | dist2 (ours) | dist2 (paper) |" in text
    assert "| DDM-full | 20 ± 14.1 | 10.8 | - | - |" in text  # 100 x mean(0.1, 0.3), 100 x std
    assert "code version: `abc`" in text and "seeds: [0, 1]" in text


def test_a_column_gets_the_digits_that_tell_its_rows_apart():
    result = tiny_result(columns=["dist1", "dist3"])
    result.cell("DDM-full", "dist3").add(0.999981, 1.0)
    result.cell("Random Select", "dist3").add(0.999995, 1.0)
    result.cell("Random Select", "dist1").add(0.123456, 1.0)
    text = render_markdown(result)
    assert "| DDM-full | 20 ± 14.1 | 10.8 | 0.99998 | - |" in text  # dist1 keeps 3 digits
    assert "| Random Select | 12.3 | - | 0.99999 | - |" in text


@pytest.fixture
def run(tmp_path):
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, ["--home", str(tmp_path / "home"), *args])

    return invoke


def test_list_names_targets_methods_and_datasets(run):
    result = run("list")
    assert result.exit_code == 0, result.output
    for word in ("table1", "table2", "all", "koh", "ddm_match", "mnist", "simple_vit"):
        assert word in result.output


def registered_targets():
    import bench.targets  # noqa: F401
    from bench.base import TARGETS

    return TARGETS.names()


@pytest.mark.slow
@pytest.mark.parametrize("target", registered_targets())
def test_every_target_writes_finite_results_and_renders(ran_all, target):
    root, _ = ran_all
    data = json.loads((root / "results" / target / "digits" / "smoke" / f"{target}.json").read_text())
    assert data["seeds"] == [0, 1] and data["environment"]["code_version"] and data["config"]
    filled = [cell for row in data["cells"].values() for cell in row.values()]
    assert filled and all(cell["n"] == 2 for cell in filled)
    assert any(math.isfinite(value) for cell in filled for value in cell["values"])
    assert (root / "tables" / f"{target}_digits_smoke.md").exists()
    assert (root / "results" / target / "digits" / "smoke" / f"{target}.csv").exists()


@pytest.mark.slow
def test_table1_cells_are_sane(ran_all):
    root, _ = ran_all
    data = json.loads((root / "results" / "table1" / "digits" / "smoke" / "table1.json").read_text())
    for row in data["rows"]:
        for column in data["columns"]:
            assert all(math.isfinite(v) for v in data["cells"][row][column]["values"]), (row, column)
    oracle = data["cells"]["DDM-full"]["dist1"]["extra"]["oracle"]
    random = data["cells"]["Random Select"]["dist1"]["values"]
    assert all(o >= r for o, r in zip(oracle, random, strict=True))  # the best cluster beats the average
    assert "(paper)" in (root / "tables" / "table1_digits_smoke.md").read_text()


@pytest.mark.slow
def test_lds_standard_scores_every_method_beside_dattris_published_values(ran_all):
    """The run-all fixture's lds-standard (dattri's MNIST-10 benchmark at smoke scale on digits):
    every method has its cell, gridded methods record their chosen point, n/a is said, not filled."""
    import numpy as np

    from bench import standard

    root, _ = ran_all
    path = root / "results" / "lds-standard" / "digits" / "smoke" / "lds-standard.json"
    saved = json.loads(path.read_text())
    cells = saved["cells"]
    expected = {standard.ORACLE_ROW, *(row for row in standard.METHODS if row not in ("TRAK-10", "TRAK-50")),
                *(row + standard.DEV for row in standard.GRIDDED)}
    assert set(cells) == expected
    # the chosen grid point is recorded, and one of the smoke grid (two of dattri's points)
    chosen = cells["IF (CG)" + standard.DEV]["LR"]["extra"]["chosen"]
    assert len(chosen) == 2 and set(chosen) <= set(standard.setting_at("mnist_lr", "smoke").regularizations)
    assert "MLP" not in cells["IF (explicit)"]  # n/a: said in the notes, never a stand-in number
    assert any("explicit Hessian" in note for note in saved["notes"])
    for row, columns in cells.items():
        for column, cell in columns.items():
            assert all(-1 <= v <= 1 for v in cell["values"] if np.isfinite(v)), (row, column)
    assert cells["TRAK-1"]["LR"]["paper"] is None  # dattri published MNIST, not digits
    target = standard.StandardLDS()
    assert target.paper_value("mnist", "TRAK-1", "LR") == 0.42  # rendered beside ours on MNIST
    assert target.paper_value("mnist", "IF (explicit)", "MLP") is None
    table = (root / "tables" / "lds-standard_digits_smoke.md").read_text()
    assert "TracIn" in table and "Oracle" in table


@pytest.mark.slow
def test_ladder_invariants(ran_all):
    """The exact rung is the oracle (1.0 on both scores); every rung ran (each checked its scores
    against the oracle's shape in bench.ladder); synset diagnostics are cosines."""
    root, _ = ran_all
    data = json.loads((root / "results" / "ladder" / "digits" / "smoke" / "ladder.json").read_text())
    exact = data["cells"]["exact retraining"]
    assert exact["normalized"]["values"] == [1.0, 1.0] and exact["spearman"]["values"] == [1.0, 1.0]
    assert set(data["rows"]) <= set(data["cells"])
    for row, cells in data["cells"].items():
        for name in ("own-pair cos", "undo cos"):
            if name in cells:
                assert all(-1 - 1e-9 <= v <= 1 + 1e-9 for v in cells[name]["values"]), (row, name)
    assert (root / "tables" / "ladder_digits_smoke.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_the_oracles_numerical_floor_is_recorded_and_rendered(ran_all):
    root, _ = ran_all
    for target in ("table1", "table2", "mislabel"):
        data = json.loads((root / "results" / target / "digits" / "smoke" / f"{target}.json").read_text())
        assert "Noise floor (retrain, nothing removed)" not in data["cells"]  # 0 by construction: gone
        assert data["protocol"] == "same-seed" and data["retrain_seeds"] is None
        for series in data["series"].values():
            assert set(series["floors"]) == {"oracle"}  # the default network is the paper's ReLU net
            for score in series["floors"]["oracle"]["objectives"].values():
                # float64: the other thread count reproduces the oracle (measured: bit for bit)
                assert score["spearman"] >= 0.999 and score["top_agree"] >= 0.99
                assert 0 <= score["relative_dist1"] <= 1e-6
        assert not any(row.endswith("(paper's ReLU net)") for row in data["cells"])
        text = (root / "tables" / f"{target}_digits_smoke.md").read_text()
        assert "Oracle self-agreement" in text and "| oracle | float64, relu |" in text


@pytest.mark.slow
def test_every_target_scored_against_retraining_shows_its_oracle_agreeing_with_itself(ran_all):
    """Every table and figure that retrains (its oracle, its masks, its removal sets, its students)
    stores the self-agreement of what it retrained for every seed, above the bar (float64 ReLU
    reproduces under the other thread count); the noise target is that check itself, and
    lds-standard's oracle is dattri's float32 models, judged against their own second seed."""
    import bench.targets  # noqa: F401
    from bench.base import TARGETS
    from bench.evaluation import below_bar

    root, _ = ran_all
    checked = [name for name in TARGETS.names()
               if (TARGETS[name].retrains or name == "table7") and name != "noise"]
    expected = {"fig6", "fig7", "ladder", "stability", "table1", "lds", "table3", "table7", "mislabel"}
    assert expected <= set(checked)
    for target in checked:
        data = json.loads((root / "results" / target / "digits" / "smoke" / f"{target}.json").read_text())
        for seed, series in data["series"].items():
            assert series["floors"], (target, seed)
            for label, record in series["floors"].items():
                assert record["numerics"] == "float64, relu" and record["perturb"].startswith("threads=")
                assert below_bar(record) == [], (target, seed, label)
        assert "Oracle self-agreement" in (root / "tables" / f"{target}_digits_smoke.md").read_text(), target


@pytest.mark.slow
def test_the_lds_oracles_self_agreement_on_its_rerun_masks_is_recorded_and_rendered(ran_all):
    """The LDS's own retrainings (keep-masks, not single removals) carry their floor too: float64
    reproduces them under the other thread count, so the margins rank the masks alike."""
    root, _ = ran_all
    data = json.loads((root / "results" / "lds" / "digits" / "smoke" / "lds.json").read_text())
    for series in data["series"].values():
        floor = series["floors"]["oracle (keep-masks)"]
        assert floor["unit"] == "masks" and floor["clusters"] == 10 and floor["n_clusters"] == 50
        assert set(floor["objectives"]) == set(data["columns"])
        for score in floor["objectives"].values():
            assert score["spearman"] >= 0.999 and score["top_agree"] >= 0.99
            assert 0 <= score["relative_dist1"] <= 1e-6
    text = (root / "tables" / "lds_digits_smoke.md").read_text()
    assert "10 of the 50 keep-masks of each column" in text
    assert "| oracle (keep-masks) | float64, relu | keep 90% |" in text


@pytest.mark.slow
def test_the_removal_tables_rerun_each_methods_largest_removal_and_agree(ran_all):
    """Tables 3, 6 and 7 judge methods by retrained accuracy: each method's largest removal set is
    retrained (Table 7: its student distilled) again under the other thread count, and float64
    classifies every test image alike."""
    root, _ = ran_all
    for target, methods in (("table3", 5), ("table6", 2), ("table7", 2)):
        data = json.loads((root / "results" / target / "digits" / "smoke" / f"{target}.json").read_text())
        for series in data["series"].values():
            floor = series["floors"]["oracle (removal sets)"]
            assert floor["unit"] == "accuracy" and 1 <= floor["clusters"] <= floor["n_clusters"] == methods
            score = floor["objectives"]["accuracy"]
            assert score["max_accuracy_gap"] == 0.0 and score["prediction_agreement"] == 1.0
        text = (root / "tables" / f"{target}_digits_smoke.md").read_text()
        assert "| oracle (removal sets) | float64, relu | accuracy | 0 | 1 |" in text


@pytest.fixture
def without_methods_extra(monkeypatch):
    """As in an install without the ``methods`` extra: its libraries do not import."""
    import sys

    for library in ("dattri", "kronfluence", "trak"):
        monkeypatch.setitem(sys.modules, library, None)


@pytest.mark.slow
def test_a_smooth_network_keeps_the_papers_relu_rows_with_their_own_floor(tmp_path, without_methods_extra):
    # without the libraries' rows: they are not this test's subject (77 s of CI with them, on 2 cores)
    results, tables = tmp_path / "results", tmp_path / "tables"
    result = CliRunner().invoke(main, ["--home", str(tmp_path / "home"), "run", "table2", *TINY_RUN,
                                       "--set", "activation=gelu", "--set", "precision=float32",
                                       "--results-dir", str(results), "--tables-dir", str(tables)])
    assert result.exit_code == 0, result.output
    data = json.loads((results / "table2" / "digits" / "smoke" / "table2_float32-gelu.json").read_text())
    assert {"DDM (paper's ReLU net)", "Random Select (paper's ReLU net)"} <= set(data["cells"])
    assert set(data["series"]["0"]["floors"]) == {"oracle", "ReLU oracle"}
    text = (tables / "table2_digits_smoke_float32-gelu.md").read_text()
    assert "| ReLU oracle | float32, relu |" in text and "numerics: float32, activation gelu" in text


@pytest.mark.slow
def test_a_run_without_the_methods_extra_skips_their_rows_and_says_why(ran_all_home, tmp_path,
                                                                       without_methods_extra):
    """On a cache holding this seed computed with the extra (ran_all's): a seed without the extra is
    keyed apart, so neither run takes the other's rows."""
    results, tables = tmp_path / "results", tmp_path / "tables"
    result = CliRunner().invoke(main, ["--home", str(ran_all_home), "run", "table2", *TINY_RUN,
                                       "--results-dir", str(results), "--tables-dir", str(tables)])
    assert result.exit_code == 0, result.output
    data = json.loads((results / "table2" / "digits" / "smoke" / "table2.json").read_text())
    skipped = {"TRAK", "EK-FAC", "K-FAC", "TracIn-CP", "Grad-Dot", "Grad-Cos"}
    assert not skipped & set(data["rows"]) and {"DDM-match (ascent)", "DDM"} <= set(data["rows"])
    notes = " ".join(data["notes"])
    assert all(f"{row} (" in notes for row in skipped) and "pip install -e '.[methods]'" in notes
    assert "TRAK" in (tables / "table2_digits_smoke.md").read_text()  # the note, in the rendered table


@pytest.mark.slow
def test_lds_of_the_exact_masks_is_one(ran_all):
    root, _ = ran_all
    data = json.loads((root / "results" / "lds" / "digits" / "smoke" / "lds.json").read_text())
    assert data["columns"] == ["keep 50%", "keep 90%"]
    for column in data["columns"]:
        exact = data["cells"]["Exact: the masks retrained"][column]
        assert exact["values"] == pytest.approx([1.0, 1.0])
        assert all(v == pytest.approx(1.0) for seed in exact["queries"]["value"] for v in seed)
        for row, cells in data["cells"].items():
            assert all(-1 <= v <= 1 for v in cells[column]["values"]), row
            assert len(cells[column]["queries"]["value"]) == 2  # per seed, one value per query


@pytest.mark.slow
def test_fresh_seed_protocol_is_recorded_keyed_and_has_a_noise_floor(ran_all_home, tmp_path):
    home, results, tables = ran_all_home, tmp_path / "results", tmp_path / "tables"
    base = ["--home", str(home), "run", "table2", *TINY_RUN, "--results-dir", str(results),
            "--tables-dir", str(tables)]
    assert CliRunner().invoke(main, base).exit_code == 0  # ran_all's same-seed seed 0, from the cache
    before = set((home / "cells").glob("*/cells.json"))
    fresh = CliRunner().invoke(main, [*base, "--protocol", "fresh-seed", "--retrain-seeds", "2"])
    assert fresh.exit_code == 0, fresh.output
    assert len(set((home / "cells").glob("*/cells.json")) - before) == 1  # the protocol is in the key
    data = json.loads((results / "table2" / "digits" / "smoke" / "table2_fresh-seed.json").read_text())
    assert data["protocol"] == "fresh-seed" and data["retrain_seeds"] == 2
    same = json.loads((results / "table2" / "digits" / "smoke" / "table2.json").read_text())
    assert same["protocol"] == "same-seed"  # both protocols' results are kept
    assert data["cells"]["Noise floor (retrain, nothing removed)"]["dist1"]["values"][0] > 0
    text = (tables / "table2_digits_smoke_fresh-seed.md").read_text()
    assert "--protocol fresh-seed --retrain-seeds 2" in text and "fresh-seed protocol" in text


@pytest.mark.slow
def test_figures_are_rendered_as_png(ran_all):
    root, _ = ran_all
    for figure in ("fig3", "fig4", "fig6", "fig7", "fig8"):
        assert (root / "tables" / f"{figure}_digits_smoke.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_a_second_run_reuses_every_seed(ran_all):
    root, args = ran_all
    cells = sorted((root / "home" / "cells").glob("*/cells.json"))
    stamps = [path.stat().st_mtime_ns for path in cells]
    assert len(cells) == 2 * len(registered_targets())
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert [path.stat().st_mtime_ns for path in cells] == stamps  # nothing recomputed


def test_report_renders_from_results_alone(run, tmp_path):
    write_result(tiny_result(dataset="digits"), tmp_path / "results")
    result = run("report", "--results-dir", str(tmp_path / "results"),
                 "--tables-dir", str(tmp_path / "tables"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "tables" / "table1_digits_small.md").exists()


def test_report_on_a_damaged_result_exits_2(run, tmp_path):
    path = write_result(tiny_result(), tmp_path / "results")
    path.write_text("{")
    result = run("report", "--results-dir", str(tmp_path / "results"),
                 "--tables-dir", str(tmp_path / "tables"))
    assert result.exit_code == 2 and "table1.json" in result.output


def test_unknown_target_exits_2_listing_the_choices(run):
    result = run("run", "table99", "--dataset", "digits")
    assert result.exit_code == 2 and "table1" in result.output


@pytest.mark.slow
def test_a_table_runs_on_cifar10_from_data_root(run, tmp_path):
    """CIFAR-10 in its real on-disk format (tiny), through `run` with --data-root."""
    from tests.data_fixtures import write_cifar10

    write_cifar10(tmp_path / "data", per_batch=20, n_test=10)  # 90 training images: 9 per class
    args = ["--dataset", "cifar10", "--data-root", str(tmp_path / "data"), "--scale", "smoke",
            "--n-per-class", "4", "--epochs", "1", "--width", "8", "--device", "cpu", "--queries", "3",
            "--set", "clusters_per_class=2", "--set", "distill_steps=2", "--set", "step_length=1",
            "--set", "embedding=pixels", "--results-dir", str(tmp_path / "results"),
            "--tables-dir", str(tmp_path / "tables")]
    result = run("run", "table2", *args)
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "results" / "table2" / "cifar10" / "smoke" / "table2.json").read_text())
    assert data["config"]["data"]["dataset"] == "cifar10" and data["cells"]["DDM"]["dist1"]["n"] == 1
    assert "| Koh |" in (tmp_path / "tables" / "table2_cifar10_smoke.md").read_text()


@pytest.mark.slow
def test_two_concurrent_runs_share_one_cache_without_corrupting_it(tmp_path):
    """Both processes finish; per-entry locks make the second wait for, then reuse, the first's work."""
    import subprocess
    import sys

    command = [sys.executable, "-c", "from bench.cli import main; main()", "--home", str(tmp_path / "home"),
               "run", "table4", *TINY_RUN]
    runs = [subprocess.Popen([*command, "--results-dir", str(tmp_path / f"results{i}"), "--tables-dir",
                              str(tmp_path / f"tables{i}")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            for i in range(2)]
    outputs = [run.communicate(timeout=600)[0].decode() for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    paths = [tmp_path / f"results{i}" / "table4" / "digits" / "smoke" / "table4.json" for i in range(2)]
    cells = [json.loads(path.read_text())["cells"] for path in paths]
    assert cells[0] == cells[1]
    again = CliRunner().invoke(main, ["--home", str(tmp_path / "home"), "run", "table4", *TINY_RUN,
                                      "--results-dir", str(tmp_path / "results2"),
                                      "--tables-dir", str(tmp_path / "tables2")])
    assert again.exit_code == 0, again.output  # every cache entry the two wrote still verifies


def test_reproduce_command_names_exactly_the_fields_that_differ_from_the_preset():
    from bench.render import reproduce_command
    from ddm.config import preset, with_overrides

    config = with_overrides(preset("smoke", "digits"), width=8, include_singles=False)
    result = tiny_result(dataset="digits", scale="smoke", config=config.to_dict(), n_queries=4)
    assert reproduce_command(result) == ("ddm-bench run table1 --dataset digits --scale smoke --seeds 2 "
                                         "--queries 4 --set width=8 "
                                         "--set include_singles=false")


def test_changing_a_lissa_option_changes_the_table2_cell_key(monkeypatch, tmp_path):
    import dataclasses

    from baselines.fastif import FastIFConfig
    from baselines.influence import LissaConfig
    from bench import base, runner
    from ddm.config import preset
    from ddm.resolver import Resolver

    keys = []

    class Probe(base.BenchTarget):
        name, title, rows, columns = "table2", "t", ["r"], ["c"]

        def run_seed(self, ctx, seed):
            return {"r": {"c": {"value": 1.0}}}, {}

    ctx = base.RunContext(preset("smoke", "digits"), Resolver(tmp_path))
    real_describe = ctx.resolver.describe

    def spy(name, config, fields=None):
        described = real_describe(name, config, fields)
        if name == "cells":
            keys.append(json.dumps(described, sort_keys=True))
        return described

    monkeypatch.setattr(ctx.resolver, "describe", spy)
    runner._seed_cells(Probe(), ctx, 0)
    ctx.method_options = {"koh": dataclasses.replace(LissaConfig(), depth=7)}
    runner._seed_cells(Probe(), ctx, 0)
    assert len(keys) == 2 and keys[0] != keys[1]
    assert ctx.method_keys()["koh"]["depth"] == 7 and ctx.method_keys()["fastif"] == dataclasses.asdict(
        FastIFConfig())


def test_cells_record_the_cpu_threads_that_computed_them(tmp_path):
    import torch

    from bench import base, runner
    from ddm.config import preset
    from ddm.resolver import Resolver

    class Probe(base.BenchTarget):
        name, title, rows, columns = "table2", "t", ["r"], ["c"]

        def run_seed(self, ctx, seed):
            return {"r": {"c": {"value": 1.0}}}, {}

    ctx = base.RunContext(preset("smoke", "digits"), Resolver(tmp_path), device="cpu")
    computed = runner._seed_cells(Probe(), ctx, 0)
    loaded = runner._seed_cells(Probe(), ctx, 0)  # from the cache
    assert computed[3] == loaded[3] == torch.get_num_threads()
    result = tiny_result()
    result.environment["cells_threads"] = {"0": 2, "1": 1}
    assert "with 1 / 2 CPU threads" in render_markdown(result, {})


@pytest.mark.slow
def test_keep_committed_adds_a_seed_without_recomputing_the_committed_ones(ran_all_home, tmp_path):
    results, tables = tmp_path / "results", tmp_path / "tables"
    # Table 1: the mechanism is the runner's, and Table 1 has no library rows (Table 2 took 121 s of CI)
    base = ["run", "table1", *TINY_RUN, "--results-dir", str(results), "--tables-dir", str(tables)]
    first = CliRunner().invoke(main, ["--home", str(ran_all_home), *base])  # seed 0 from its cache
    assert first.exit_code == 0, first.output
    path = results / "table1" / "digits" / "smoke" / "table1.json"
    committed = json.loads(path.read_text())
    # a fresh clone: an empty cache, the committed result file
    keep = ["--seeds", "2", "--keep-committed"]
    added = CliRunner().invoke(main, ["--home", str(tmp_path / "b"), *base, *keep])
    assert added.exit_code == 0, added.output
    assert len(list((tmp_path / "b" / "cells").glob("*/cells.json"))) == 1  # seed 1 only
    data = json.loads(path.read_text())
    assert data["seeds"] == [0, 1] and data["environment"]["kept_from"]["kept_seeds"] == [0]
    for row, cells in committed["cells"].items():
        for column, cell in cells.items():
            assert data["cells"][row][column]["values"][0] == cell["values"][0]
            assert {k: v[0] for k, v in data["cells"][row][column]["extra"].items()} == \
                {k: v[0] for k, v in cell["extra"].items()}
            # the kept seed keeps its per-query values (intervals and paired comparisons need them)
            assert {k: v[0] for k, v in data["cells"][row][column]["queries"].items()} == \
                {k: v[0] for k, v in cell["queries"].items()}
    assert data["series"]["0"] == committed["series"]["0"]
    versions = data["environment"]["cells_code_versions"]
    assert versions["0"] == committed["environment"]["cells_code_versions"]["0"]
    # another config keeps nothing: every seed is computed (on ran_all's stages)
    before = set((ran_all_home / "cells").glob("*/cells.json"))
    changed = [*keep, "--set", "ridge=0.5"]
    other = CliRunner().invoke(main, ["--home", str(ran_all_home), *base, *changed])
    assert other.exit_code == 0, other.output
    assert len(set((ran_all_home / "cells").glob("*/cells.json")) - before) == 2
    assert "kept_from" not in json.loads(path.read_text())["environment"]


def test_a_checkpoint_dir_that_cannot_be_made_exits_2_before_any_work(run, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run("run", "table1", *TINY_RUN, "--checkpoint-dir", str(blocker / "carry"))
    assert result.exit_code == 2 and "--checkpoint-dir" in result.output
    assert not (tmp_path / "home").exists()  # nothing computed


@pytest.mark.slow
def test_a_checkpoint_dir_carries_a_run_to_a_machine_with_an_empty_cache(tmp_path, monkeypatch):
    """``run --checkpoint-dir results/checkpoints``: another cache starts from the carried cells
    instead of recomputing them, writes the same result, and `report` does not take the carried
    files for results."""
    from bench.base import TARGETS

    results, tables = tmp_path / "results", tmp_path / "tables"
    base = ["run", "table1", *TINY_RUN, "--results-dir", str(results), "--tables-dir", str(tables),
            "--checkpoint-dir", str(results / "checkpoints")]
    first = CliRunner().invoke(main, ["--home", str(tmp_path / "a"), *base])
    assert first.exit_code == 0, first.output
    path = results / "table1" / "digits" / "smoke" / "table1.json"
    before = json.loads(path.read_text())
    assert len(list((results / "checkpoints" / "cells").glob("*.json"))) == 1
    monkeypatch.setattr(TARGETS["table1"], "resume_seed", lambda *args: pytest.fail("recomputed"))
    again = CliRunner().invoke(main, ["--home", str(tmp_path / "b"), *base])
    assert again.exit_code == 0, again.output
    assert json.loads(path.read_text())["cells"] == before["cells"]
    assert find_results(results) == [path]
    report = CliRunner().invoke(main, ["report", "--results-dir", str(results), "--tables-dir", str(tables)])
    assert report.exit_code == 0, report.output


def test_bench_reaches_ddm_through_its_contract_and_diagnostics_only():
    """No module under bench/ imports DDM's internals, and bench's base imports no method module:
    methods are declared by name and imported when first looked up."""
    from pathlib import Path

    bench_dir = Path(__file__).resolve().parents[1] / "bench"
    for path in bench_dir.glob("*.py"):
        text = path.read_text()
        for internal in ("ddm.attribute", "ddm.distill", "ddm.datamodel"):
            assert f"import {internal}" not in text and f"from {internal} " not in text, (path.name, internal)
    loaded = imported_after("import bench.base", "")  # the ladder imports DDM's diagnostics API, base none
    assert "ddm.attribute" not in loaded and "baselines.koh" not in loaded
    names = imported_after("from ddm.attributor import METHODS; import baselines; METHODS.names()", "")
    assert "baselines.koh" not in names


def test_declared_methods_import_on_first_lookup():
    from ddm.attributor import METHODS

    assert {"ddm", "ddm_match", "koh", "exact", "random"} <= set(METHODS.names())
    assert METHODS["koh"].name == "koh" and "koh" in METHODS


def test_re_rendering_the_committed_results_gives_the_committed_tables(tmp_path):
    """tables/ holds nothing that results/ does not: every committed Markdown table re-renders byte
    for byte from its result (so a refactor of the renderer or the results changes no committed cell)."""
    from pathlib import Path

    from bench.runner import render_all

    root = Path(__file__).resolve().parents[1]
    written = [path for path in render_all(root / "results", tmp_path) if path.suffix == ".md"]
    assert len(written) >= 40
    for path in written:
        assert path.read_text() == (root / "tables" / path.name).read_text(), path.name


def test_timings_fit_every_baseline_from_an_empty_cache(tmp_path, monkeypatch):
    """The timings' baseline rows must cost what a cold fit costs: a fit another table cached in the
    run's cache (the linear response, TRAK's models, EK-FAC's factors) may not be read."""
    from bench import base, timings
    from ddm.pipeline import select_queries
    from ddm.resolver import Resolver
    from tests.conftest import TINY

    ctx = base.RunContext(TINY, Resolver(tmp_path / "home"), device="cpu", n_queries=2, progress=False)
    stages = ctx.stages(TINY)
    queries = select_queries(stages.data, 2)
    assert not ctx.fit("koh", stages).loaded_from_cache  # cached in the run's cache, as a table would
    fitted = []
    real_fit = base.RunContext.fit

    def spy(self, method, method_stages, **kwargs):
        fitted.append(real_fit(self, method, method_stages, **kwargs))
        return fitted[-1]

    monkeypatch.setattr(base.RunContext, "fit", spy)
    monkeypatch.setattr(timings, "BASELINES", ["koh"])
    seconds = timings.Timings().baselines(ctx, stages, queries)
    assert [attributor.loaded_from_cache for attributor in fitted] == [False]
    assert set(seconds) == {"koh: offline (fit)", "koh: online (attribute)"}
