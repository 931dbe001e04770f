"""ConvNet: the standard network of the dataset-condensation literature (Gidaris & Komodakis
2018 as used by DC/DM/MTT), with instance norm ("ConvNet" in the DDM paper).

depth x [conv3x3(width) -> instance norm -> activation (ReLU in the paper) -> avgpool 2] -> flatten -> linear.

The activation is a config field (``ModelConfig.activation``; default ReLU, the paper's). In float32 a
ReLU network's exact-retraining oracle disagrees with its own rerun under another thread count
(per-query Spearman 0.53 on digits smoke, tables/noise_*): ReLU's derivative jumps at 0, so a rounding
difference flips which units pass gradient and SGD carries the flip forward. The suite therefore runs in
float64 by default; ``--set activation=gelu`` keeps float32 at rounding level for the oracle.
"""

from __future__ import annotations

from torch import Tensor, nn

from ddm.models.base import (
    MODELS,
    Classifier,
    InShape,
    can_halve,
    check_depth,
    conv_out,
    instance_norm,
    make_activation,
)

DEFAULT_DEPTH = 3


class ConvNet(Classifier):
    """``embed`` is the flattened last feature map: [N, C, H, W] -> [N, width * h * w]."""

    def __init__(self, in_shape: InShape, num_classes: int, *, width: int, depth: int,
                 activation: str = "relu") -> None:
        super().__init__()
        channels, map_h, map_w = in_shape
        blocks = []
        for layer in range(depth):
            # As in the DC code, 1-channel (MNIST-like) input is padded by 3 so 28x28 -> 32x32.
            padding = 3 if channels == 1 and layer == 0 else 1
            map_h, map_w = conv_out(map_h, 3, padding), conv_out(map_w, 3, padding)
            # The norm of the next layer needs >= 2x2; after the last layer 1x1 is fine.
            pool = can_halve(map_h, map_w, min_size=1 if layer == depth - 1 else 2)
            blocks.append(_conv_block(channels if layer == 0 else width, width, padding, pool, activation))
            if pool:
                map_h, map_w = map_h // 2, map_w // 2
        self.features = nn.Sequential(*blocks)
        self._add_head(width * map_h * map_w, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        return self.features(x).flatten(1)


def _conv_block(in_channels: int, out_channels: int, padding: int, pool: bool,
                activation: str) -> nn.Sequential:
    layers = [nn.Conv2d(in_channels, out_channels, 3, padding=padding),
              instance_norm(out_channels), make_activation(activation)]
    if pool:
        layers.append(nn.AvgPool2d(2))
    return nn.Sequential(*layers)


@MODELS.register("convnet")
def build_convnet(in_shape: InShape, num_classes: int, *, width: int,
                  depth: int | None, activation: str = "relu") -> ConvNet:
    depth = DEFAULT_DEPTH if depth is None else depth
    check_depth("convnet", depth)
    return ConvNet(in_shape, num_classes, width=width, depth=depth, activation=activation)
