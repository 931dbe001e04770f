"""`ddm-bench report --commands`: the printed command, run through the real CLI, records the config,
method options, queries, query seeds and protocol its result recorded (checked for every committed
result without running a target)."""

import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench import runner
from bench.cli import main
from bench.rerun import _flat, format_value, rerun_command
from bench.results import Result, find_results, load_result
from ddm.config import parse_value

RESULTS = Path(__file__).resolve().parent.parent / "results"
COMMITTED = find_results(RESULTS)


def recorded_by(args, tmp_path, monkeypatch):
    """What `ddm-bench run` with ``args`` would record (its context), without running the target."""
    seen = {}

    def capture(name, ctx, seeds, keep_committed=False):
        seen.update(target=name, ctx=ctx, seeds=seeds)
        raise SystemExit(0)

    monkeypatch.setattr(runner, "run_target", capture)
    outcome = CliRunner().invoke(main, ["--home", str(tmp_path / "home"), *args[1:]])
    assert outcome.exit_code == 0, outcome.output
    return seen


def test_there_are_committed_results_to_check():
    assert len(COMMITTED) >= 50


@pytest.mark.parametrize("path", COMMITTED, ids=[p.relative_to(RESULTS).as_posix() for p in COMMITTED])
def test_the_command_of_every_committed_result_records_what_the_result_recorded(path, tmp_path, monkeypatch):
    result = load_result(path)
    seen = recorded_by(rerun_command(result), tmp_path, monkeypatch)
    ctx = seen["ctx"]
    assert seen["target"] == result.target and seen["seeds"] == result.seeds
    now, then = _flat(ctx.config.to_dict()), _flat(result.config)
    # fields the result predates take today's default; every field it recorded is reproduced
    assert {name: now[name] for name in then if name in now} == {n: v for n, v in then.items() if n in now}
    methods = ctx.method_keys()
    for method, options in result.config.get("methods", {}).items():
        if method in methods:
            assert {f: methods[method][f] for f in options if f in methods[method]} == \
                {f: v for f, v in options.items() if f in methods[method]}, method
    assert (ctx.n_queries, ctx.query_seed_base) == (result.n_queries, result.query_seed_base)
    if result.protocol is not None:
        assert ctx.protocol == result.protocol
    if result.retrain_seeds is not None:
        assert ctx.oracle.retrain_seeds == result.retrain_seeds


def test_a_variant_and_an_option_become_set_and_option_and_can_be_left_at_their_defaults():
    result = load_result(RESULTS / "noise/mnist/small/noise_float32-gelu.json")
    result.config["methods"]["koh"]["depth"] = 1000
    result.config["data"]["n_per_class"] = 150
    args = rerun_command(result)
    assert {"activation=gelu", "precision=float32", "n_per_class=150"} <= set(args)
    assert "koh.depth=1000" in args and "--query-seed-base" in args
    assert "koh.depth=1000" not in rerun_command(result, options=False)


def test_values_are_printed_as_the_cli_parses_them_back():
    for value, annotation in [(None, "float | None"), (True, "bool"), (False, "bool"), (0.1, "float"),
                              (1e-10, "float"), (1 / 3, "float"), (7, "int"), ("eq6", "str")]:
        assert parse_value("f", annotation, format_value(value)) == value
    assert shlex.split(shlex.join(["--set", "x=a b"])) == ["--set", "x=a b"]


def test_seeds_that_run_cannot_make_have_no_command():
    result = Result(target="table1", dataset="digits", scale="smoke", title="t", description="d", rows=[],
                    columns=[], cells={}, seeds=[1, 2], config={}, environment={})
    with pytest.raises(ValueError, match="0..N-1"):
        rerun_command(result)


def test_report_commands_prints_one_runnable_line_per_result():
    outcome = CliRunner().invoke(main, ["report", "--commands", "--results-dir", str(RESULTS)])
    assert outcome.exit_code == 0, outcome.output
    lines = outcome.output.splitlines()
    assert sum(line.startswith("ddm-bench run ") for line in lines) == len(COMMITTED)
    assert f"# results/{COMMITTED[0].relative_to(RESULTS).as_posix()}" in lines


@pytest.mark.parametrize("mode", [["--commands"], ["--check"], ["--check", "--commands"], []])
def test_report_commands_refuses_a_missing_results_directory(tmp_path, mode):
    outcome = CliRunner().invoke(main, ["report", *mode, "--results-dir", str(tmp_path / "none")])
    assert outcome.exit_code == 2 and "no results directory" in outcome.output
