"""ResNet-18 "AP" of the dataset-condensation literature (DC code's ResNet18_AP), with instance
norm: every strided convolution is replaced by a stride-1 convolution followed by a 2x2 average
pool, which keeps the network smooth in its input (the condensation papers' motivation).

3x3 stem (stride 1, no max-pool) -> 4 stages of 2 BasicBlocks with canonical planes
64/128/256/512 (scaled by width/128) -> global average pool -> linear head.
"""

from __future__ import annotations

from torch import Tensor, nn

from ddm.models.base import (
    MODELS,
    Classifier,
    InShape,
    can_halve,
    instance_norm,
    make_activation,
    reject_depth,
    scale_channels,
)

STAGE_PLANES = (64, 128, 256, 512)
BLOCKS_PER_STAGE = 2


def _conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    # No bias: the instance norm right after it would cancel one.
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)


class BasicBlockAP(nn.Module):
    """Two 3x3 convs with a residual; a downsampling block average-pools after the first conv.

    [N, in_channels, h, w] -> [N, planes, h', w'] with h' = h // 2 if ``downsample`` else h.
    """

    def __init__(self, in_channels: int, planes: int, downsample: bool, activation: str = "relu") -> None:
        super().__init__()
        self.act = make_activation(activation)
        self.conv1, self.norm1 = _conv3x3(in_channels, planes), instance_norm(planes)
        self.pool = nn.AvgPool2d(2) if downsample else nn.Identity()
        self.conv2, self.norm2 = _conv3x3(planes, planes), instance_norm(planes)
        self.shortcut = _shortcut(in_channels, planes, downsample)

    def forward(self, x: Tensor) -> Tensor:
        out = self.pool(self.act(self.norm1(self.conv1(x))))
        out = self.norm2(self.conv2(out))
        return self.act(out + self.shortcut(x))


def _shortcut(in_channels: int, planes: int, downsample: bool) -> nn.Module:
    if not downsample and in_channels == planes:
        return nn.Identity()
    layers = [nn.Conv2d(in_channels, planes, 1, bias=False)]
    if downsample:
        layers.append(nn.AvgPool2d(2))
    layers.append(instance_norm(planes))
    return nn.Sequential(*layers)


class ResNet18AP(Classifier):
    """``embed`` is the globally average-pooled last stage: [N, C, H, W] -> [N, planes_4]."""

    def __init__(self, in_shape: InShape, num_classes: int, *, width: int,
                 activation: str = "relu") -> None:
        super().__init__()
        in_channels, map_h, map_w = in_shape
        channels = scale_channels(STAGE_PLANES[0], width)
        self.stem = nn.Sequential(_conv3x3(in_channels, channels), instance_norm(channels),
                                  make_activation(activation))
        blocks = []
        for stage, canonical in enumerate(STAGE_PLANES):
            planes = scale_channels(canonical, width)
            for index in range(BLOCKS_PER_STAGE):
                # Stages 2-4 open by halving the map, unless that would leave the norms after
                # the pool a 1x1 map (8x8 inputs: 8 -> 4 -> 2 -> 2).
                downsample = stage > 0 and index == 0 and can_halve(map_h, map_w, min_size=2)
                blocks.append(BasicBlockAP(channels, planes, downsample, activation))
                if downsample:
                    map_h, map_w = map_h // 2, map_w // 2
                channels = planes
        self.blocks = nn.Sequential(*blocks)
        self._add_head(channels, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        return self.blocks(self.stem(x)).mean(dim=(2, 3))


@MODELS.register("resnet18_ap")
def build_resnet18_ap(in_shape: InShape, num_classes: int, *, width: int,
                      depth: int | None, activation: str = "relu") -> ResNet18AP:
    reject_depth("resnet18_ap", depth)
    return ResNet18AP(in_shape, num_classes, width=width, activation=activation)
