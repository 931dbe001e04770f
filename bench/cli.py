"""The ``ddm-bench`` command line. Each command is a thin call into plain library functions.

Errors a user can fix (unknown dataset, missing data, bad config, corrupted cache) print one clear
message and exit with code 2; they never show a traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from baselines.exact import EXECUTORS, PROTOCOLS
from ddm.config import (
    DISTILL_MODES,
    ExperimentConfig,
    field_choices,
    parse_assignment,
    preset,
    with_overrides,
)
from ddm.data import dataset_status
from ddm.errors import ConfigError, DdmError
from ddm.objectives import OBJECTIVES
from ddm.resolver import Resolver


class UserError(click.ClickException):
    """A problem with the user's input or environment: message and exit code 2."""

    exit_code = 2


class BenchGroup(click.Group):
    """A Click group that turns every :class:`DdmError` into a clean exit-2 message."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DdmError as err:
            raise UserError(str(err)) from err


@dataclass
class BenchContext:
    """Shared state for every command: the resolver of the artifact cache."""

    resolver: Resolver


@click.group(cls=BenchGroup)
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), envvar="DDM_BENCH_HOME",
              default=None, help="Artifact cache root [env DDM_BENCH_HOME; ~/.cache/ddm-bench].")
@click.version_option(package_name="ddm-bench")
@click.pass_context
def main(ctx: click.Context, home: Path | None) -> None:
    """ddm-bench: training-data attribution with Distilled Datamodels, and its baselines."""
    ctx.obj = BenchContext(resolver=Resolver(home))


def experiment_options(command: Callable[..., Any] | None = None, *,
                       default_scale: str = "smoke") -> Callable[..., Any]:
    """Options shared by every command that needs a target: they map onto config fields."""
    if command is None:
        return functools.partial(experiment_options, default_scale=default_scale)
    options = [
        click.option("--dataset", type=click.Choice(field_choices("dataset")), default="digits",
                     show_default=True, help="Dataset (digits is bundled; see `data list`)."),
        click.option("--scale", type=click.Choice(field_choices("scale")), default=default_scale,
                     show_default=True,
                     help="Preset: smoke (seconds), small (minutes on CPU), paper (GPU)."),
        click.option("--arch", type=click.Choice(field_choices("arch")), default=None,
                     help="Network architecture [preset: convnet]."),
        click.option("--width", type=click.IntRange(min=1), default=None,
                     help="ConvNet width; other nets scale by width/128 [preset]."),
        click.option("--depth", type=click.IntRange(min=1), default=None,
                     help="ConvNet/ViT depth [architecture default]."),
        click.option("--init", type=click.Choice(field_choices("init")), default=None,
                     help="Weight initialization [kaiming]."),
        click.option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs [preset]."),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="SGD learning rate [preset]."),
        click.option("--optimizer", type=click.Choice(field_choices("optimizer")), default=None,
                     help="sgd [preset] or adam (use adam, lr 1e-3, for simple_vit)."),
        click.option("--batch-size", type=click.IntRange(min=1), default=None,
                     help="Mini-batch size [preset]."),
        click.option("--n-per-class", type=click.IntRange(min=1), default=None,
                     help="Training images per class [preset]."),
        click.option("--seed", type=int, default=None, help="Seed of theta_0 and batch order [0]."),
        click.option("--data-root", type=click.Path(file_okay=False, exists=True), default=None,
                     help="Directory with dataset files (IDX, CIFAR pickles, tiny-imagenet-200)."),
        click.option("--device", default="auto", show_default=True,
                     help="auto (CUDA when present), cpu, cuda, cuda:N."),
        click.option("--set", "assignments", multiple=True, metavar="FIELD=VALUE",
                     help="Override any config field, e.g. --set lr_img=1.0 --set pairing=eq6 "
                          "(repeatable; see ddm/config.py for every field and its help)."),
    ]
    return functools.reduce(lambda cmd, option: option(cmd), reversed(options), command)


def build_config(dataset: str, scale: str, **fields: Any) -> ExperimentConfig:
    """The preset of ``scale`` for ``dataset`` with the CLI's field overrides applied."""
    return with_overrides(preset(scale, dataset), **fields)


