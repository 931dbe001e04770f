"""The ddm-bench CLI: thin commands, clean exit-2 errors, cache reuse."""

import re

import pytest
import torch
from click.testing import CliRunner

from bench.cli import main

TINY = ["--dataset", "digits", "--scale", "smoke", "--epochs", "1", "--width", "8",
        "--n-per-class", "20", "--device", "cpu"]


@pytest.fixture
def run(tmp_path):
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(main, ["--home", str(tmp_path / "home"), *args])

    return invoke


def artifact_path(output: str) -> str:
    return re.search(r"artifacts: (\S+)", output).group(1)


def test_help_lists_commands(run):
    result = run("--help")
    assert result.exit_code == 0
    assert "train" in result.output and "data" in result.output


def test_unknown_dataset_exits_2_naming_the_choices(run):
    result = run("train", "--dataset", "nope")
    assert result.exit_code == 2
    assert "nope" in result.output
    for name in ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "tinyimagenet"):
        assert name in result.output


def test_missing_data_exits_2_saying_where_it_looked(run, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run("train", "--dataset", "cifar10", "--data-root", str(empty), "--device", "cpu")
    assert result.exit_code == 2, result.output
    assert str(empty) in result.output
    assert "Traceback" not in result.output


def test_n_per_class_larger_than_a_class_exits_2(run):
    result = run("train", *TINY[:-6], "--n-per-class", "100000", "--device", "cpu")
    assert result.exit_code == 2, result.output
    assert "n_per_class" in result.output or "per class" in result.output


def test_train_then_reuse_from_cache(run):
    first = run("train", *TINY)
    assert first.exit_code == 0, first.output
    assert "test accuracy" in first.output
    second = run("train", *TINY)
    assert second.exit_code == 0, second.output
    assert artifact_path(first.output) == artifact_path(second.output)
    assert first.output == second.output  # same stored accuracy and timing: reused, not retrained


def test_corrupted_cache_entry_exits_2_and_names_it(run):
    first = run("train", *TINY)
    path = artifact_path(first.output)
    with open(f"{path}/trajectory.pt", "r+b") as handle:
        handle.truncate(100)
    second = run("train", *TINY)
    assert second.exit_code == 2
    assert path in second.output and "truncated" in second.output


def test_data_list_reports_every_dataset(run):
    result = run("data", "list")
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("digits") and " yes " in lines[0]
    assert len(lines) == 6


def test_data_list_says_bad_for_garbage_files(run, tmp_path):
    from tests.data_fixtures import write_cifar10

    write_cifar10(tmp_path / "root")
    (tmp_path / "root" / "cifar-10-batches-py" / "test_batch").write_text("garbage")
    result = run("data", "list", "--data-root", str(tmp_path / "root"))
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("cifar10 "))
    assert " bad " in line and "test_batch is not a pickle" in line


DDM_TINY = [*TINY, "--set", "clusters_per_class=2", "--set", "distill_steps=3", "--set", "step_length=1",
            "--set", "embedding=pixels"]


def test_distill_reports_time_and_matching_loss(run):
    result = run("distill", *DDM_TINY, "--class-level")
    assert result.exit_code == 0, result.output
    assert "cluster-level synset (reverse): K = 20" in result.output
    assert "class-level synset (reverse): K = 10" in result.output
    assert "matching loss over all checkpoint pairs" in result.output


def test_attribute_prints_located_clusters_and_writes_w(run, tmp_path):
    output = tmp_path / "w.pt"
    result = run("attribute", *DDM_TINY, "--queries", "3", "--objective", "dist1", "--output",
                 str(output), "--hierarchical")
    assert result.exit_code == 0, result.output
    assert result.output.count("query ") == 3 and "hierarchical search: " in result.output
    saved = torch.load(output, weights_only=False)
    assert saved["weights"].shape == (3, 20, 10) and saved["scores"].shape == (20, 3)
    assert saved["located"].tolist() == saved["scores"].argmax(0).tolist()
    assert saved["config"]["cluster"]["clusters_per_class"] == 2 and "code_version" in saved


def test_unknown_method_and_bad_set_exit_2(run):
    result = run("attribute", *DDM_TINY, "--method", "nope")
    assert result.exit_code == 2 and "ddm_match" in result.output
    result = run("train", *TINY, "--set", "lr_img=fast")
    assert result.exit_code == 2 and "lr_img" in result.output
    result = run("train", *TINY, "--set", "bogus=1")
    assert result.exit_code == 2 and "pairing" in result.output


