"""The four networks of the DDM paper's experiments, behind one call: :func:`build_model`.

- ``convnet``: depth x [conv3x3 -> instance norm -> activation -> avgpool], ``width`` channels.
- ``alexnet``: AlexNetIN, channels 128-192-256-192-192 scaled by width/128.
- ``resnet18_ap``: ResNet-18 with instance norm and avg-pool downsampling, planes
  64/128/256/512 scaled by width/128.
- ``simple_vit``: Simple ViT, embedding dim = ``width`` (divisible by its 4 heads).

``width`` is the ConvNet width (paper: 128). AlexNet and ResNet scale their canonical channel
counts by width/128 (rounded, at least 8) and the ViT uses width as its embedding dim, so one
scale preset's ``width`` makes all four narrow or wide together. All of them take the inputs
(1, 8, 8), (1, 28, 28), (3, 32, 32) and (3, 64, 64), and work with ``torch.func``
(``functional_call`` + ``vmap`` over stacked parameters): no BatchNorm, no running buffers.

``activation`` (``relu``, the paper's CNNs; ``gelu``, smooth) replaces every nonlinearity; ``dtype``
is the parameters' floating type. Weights are drawn in float32 and then cast, so a float64 network
starts from exactly the float32 network's theta_0.
"""

from __future__ import annotations

import torch

from ddm.errors import ConfigError
from ddm.models import alexnet, convnet, resnet, vit  # noqa: F401  (registers the architectures)
from ddm.models.base import ACTIVATIONS, MODELS, Classifier, InShape, make_activation
from ddm.models.init import INIT_SCHEMES, check_init_scheme, initialize

__all__ = ["ACTIVATIONS", "INIT_SCHEMES", "MODELS", "Classifier", "build_model"]


def build_model(arch: str, in_shape: tuple[int, int, int], num_classes: int, *,
                width: int = 128, depth: int | None = None, init: str = "kaiming",
                seed: int = 0, activation: str = "relu",
                dtype: torch.dtype = torch.float32) -> Classifier:
    """A freshly initialized ``arch`` for images of ``in_shape`` = (C, H, W).

    ``depth`` None is the architecture default (convnet 3, simple_vit 4 blocks); alexnet and
    resnet18_ap have a fixed depth and refuse one. The weights are a function of the arguments
    and ``seed`` only, and building leaves the global torch RNG state untouched.
    Raises ConfigError (listing the choices) for an unknown ``arch`` or ``init``.
    """
    builder = MODELS[arch]
    check_init_scheme(init)
    make_activation(activation)  # refuses an unknown name before anything is built
    in_shape = _check_shapes(in_shape, num_classes, width)
    # Construction draws PyTorch's default init from the global RNG; fork it so those draws
    # (which initialize() overwrites anyway) do not disturb the caller's random stream.
    with torch.random.fork_rng(devices=[]):
        model = builder(in_shape, num_classes, width=width, depth=depth, activation=activation)
    initialize(model, init, seed)
    return model.to(dtype)


def _check_shapes(in_shape: tuple[int, int, int], num_classes: int, width: int) -> InShape:
    if len(in_shape) != 3 or min(in_shape) < 1:
        raise ConfigError(f"in_shape must be (channels, height, width) > 0, got {in_shape}")
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    if width < 1:
        raise ConfigError(f"width must be >= 1, got {width}")
    channels, map_h, map_w = (int(size) for size in in_shape)
    return channels, map_h, map_w