CONFIG_FIELDS = ("arch", "width", "depth", "init", "epochs", "lr", "optimizer", "batch_size",
                 "n_per_class", "seed")


def method_option(command: Any) -> Any:
    """--option METHOD.FIELD=VALUE: a method's own options (the influence baselines' solver
    settings); they enter the cached cells' keys and the results like every config field."""
    return click.option(
        "--option", "method_assignments", multiple=True, metavar="METHOD.FIELD=VALUE",
        help="A method's own option, e.g. --option koh.depth=1000 --option scaleup.top_eigen=50 "
             "(repeatable; fields: baselines/influence.py, fastif.py, scaleup.py).")(command)


def config_from_options(options: dict[str, Any]) -> ExperimentConfig:
    """The config the command's options describe. Each field has one way in: its own flag (the
    fields in ``CONFIG_FIELDS``, and ``--dataset``, which also picks the preset) or ``--set``; a
    field given both ways, or ``--set dataset=``, is refused before any work."""
    fields = {name: options[name] for name in CONFIG_FIELDS}
    given = {name: f"--{name.replace('_', '-')} {value}"
             for name, value in fields.items() if value is not None}
    for name, value in (parse_assignment(text) for text in options.get("assignments", ())):
        if name == "dataset":
            raise ConfigError("the dataset also picks the preset's settings: use --dataset, "
                              "not --set dataset=")
        if name in given and fields[name] != value:
            raise ConfigError(f"{name} given twice, as {given[name]} and --set {name}={value}; give one")
        fields[name], given[name] = value, f"--set {name}={value}"
    return build_config(options["dataset"], options["scale"], **fields)


@main.group()
def data() -> None:
    """Datasets: what is available here and where it was found."""


@data.command("list")
@click.option("--data-root", type=click.Path(file_okay=False, exists=True), default=None)
def data_list(data_root: str | None) -> None:
    """List every registered dataset, whether it is available, and where (or how to get it)."""
    for status in dataset_status(data_root):
        if status.problem:
            click.echo(f"{status.name:<14} bad  {status.where}: {status.problem}; {status.how_to_get}")
            continue
        mark = "yes" if status.available else "no "
        where = status.where if status.available else status.how_to_get
        click.echo(f"{status.name:<14} {mark}  {where}")


@main.command()
@experiment_options
@click.pass_obj
def train(obj: BenchContext, **options: Any) -> None:
    """Train the target network (or reuse it from the cache) and report its accuracy."""
    from ddm.stages import get_target, identified

    config = config_from_options(options)
    target = get_target(config, resolver=obj.resolver, data_root=options["data_root"],
                        device=options["device"])
    meta = target.meta
    click.echo(f"dataset {config.data.dataset} ({meta['n_train']} training images, "
               f"{meta['data_source']})")
    click.echo(f"arch {config.model.arch} width {config.model.width}, "
               f"{config.train.epochs} epochs, {len(target.checkpoint_steps)} checkpoints")
    click.echo(f"test accuracy {meta['test_acc']:.4f}  validation accuracy {meta['val_acc']:.4f}")
    click.echo(f"trained in {meta['train_seconds']:.1f} s on {meta['device']}")
    where = obj.resolver.location("target", identified(config, options["data_root"], obj.resolver))
    click.echo(f"artifacts: {where}")



def _stages(obj: BenchContext, options: dict[str, Any]):
    from ddm.pipeline import prepare

    config = config_from_options(options)
    return prepare(config, data_root=options["data_root"], device=options["device"], resolver=obj.resolver)


@main.command()
@experiment_options
@click.option("--mode", type=click.Choice(DISTILL_MODES), default="reverse", show_default=True,
              help="reverse: DDM's reverse gradient matching; match: gradient matching (DDM-match).")
