"""The common base of every network (:class:`Classifier`), the architecture registry, and the
small building blocks the architectures share (width scaling, instance norm, safe pooling).

Every network here must run under ``torch.func.functional_call`` and ``torch.func.vmap`` over
stacked parameters (DDM fine-tunes many copies in one vectorized call). Hence: no BatchNorm and
no other running buffers, no in-place ops, and no Python control flow that depends on the data;
all shape decisions (whether to pool, how big the flattened features are) are made once, at
construction, from ``in_shape``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol

from torch import Tensor, nn

from ddm.errors import ConfigError
from ddm.registry import Registry

InShape = tuple[int, int, int]  # (channels, height, width) of one input image

# The canonical (paper) ConvNet width; other architectures scale their channels by width / this.
REFERENCE_WIDTH = 128
MIN_CHANNELS = 8


class Classifier(nn.Module, ABC):
    """A network split into a feature extractor (:meth:`embed`) and a linear ``head``.

    Subclasses build their feature layers, call :meth:`_add_head` with the feature size, and
    implement :meth:`embed`; ``forward`` is always ``head(embed(x))``.
    """

    embed_dim: int
    num_classes: int
    head: nn.Linear

    def _add_head(self, embed_dim: int, num_classes: int) -> None:
        self.embed_dim = embed_dim
        self.num_classes = num_classes
        self.head = nn.Linear(embed_dim, num_classes)

    @abstractmethod
    def embed(self, x: Tensor) -> Tensor:
        """Features before the classifier: images [N, C, H, W] -> [N, embed_dim]."""

    def forward(self, x: Tensor) -> Tensor:
        """Logits: images [N, C, H, W] -> [N, num_classes]."""
        return self.head(self.embed(x))


class ModelBuilder(Protocol):
    """What each architecture registers: constructs the network (initialization happens later)."""

    def __call__(self, in_shape: InShape, num_classes: int, *, width: int,
                 depth: int | None, activation: str) -> Classifier: ...


# The networks' nonlinearity. ``relu`` is the paper's (ConvNet, AlexNet, ResNet); ``gelu`` is smooth:
# ReLU's derivative jumps at 0, so a float32 rounding difference (another thread count's reduction
# order) flips which units pass gradient and SGD carries the flip forward, while under GELU the same
# difference stays at rounding level (see ``ModelConfig.activation``).
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module ``name`` (one of :data:`ACTIVATIONS`)."""
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; choose one of: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


MODELS: Registry[ModelBuilder] = Registry("architecture")


def scale_channels(canonical: int, width: int) -> int:
    """``canonical`` channels (as in the width-128 network) scaled by width/128, at least 8.

    One ``width`` knob thus makes every architecture narrow or wide together.
    """
    return max(MIN_CHANNELS, round(canonical * width / REFERENCE_WIDTH))


def instance_norm(channels: int) -> nn.GroupNorm:
    """Instance norm as GroupNorm with one group per channel: per-sample statistics only, no
    running buffers, so it is safe under vmap (unlike BatchNorm)."""
    return nn.GroupNorm(channels, channels, affine=True)


def can_halve(height: int, width: int, min_size: int = 1) -> bool:
    """Whether a 2x2 pool of an [height, width] map keeps both sides >= ``min_size``.

    Pools that are followed by an instance norm need ``min_size=2``: normalizing a 1x1 map over
    its single position outputs the constant bias, which would erase the input's signal.
    """
    return min(height, width) // 2 >= min_size


def conv_out(size: int, kernel: int, padding: int) -> int:
    """Spatial size after a stride-1 convolution."""
    return size + 2 * padding - kernel + 1


def reject_depth(arch: str, depth: int | None) -> None:
    """Architectures with a fixed layout refuse a depth rather than silently ignoring it."""
    if depth is not None:
        raise ConfigError(f"{arch} has a fixed depth; leave depth unset (got depth={depth})")


def check_depth(arch: str, depth: int) -> None:
    if depth < 1:
        raise ConfigError(f"{arch} depth must be >= 1, got {depth}")
