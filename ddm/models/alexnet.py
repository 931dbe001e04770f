"""AlexNetIN: the small-image AlexNet of the dataset-condensation literature (DC code), with
instance norm after every convolution.

Five convolutions with canonical channels 128-192-256-192-192 (scaled by width/128), 2x2 max
pools after the 1st, 2nd and 5th, then a linear head on the flattened map.
"""

from __future__ import annotations

from torch import Tensor, nn

from ddm.models.base import (
    MODELS,
    Classifier,
    InShape,
    can_halve,
    conv_out,
    instance_norm,
    make_activation,
    reject_depth,
    scale_channels,
)

# (canonical out channels, kernel size, max-pool after this layer?)
LAYERS = ((128, 5, True), (192, 5, True), (256, 3, False), (192, 3, False), (192, 3, True))


class AlexNetIN(Classifier):
    """``embed`` is the flattened last feature map: [N, C, H, W] -> [N, c5 * h * w]."""

    def __init__(self, in_shape: InShape, num_classes: int, *, width: int,
                 activation: str = "relu") -> None:
        super().__init__()
        in_channels, map_h, map_w = in_shape
        blocks, channels = [], in_channels
        for index, (canonical, kernel, wants_pool) in enumerate(LAYERS):
            out_channels = scale_channels(canonical, width)
            padding = _padding(in_channels, index, kernel)
            map_h, map_w = conv_out(map_h, kernel, padding), conv_out(map_w, kernel, padding)
            is_last = index == len(LAYERS) - 1
            # Small inputs (8x8 digits) skip pools that would leave a later norm a 1x1 map.
            pool = wants_pool and can_halve(map_h, map_w, min_size=1 if is_last else 2)
            blocks.append(_conv_block(channels, out_channels, kernel, padding, pool, activation))
            if pool:
                map_h, map_w = map_h // 2, map_w // 2
            channels = out_channels
        self.features = nn.Sequential(*blocks)
        self._add_head(channels * map_h * map_w, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        return self.features(x).flatten(1)


def _padding(in_channels: int, index: int, kernel: int) -> int:
    # As in the DC code, 1-channel input gets extra padding so 28x28 -> 32x32 (like CIFAR).
    if index == 0 and in_channels == 1:
        return 4
    return kernel // 2


def _conv_block(in_channels: int, out_channels: int, kernel: int, padding: int,
                pool: bool, activation: str) -> nn.Sequential:
    layers = [nn.Conv2d(in_channels, out_channels, kernel, padding=padding),
              instance_norm(out_channels), make_activation(activation)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


@MODELS.register("alexnet")
def build_alexnet(in_shape: InShape, num_classes: int, *, width: int,
                  depth: int | None, activation: str = "relu") -> AlexNetIN:
    reject_depth("alexnet", depth)
    return AlexNetIN(in_shape, num_classes, width=width, activation=activation)