def registered_methods() -> list[str]:
    import baselines  # noqa: F401  (registers the baselines)
    import ddm.attribute  # noqa: F401  (registers ddm and ddm_match)
    from ddm.attributor import METHODS

    return METHODS.names()


def test_every_method_of_the_paper_and_of_the_field_is_registered():
    paper = {"random", "predict", "cluster", "koh", "fastif", "scaleup", "ddm_match", "ddm", "exact"}
    field = {"koh_all", "ddm_match_ascent", "tracin", "grad_dot", "grad_cos", "ekfac", "kfac", "trak",
             "metagradient", "rps"}
    assert set(registered_methods()) == paper | field


# koh_all's LiSSA over the whole network at its default depth took 136 s of CI here; the command
# path is what this test checks, so a short recursion does
SHORT = {"koh_all": ["--option", "koh_all.depth=20"]}


@pytest.mark.parametrize("method", registered_methods())
def test_attribute_works_for_every_method(run, tmp_path, method):
    output = tmp_path / f"{method}.pt"
    result = run("attribute", *DDM_TINY, "--method", method, "--queries", "3", "--objective", "dist2",
                 *SHORT.get(method, []), "--output", str(output))
    assert result.exit_code == 0, result.output
    saved = torch.load(output, weights_only=False)
    assert saved["scores"].shape == (20, 3) and torch.isfinite(saved["scores"]).all()
    assert saved["method"] == method and saved["located"].tolist() == saved["scores"].argmax(0).tolist()


def test_oracle_retrains_every_cluster_once_then_reuses(run, tmp_path):
    first = run("oracle", *DDM_TINY)
    assert first.exit_code == 0, first.output
    assert "20 retrained models (same-seed, K = 20)" in first.output
    models = sorted((tmp_path / "home" / "retrained").glob("*/theta.pt"))
    written = [path.stat().st_mtime_ns for path in models]
    assert len(models) == 20
    second = run("oracle", *DDM_TINY)
    assert second.exit_code == 0, second.output
    assert sorted((tmp_path / "home" / "retrained").glob("*/theta.pt")) == models
    assert [path.stat().st_mtime_ns for path in models] == written  # reused, not retrained


BAD_INPUTS = [
    ("train", "--set", "lr=inf"),
    ("train", "--device", "banana"),
    ("train", "--set", "momentum=-5"),
    ("train", "--set", "weight_decay=-1"),
    ("train", "--seed", "99999999999999999999"),
    ("train", "--lr", "1e6"),  # trains, diverges: DivergedError naming the learning rate
    ("distill", "--set", "lr_img=nan"),
    ("distill", "--set", "real_batch=0"),
    ("distill", "--set", "step_length=0"),
    ("attribute", "--set", "finetune_lr=nan"),
    ("attribute", "--set", "ridge=-1"),
    ("attribute", "--set", "n_perturbations=0"),
    ("attribute", "--method", "foo"),
    ("attribute", "--option", "foo.depth=1"),  # no such method
    ("attribute", "--option", "koh.depht=1"),  # no such option
    ("attribute", "--option", "koh.depth=0"),  # out of range
    ("attribute", "--option", "koh.damping=abc"),  # not a number
    ("attribute", "--option", "exact.protocol=fresh-seed"),  # the oracle's options are --protocol
    ("train", "--set", "precision=float16"),
    ("train", "--set", "activation=tanh"),
    ("oracle", "--check", "--clusters", "1"),
]


@pytest.mark.parametrize("args", BAD_INPUTS, ids=" ".join)
def test_each_bad_input_exits_2_with_one_clear_line(run, args):
    command, *rest = args
    result = run(command, *TINY, *rest)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert lines and lines[-1].startswith(("error", "Error")), result.output


def test_attribute_with_an_unknown_method_trains_nothing(run, tmp_path):
    result = run("attribute", *TINY, "--method", "foo")
    assert result.exit_code == 2 and "foo" in result.output
    assert not (tmp_path / "home" / "target").exists()


def test_a_bad_method_option_trains_nothing(run, tmp_path):
    result = run("attribute", *TINY, "--method", "koh", "--option", "koh.depth=0")
    assert result.exit_code == 2 and "depth" in result.output
    assert not (tmp_path / "home" / "target").exists()


