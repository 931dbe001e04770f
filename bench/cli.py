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

from ddm.cache import ArtifactCache
from ddm.config import OPTIMIZERS, SCALES, ExperimentConfig, preset, with_overrides
from ddm.data import DATASETS, dataset_status
from ddm.errors import DdmError
from ddm.models import INIT_SCHEMES, MODELS


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
    """Shared state for every command: where the cache lives."""

    cache: ArtifactCache


@click.group(cls=BenchGroup)
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), envvar="DDM_BENCH_HOME",
              default=None, help="Artifact cache root [env DDM_BENCH_HOME; ~/.cache/ddm-bench].")
@click.version_option(package_name="ddm-bench")
@click.pass_context
def main(ctx: click.Context, home: Path | None) -> None:
    """ddm-bench: training-data attribution with Distilled Datamodels, and its baselines."""
    ctx.obj = BenchContext(cache=ArtifactCache(home))


def experiment_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by every command that needs a target: they map onto config fields."""
    options = [
        click.option("--dataset", type=click.Choice(DATASETS.names()), default="digits",
                     show_default=True, help="Dataset (digits is bundled; see `data list`)."),
        click.option("--scale", type=click.Choice(SCALES), default="smoke", show_default=True,
                     help="Preset: smoke (seconds), small (minutes on CPU), paper (GPU)."),
        click.option("--arch", type=click.Choice(MODELS.names()), default=None,
                     help="Network architecture [preset: convnet]."),
        click.option("--width", type=click.IntRange(min=1), default=None,
                     help="ConvNet width; other nets scale by width/128 [preset]."),
        click.option("--depth", type=click.IntRange(min=1), default=None,
                     help="ConvNet/ViT depth [architecture default]."),
        click.option("--init", type=click.Choice(INIT_SCHEMES), default=None,
                     help="Weight initialization [kaiming]."),
        click.option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs [preset]."),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="SGD learning rate [preset]."),
        click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=None,
                     help="sgd [preset] or adam (use adam, lr 1e-3, for simple_vit)."),
        click.option("--batch-size", type=click.IntRange(min=1), default=None,
                     help="Mini-batch size [preset]."),
        click.option("--n-per-class", type=click.IntRange(min=1), default=None,
                     help="Training images per class [preset]."),
        click.option("--seed", type=int, default=None, help="Seed of theta_0 and batch order [0]."),
        click.option("--data-root", type=click.Path(file_okay=False), default=None,
                     help="Directory with dataset files (IDX, CIFAR pickles, tiny-imagenet-200)."),
        click.option("--device", default="auto", show_default=True,
                     help="auto (CUDA when present), cpu, cuda, cuda:N."),
    ]
    return functools.reduce(lambda cmd, option: option(cmd), reversed(options), command)


def build_config(dataset: str, scale: str, **fields: Any) -> ExperimentConfig:
    """The preset of ``scale`` for ``dataset`` with the CLI's field overrides applied."""
    return with_overrides(preset(scale, dataset), **fields)


CONFIG_FIELDS = ("arch", "width", "depth", "init", "epochs", "lr", "optimizer", "batch_size",
                 "n_per_class", "seed")


def config_from_options(options: dict[str, Any]) -> ExperimentConfig:
    return build_config(options["dataset"], options["scale"],
                        **{name: options[name] for name in CONFIG_FIELDS})


@main.group()
def data() -> None:
    """Datasets: what is available here and where it was found."""


@data.command("list")
@click.option("--data-root", type=click.Path(file_okay=False), default=None)
def data_list(data_root: str | None) -> None:
    """List every registered dataset, whether it is available, and where (or how to get it)."""
    for status in dataset_status(data_root):
        mark = "yes" if status.available else "no "
        where = status.where if status.available else status.how_to_get
        click.echo(f"{status.name:<14} {mark}  {where}")


@main.command()
@experiment_options
@click.pass_obj
def train(obj: BenchContext, **options: Any) -> None:
    """Train the target network (or reuse it from the cache) and report its accuracy."""
    from ddm.target import get_target

    config = config_from_options(options)
    target = get_target(config, data_root=options["data_root"], device=options["device"],
                        cache=obj.cache)
    meta = target.meta
    click.echo(f"dataset {config.data.dataset} ({meta['n_train']} training images, "
               f"{meta['data_source']})")
    click.echo(f"arch {config.model.arch} width {config.model.width}, "
               f"{config.train.epochs} epochs, {len(target.checkpoint_steps)} checkpoints")
    click.echo(f"test accuracy {meta['test_acc']:.4f}  validation accuracy {meta['val_acc']:.4f}")
    click.echo(f"trained in {meta['train_seconds']:.1f} s on {meta['device']}")
    click.echo(f"artifacts: {target.entry.path}")


if __name__ == "__main__":  # pragma: no cover
    main()