@click.option("--class-level", is_flag=True,
              help="Also distil the class-level synset (K = L), the hierarchical search's first level.")
@click.pass_obj
def distill(obj: BenchContext, mode: str, class_level: bool, **options: Any) -> None:
    """Distil the synset of every cluster (offline stage) and report time and matching loss."""
    from ddm.diagnostics import matching_report

    stages = _stages(obj, options)
    config, clustering = stages.config, stages.clustering
    levels = [("cluster", clustering)] + ([("class", clustering.class_level())] if class_level else [])
    for level, grouping in levels:
        report = matching_report(config, stages.target, stages.data, grouping, level, mode,
                                 resolver=obj.resolver)
        click.echo(f"{level}-level synset ({mode}): K = {report.n_clusters}, "
                   f"{report.n_images} images, {report.steps} steps "
                   f"(cap {config.distill.distill_steps}, labels {config.distill.synset_labels})")
        click.echo(f"  distilled in {report.seconds:.1f} s = {report.seconds / report.train_seconds:.2f}x "
                   "the target's training time")
        click.echo(f"  matching loss over all checkpoint pairs: {report.loss_before:.2f} -> "
                   f"{report.loss_after:.2f}")


@main.command()
@experiment_options
@click.option("--method", default="ddm", show_default=True, help="Attribution method (see `list`).")
@click.option("--queries", "n_queries", type=click.IntRange(min=1), default=20, show_default=True,
              help="Random test samples to explain.")
@click.option("--query-seed", type=int, default=0, show_default=True)
@click.option("--objective", type=click.Choice(OBJECTIVES.names()), default="dist1", show_default=True)
@click.option("--hierarchical", is_flag=True,
              help="Score by the hierarchical search (L class + C cluster deletions): the same as --set "
                   "hierarchical=true; methods with that capability only (see `list`).")
@method_option
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write W, scores and located clusters [attribution-<...>.pt].")
@click.pass_obj
def attribute(obj: BenchContext, method: str, n_queries: int, query_seed: int, objective: str,
              hierarchical: bool, method_assignments: tuple[str, ...], output: Path | None,
              **options: Any) -> None:
    """Attribute test predictions to training clusters and write the attribution matrix."""
    from ddm.pipeline import check_request, run_attribution

    method_options = parsed_method_options(method_assignments)
    if hierarchical:  # the flag is the config field's shortcut
        options["assignments"] = (*options["assignments"], "hierarchical=true")
    # an unknown method, option or value, or a capability the method lacks, fails before any training
    check_request(method, objective, config_from_options(options).attribute.hierarchical)
    stages = _stages(obj, options)
    output = output or Path(f"attribution-{stages.config.data.dataset}-{stages.config.scale}-{method}-"
                            f"{objective}.pt")
    report = run_attribution(stages, method, n_queries, query_seed, objective, output,
                             options=method_options.get(method))
    for line in report:
        click.echo(line)


def parsed_method_options(assignments: tuple[str, ...]) -> dict[str, Any]:
    from ddm.attributor import parse_method_options

    chosen = parse_method_options(assignments)
    if "exact" in chosen:
        raise ConfigError("the oracle's options are --protocol and --retrain-seeds, not --option exact.*")
    return chosen


def executor_config(executor: str, workers: int, retrain_batch: int, ray_address: str | None,
                    ray_gpus: float) -> Any:
    from baselines.exact import ExecutorConfig

    return ExecutorConfig(executor=executor, workers=workers, batch=retrain_batch, ray_address=ray_address,
                          ray_gpus=ray_gpus)


