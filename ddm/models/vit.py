"""Simple ViT (Beyer et al. 2022, "Better plain ViT baselines"; lucidrains' ``simple_vit``).

Patches -> LayerNorm -> linear -> LayerNorm, plus a fixed 2-D sin-cos position embedding; then
pre-norm transformer blocks (attention, GELU MLP of hidden 2*dim; the config's ``activation`` field
leaves it GELU), mean pool over tokens,
LayerNorm, linear head. The embedding dim is ``width`` itself (not scaled), so it must be
divisible by the number of heads.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ddm.errors import ConfigError
from ddm.models.base import MODELS, Classifier, InShape, check_depth, make_activation

DEFAULT_DEPTH = 4
HEADS = 4
MLP_RATIO = 2
MAX_GRID = 8  # at most 8x8 = 64 tokens keeps attention cheap on CPU
POSITION_TEMPERATURE = 10_000.0


def patch_size_for(map_h: int, map_w: int) -> int:
    """The smallest power-of-two patch (at least 2) whose grid is at most 8x8.

    8x8 -> 2 (grid 4x4), 28x28 -> 4 (7x7), 32x32 -> 4 (8x8), 64x64 -> 8 (8x8).
    """
    patch = 2
    while max(map_h, map_w) > MAX_GRID * patch:
        patch *= 2
    if map_h % patch or map_w % patch:
        raise ConfigError(f"simple_vit needs image sides divisible by its patch size {patch}; "
                          f"got {map_h}x{map_w}")
    return patch


def sincos_position_embedding(grid_h: int, grid_w: int, dim: int) -> Tensor:
    """Fixed 2-D sin-cos embedding: [grid_h * grid_w, dim], rows in row-major patch order.

    A quarter of the channels each hold sin / cos of the column and of the row index, at
    geometrically spaced frequencies from 1 down to 1 / temperature.
    """
    quarter = dim // 4
    exponents = torch.arange(quarter, dtype=torch.float64) / max(quarter - 1, 1)
    frequencies = POSITION_TEMPERATURE ** -exponents
    rows, cols = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    row_angles = rows.flatten()[:, None] * frequencies[None, :]
    col_angles = cols.flatten()[:, None] * frequencies[None, :]
    table = torch.cat([col_angles.sin(), col_angles.cos(), row_angles.sin(), row_angles.cos()],
                      dim=1)
    return table.float()


class SelfAttention(nn.Module):
    """Pre-norm multi-head self-attention: tokens [N, T, dim] -> [N, T, dim] (the residual
    branch). Plain matmuls, so it vmaps and differentiates everywhere."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)

    def forward(self, tokens: Tensor) -> Tensor:
        batch, count, dim = tokens.shape
        query, key, value = self.to_qkv(self.norm(tokens)).chunk(3, dim=-1)
        query, key, value = (t.reshape(batch, count, self.heads, -1).transpose(1, 2)
                             for t in (query, key, value))
        scores = query @ key.transpose(-1, -2) * query.shape[-1] ** -0.5
        mixed = scores.softmax(dim=-1) @ value  # [N, heads, T, dim / heads]
        return self.to_out(mixed.transpose(1, 2).reshape(batch, count, dim))


def _feed_forward(dim: int, activation: str) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, MLP_RATIO * dim), make_activation(activation),
                         nn.Linear(MLP_RATIO * dim, dim))


class TransformerBlock(nn.Module):
    """tokens [N, T, dim] -> [N, T, dim]: attention and MLP, each added to the residual."""

    def __init__(self, dim: int, heads: int, activation: str = "gelu") -> None:
        super().__init__()
        self.attention = SelfAttention(dim, heads)
        self.feed_forward = _feed_forward(dim, activation)

    def forward(self, tokens: Tensor) -> Tensor:
        tokens = tokens + self.attention(tokens)
        return tokens + self.feed_forward(tokens)


class SimpleViT(Classifier):
    """``embed`` is the normed mean token: [N, C, H, W] -> [N, dim]."""

    pos_embedding: Tensor

    def __init__(self, in_shape: InShape, num_classes: int, *, dim: int, depth: int,
                 activation: str = "gelu") -> None:
        super().__init__()
        channels, map_h, map_w = in_shape
        self.patch = patch_size_for(map_h, map_w)
        patch_dim = channels * self.patch**2
        self.patch_embedding = nn.Sequential(nn.LayerNorm(patch_dim), nn.Linear(patch_dim, dim),
                                             nn.LayerNorm(dim))
        # A constant, not a parameter: non-persistent so it is neither trained, stacked by
        # functional_call users, nor saved in state_dicts; .to(device) still moves it.
        grid = sincos_position_embedding(map_h // self.patch, map_w // self.patch, dim)
        self.register_buffer("pos_embedding", grid, persistent=False)
        self.blocks = nn.Sequential(*(TransformerBlock(dim, HEADS, activation) for _ in range(depth)))
        self.final_norm = nn.LayerNorm(dim)
        self._add_head(dim, num_classes)

    def patchify(self, x: Tensor) -> Tensor:
        """images [N, C, H, W] -> patches [N, (H/p)(W/p), p*p*C], row-major over the grid."""
        batch, channels, map_h, map_w = x.shape
        p = self.patch
        grid = x.reshape(batch, channels, map_h // p, p, map_w // p, p)
        return grid.permute(0, 2, 4, 3, 5, 1).reshape(batch, -1, p * p * channels)

    def embed(self, x: Tensor) -> Tensor:
        tokens = self.patch_embedding(self.patchify(x)) + self.pos_embedding.to(x.dtype)
        return self.final_norm(self.blocks(tokens).mean(dim=1))


@MODELS.register("simple_vit")
def build_simple_vit(in_shape: InShape, num_classes: int, *, width: int,
                     depth: int | None, activation: str = "gelu") -> SimpleViT:
    depth = DEFAULT_DEPTH if depth is None else depth
    check_depth("simple_vit", depth)
    if width % HEADS:
        raise ConfigError(f"simple_vit uses width as its embedding dim, which must be divisible "
                          f"by its {HEADS} heads; got width={width}")
    # The ViT's MLP is GELU, its own architecture's, whatever ``activation`` says (that field chooses
    # the CNNs' nonlinearity: ReLU in the paper); a smooth network is numerically quiet already.
    return SimpleViT(in_shape, num_classes, dim=width, depth=depth, activation="gelu")