def test_a_method_option_reaches_the_method_and_its_output(run, tmp_path):
    output = tmp_path / "koh.pt"
    result = run("attribute", *TINY, "--method", "koh", "--option", "koh.damping=0.5", "--queries", "2",
                 "--output", str(output))
    assert result.exit_code == 0, result.output
    saved = torch.load(output, weights_only=True)
    assert saved["method_options"]["damping"] == 0.5


def test_another_data_root_gets_another_target(run, tmp_path):
    from tests.data_fixtures import write_cifar10

    args = ["--dataset", "cifar10", "--scale", "smoke", "--n-per-class", "4", "--epochs", "1", "--width", "8",
            "--device", "cpu"]
    roots = []
    for name, seed in (("a", 0), ("b", 1)):
        write_cifar10(tmp_path / name, per_batch=20, n_test=10, seed=seed)
        result = run("train", *args, "--data-root", str(tmp_path / name))
        assert result.exit_code == 0, result.output
        roots.append(artifact_path(result.output))
    assert roots[0] != roots[1]  # same config, different files: a new entry, not a silent reuse
    again = run("train", *args, "--data-root", str(tmp_path / "a"))
    assert artifact_path(again.output) == roots[0]


def test_oracle_check_reports_the_numerical_floor(run, tmp_path):
    result = run("oracle", *TINY, "--check", "--clusters", "3", "--queries", "3",
                 "--results-dir", str(tmp_path / "results"), "--tables-dir", str(tmp_path / "tables"))
    assert result.exit_code == 0, result.output
    assert "theta_0 jittered by 1 ulp: spearman" in result.output
    assert (tmp_path / "tables" / "noise_digits_smoke.md").exists()
    text = (tmp_path / "tables" / "noise_digits_smoke.md").read_text()
    assert "numerics: float64, activation relu" in text and "(paper)" not in text


def nothing_trained(tmp_path) -> bool:
    home = tmp_path / "home"
    return not any((home / kind).exists() for kind in ("target", "clusters", "synset", "retrained"))


@pytest.mark.parametrize("args, named", [
    (["attribute", "--set", "beta=x"], "beta"),
    (["run", "table2", "--set", "beta=x"], "beta"),
    (["attribute", "--set", "pairing=eq7"], "alg1, eq6"),
    (["attribute", "--method", "koh", "--hierarchical"], "ddm, ddm_match"),
    (["attribute", "--method", "exact", "--set", "hierarchical=true"], "hierarchical search"),
    (["attribute", "--hierarchical", "--objective", "validation"], "per-query objective"),
    (["train", "--set", "dataset=foo"], "--dataset"),
    (["train", "--width", "8", "--set", "width=16"], "given twice, as --width 8 and --set width=16"),
    (["train", "--set", "lr=0.1", "--set", "lr=0.2"], "given twice, as --set lr=0.1 and --set lr=0.2"),
])
def test_every_bad_option_exits_2_before_any_training(run, tmp_path, args, named):
    result = run(*args, "--dataset", "digits", "--device", "cpu")
    assert result.exit_code == 2, result.output
    assert named in result.output and "Traceback" not in result.output
    assert nothing_trained(tmp_path)


def test_an_unknown_objective_exits_2_with_every_method(run, tmp_path):
    import baselines  # noqa: F401
    import ddm.attribute  # noqa: F401
    from ddm.attributor import METHODS

    for method in METHODS.names():
        result = run("attribute", "--method", method, "--objective", "nope", "--dataset", "digits")
        assert result.exit_code == 2 and "dist1" in result.output, (method, result.output)
    assert nothing_trained(tmp_path)


def test_cli_choices_are_the_config_fields_choices():
    from ddm.config import field_choices

    params = {param.name: param for param in main.commands["train"].params}
    for name in ("dataset", "scale", "arch", "init", "optimizer"):
        assert tuple(params[name].type.choices) == field_choices(name)


def test_list_names_each_capability_with_its_methods(run):
    result = run("list")
    assert result.exit_code == 0
    assert "hierarchical search: ddm, ddm_match" in result.output
    assert "datamodel: ddm, ddm_match" in result.output


def test_a_missing_data_root_is_refused_before_any_work(tmp_path):
    result = CliRunner().invoke(main, ["--home", str(tmp_path / "home"), "train", "--dataset", "mnist",
                                       "--data-root", str(tmp_path / "absent")])
    assert result.exit_code == 2 and "does not exist" in result.output
    assert not (tmp_path / "home").exists()