def executor_options(command: Any) -> Any:
    """--executor / --retrain-batch / --ray-address / --ray-gpus: how exact retraining runs (never
    what it computes; every path writes the same cache entries)."""
    for option in reversed([
        click.option("--executor", type=click.Choice(EXECUTORS), default="local",
                     show_default=True,
                     help="Exact retraining: in this process, in --workers processes, or as Ray tasks."),
        click.option("--retrain-batch", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Same-seed retrainings per vectorized pass (local) or per Ray task; > 1 pays "
                          "on a GPU, not on CPU cores."),
        click.option("--ray-address", default=None,
                     help="Ray cluster to join ('auto', 'ray://head:10001'); default: start a local one."),
        click.option("--ray-gpus", type=click.FloatRange(min=0), default=0.0, show_default=True,
                     help="GPUs per Ray task (0: one CPU each)."),
    ]):
        command = option(command)
    return command


@main.command()
@experiment_options
@click.option("--protocol", type=click.Choice(PROTOCOLS), default="same-seed",
              show_default=True, help="same-seed: target's theta_0 and batch order; fresh-seed: new ones.")
@click.option("--retrain-seeds", "n_seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="fresh-seed only: retrainings per cluster.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Retrain in this many processes (each gets cores / workers threads).")
@executor_options
@click.option("--check", is_flag=True,
              help="Also retrain the target and every removal a second time under rounding-level "
                   "perturbations (theta_0 moved by one ulp; the other CPU thread count) and report how "
                   "well the oracle agrees with itself (the `noise` target: results/ and tables/).")
@click.option("--clusters", "floor_clusters", type=click.IntRange(min=2), default=None,
              help="--check only: rerun this many evenly spaced clusters [all K].")
@click.option("--queries", "n_queries", type=click.IntRange(min=1), default=20, show_default=True,
              help="--check only: test queries whose deletion effects are compared.")
@click.option("--query-seed-base", type=click.IntRange(min=0), default=100, show_default=True,
              help="--check only: the queries' seed (a check is development data: >= 100).")
@click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("results"),
              show_default=True)
@click.option("--tables-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("tables"),
              show_default=True)
@click.pass_obj
def oracle(obj: BenchContext, protocol: str, n_seeds: int, workers: int, executor: str, retrain_batch: int,
           ray_address: str | None, ray_gpus: float, check: bool, floor_clusters: int | None, n_queries: int,
           query_seed_base: int, results_dir: Path, tables_dir: Path, **options: Any) -> None:
    """Retrain without every single cluster (the ground truth); resumable and cached. With --check,
    measure the oracle's numerical noise floor too."""
    import time

    from baselines.exact import ExactAttributor, OracleConfig

    oracle_options = OracleConfig(protocol=protocol, retrain_seeds=n_seeds)
    execution = executor_config(executor, workers, retrain_batch, ray_address, ray_gpus)
    if check:
        from bench.base import RunContext
        from bench.render import table_path
        from bench.runner import run_target

        ctx = RunContext(config_from_options(options), obj.resolver, data_root=options["data_root"],
                         device=options["device"], n_queries=n_queries, query_seed_base=query_seed_base,
                         oracle=oracle_options, execution=execution, floor_clusters=floor_clusters,
                         results_dir=results_dir, tables_dir=tables_dir)
        result = run_target("noise", ctx, [0])
        for row in result.rows:
            numbers = ", ".join(f"{column} {result.cells[row][column].mean:.6g}" for column in result.columns)
            click.echo(f"{row}: {numbers}")
        click.echo(f"-> {table_path(tables_dir, result, '.md')}")
        return
    stages = _stages(obj, options)
    attributor = ExactAttributor(stages.config, options=oracle_options, execution=execution,
                                 data_root=options["data_root"], resolver=obj.resolver)
    start = time.perf_counter()
    attributor.fit(stages.target, stages.data, stages.clustering)
    seconds = time.perf_counter() - start
    click.echo(f"{len(attributor.specs)} retrained models ({protocol}, K = {stages.clustering.n_clusters}) "
               f"ready in {seconds:.1f} s; target trained in {stages.target.meta['train_seconds']:.1f} s")
    click.echo(f"cache: {obj.resolver.root / 'retrained'}")


