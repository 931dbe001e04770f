"""Weight initialization schemes (the paper's Fig. 8 compares kaiming, normal and xavier).

A scheme sets every conv / linear weight; biases are zero and norm layers are the identity
(weight 1, bias 0) in every scheme, so the schemes differ only where the paper says they do.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ddm.registry import Registry

WeightInit = Callable[[Tensor, torch.Generator], None]

_WEIGHT_INITS: Registry[WeightInit] = Registry("init scheme")

NORMAL_STD = 0.02  # the GPT-2 / ViT convention for plain normal init


@_WEIGHT_INITS.register("kaiming")
def _kaiming(weight: Tensor, generator: torch.Generator) -> None:
    # fan_in keeps the forward activations' scale through ReLU layers (He et al., 2015).
    nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="relu", generator=generator)


@_WEIGHT_INITS.register("normal")
def _normal(weight: Tensor, generator: torch.Generator) -> None:
    nn.init.normal_(weight, mean=0.0, std=NORMAL_STD, generator=generator)


@_WEIGHT_INITS.register("xavier")
def _xavier(weight: Tensor, generator: torch.Generator) -> None:
    nn.init.xavier_normal_(weight, generator=generator)


INIT_SCHEMES: tuple[str, ...] = tuple(_WEIGHT_INITS.names())

_WEIGHTED = (nn.Conv2d, nn.Linear)
_NORMS = (nn.GroupNorm, nn.LayerNorm)


def check_init_scheme(scheme: str) -> None:
    """Raise ConfigError listing the choices if ``scheme`` is unknown."""
    _WEIGHT_INITS[scheme]  # the registry raises, naming every scheme


@torch.no_grad()
def initialize(model: nn.Module, scheme: str, seed: int) -> None:
    """Re-initialize every parameter of ``model`` in place, drawing only from a private generator
    seeded with ``seed`` (the global torch RNG is neither read nor advanced)."""
    weight_init = _WEIGHT_INITS[scheme]
    generator = torch.Generator().manual_seed(seed)
    for name, module in model.named_modules():
        if isinstance(module, _WEIGHTED):
            weight_init(module.weight, generator)
        elif isinstance(module, _NORMS):
            nn.init.ones_(module.weight)
        elif any(True for _ in module.parameters(recurse=False)):
            # A parameter no scheme covers would keep PyTorch's default init and depend on
            # the global RNG: refuse rather than silently mix schemes.
            raise TypeError(f"no init rule for {type(module).__name__} at {name!r}")
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