@main.command("list")
def list_command() -> None:
    """List the benchmark targets, datasets, architectures and attribution methods."""
    import bench.targets  # noqa: F401
    from bench.base import TARGETS
    from ddm.attributor import CAPABILITIES, METHODS, methods_with

    click.echo("targets:  " + ", ".join([*TARGETS.names(), "all"]))
    click.echo("datasets: " + ", ".join(field_choices("dataset")))
    click.echo("archs:    " + ", ".join(field_choices("arch")))
    click.echo("methods:  " + ", ".join(METHODS.names()))
    for capability in CAPABILITIES:
        click.echo(f"  {capability}: " + (", ".join(methods_with(capability)) or "-"))
    click.echo("objectives: " + ", ".join(OBJECTIVES.names()))


def target_names() -> list[str]:
    import bench.targets  # noqa: F401
    from bench.base import TARGETS

    return [*TARGETS.names(), "all"]


@main.command()
@click.argument("target", type=click.Choice(target_names()))
@experiment_options(default_scale="small")
@click.option("--seeds", "n_seeds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Seeds 0..N-1 (each reruns training, clustering, distillation and queries).")
@click.option("--queries", "n_queries", type=click.IntRange(min=1), default=20, show_default=True,
              help="Random test samples explained per seed (paper: 20).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Parallel processes for exact retraining (each gets cores / workers threads).")
@executor_options
@click.option("--protocol", type=click.Choice(PROTOCOLS), default="same-seed",
              show_default=True,
              help="Exact retraining: same-seed (target's theta_0 and batch order minus the removed rows) or "
                   "fresh-seed (new seeds per removed set, outputs averaged; adds retraining noise).")
@click.option("--retrain-seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="fresh-seed only: retrainings averaged per removed set.")
@method_option
@click.option("--query-seed-base", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed s draws its test queries with seed s + this (development runs: >= 100; the "
                   "committed tables: 0).")
@click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("results"),
              show_default=True)
@click.option("--tables-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("tables"),
              show_default=True)
@click.option("--keep-committed", is_flag=True,
              help="Take the seeds the result file in --results-dir already holds under the same config, "
                   "methods, queries and protocol from it instead of recomputing them (adding a seed to a "
                   "committed table on a fresh clone); each kept seed keeps its recorded code version.")
@click.option("--checkpoint-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also keep each finished seed's cells and the finished rows of an unfinished seed as "
                   "small JSON files under DIR (and the finished rows of a long influence fit), and "
                   "start from them where the artifact cache has none: commit DIR (e.g. "
                   "results/checkpoints) to carry a run of hours to another machine.")
@click.pass_obj
def run(obj: BenchContext, target: str, n_seeds: int, n_queries: int, workers: int, executor: str,
        retrain_batch: int, ray_address: str | None, ray_gpus: float, protocol: str, retrain_seeds: int,
        query_seed_base: int, method_assignments: tuple[str, ...], results_dir: Path, tables_dir: Path,
        keep_committed: bool, checkpoint_dir: Path | None, **options: Any) -> None:
    """Run a table, figure or the timings (or `all`); write results/ and render tables/."""
    from baselines.exact import OracleConfig
    from bench.base import TARGETS, RunContext
    from bench.render import table_path
    from bench.runner import run_target

    config = config_from_options(options)
    if checkpoint_dir is not None:
        try:  # before any work: a run of hours must not fail at its first carried row
            checkpoint_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise click.BadParameter(f"cannot create {checkpoint_dir}: {err.strerror}",
                                     param_hint="--checkpoint-dir") from err
    obj.resolver.carry_to(checkpoint_dir)
    ctx = RunContext(config, obj.resolver, data_root=options["data_root"], device=options["device"],
                     n_queries=n_queries, query_seed_base=query_seed_base,
                     oracle=OracleConfig(protocol=protocol, retrain_seeds=retrain_seeds),
                     execution=executor_config(executor, workers, retrain_batch, ray_address, ray_gpus),
                     method_options=parsed_method_options(method_assignments),
                     results_dir=results_dir, tables_dir=tables_dir)
    if target != "all" and (reason := TARGETS[target]().unsupported(config)):
        raise ConfigError(reason)
    for name in TARGETS.names() if target == "all" else [target]:
        if reason := TARGETS[name]().unsupported(config):
            click.echo(f"{name}: skipped ({reason})")
            continue
        result = run_target(name, ctx, list(range(n_seeds)), keep_committed=keep_committed)
        click.echo(f"{name}: {result.wall_seconds:.1f} s -> "
                   f"{table_path(tables_dir, result, '.md')} (results in {results_dir})")


@main.command()
@click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("results"),
              show_default=True)
@click.option("--tables-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("tables"),
              show_default=True)
@click.option("--check", is_flag=True,
              help="Instead of rendering, tell for each result whether a stage it depends on changed its "
                   "schema or code since it was computed, or the methods' option fields a rerun records "
                   "did; exit 1 on a stale result the README does not list as stale, or a listed one "
                   "that is current (bench/staleness.py).")
@click.option("--readme", type=click.Path(dir_okay=False, path_type=Path), default=Path("README.md"),
              show_default=True, help="--check only: the README whose stale-results list is compared.")
@click.option("--commands", is_flag=True,
              help="Instead of rendering, print the `ddm-bench run` command that regenerates each result "
                   "(with --check: each stale one), one per line after a comment naming the file.")
def report(results_dir: Path, tables_dir: Path, check: bool, readme: Path, commands: bool) -> None:
    """Render every result under results/ into tables/ (Markdown and PNG), --check them, or print the
    --commands that regenerate them."""
    if not results_dir.is_dir():  # every mode reads it: a typo is an error, not an empty report
        raise click.UsageError(f"no results directory {results_dir}")
    if commands:
        print_commands(results_dir, readme if check else None)
        return
    if check:
        check_staleness(results_dir, readme)
        return
    from bench.runner import render_all

    for path in render_all(results_dir, tables_dir):
        click.echo(str(path))


def print_commands(results_dir: Path, readme: Path | None) -> None:
    """One regeneration command per result (``bench/rerun.py``); with a README, only the stale ones."""
    from bench.rerun import command_line, option_assignments
    from bench.results import find_results, load_result

    repo = Path(results_dir).resolve().parent
    names = [path.resolve().relative_to(repo).as_posix() for path in find_results(results_dir)]
    if readme is not None:  # the check names each result as `names` does
        from bench.staleness import check_all

        stale = {verdict.path for verdict in check_all(results_dir, repo, readme)[0] if verdict.stale}
        names = [name for name in names if name in stale]
    for name in names:
        result = load_result(repo / name)
        click.echo(f"# {name}")
        try:
            click.echo(command_line(result))
        except ValueError as error:
            click.echo(f"# no command: {error}")
            continue
        if option_assignments(result):  # an old default and an explicit --option look alike
            click.echo(f"#   its --option values differ from today's defaults; under the defaults: "
                       f"{command_line(result, options=False)}")


def check_staleness(results_dir: Path, readme: Path) -> None:
    from bench.staleness import check_all

    repo = Path(results_dir).resolve().parent
    verdicts, problems = check_all(results_dir, repo, readme)
    for verdict in verdicts:
        state = "schema changed" if verdict.schema_changes else "stale" if verdict.stale else "current"
        click.echo(f"{state:<14} {verdict.path}")
        for line in verdict.reasons:
            click.echo(f"               {line}")
    stale = sum(verdict.stale for verdict in verdicts)
    click.echo(f"{len(verdicts)} results: {len(verdicts) - stale} current, {stale} stale")
    if problems:
        for problem in problems:
            click.echo(f"problem: {problem}", err=True)
        raise SystemExit(1)
