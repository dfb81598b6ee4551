"""How the operator layers read a tensor as a function sampled on a grid.

Sequences (B,N,D) are 1D fields along N with D channels; images (B,C,H,W) are
2D fields along H and W with C channels. The domain is the unit cube [0, 1)^d,
sampled at cell centres (i + 1/2)/n, so a grid of n points is a subset of the
grid of 3n points: that is what lets a test compare one layer's outputs at the
same physical points across resolutions.
"""
from __future__ import annotations

import torch

from archgram.shapes import IMAGE_RANK, Shape


def grid_sizes(shape: Shape) -> tuple[int, ...]:
    """Points per axis of the field: (H, W) for an image, (N,) for a sequence."""
    return tuple(shape[2:]) if len(shape) == IMAGE_RANK else (shape[1],)


def channels_first(x: torch.Tensor) -> torch.Tensor:
    """(B,C,H,W) unchanged; (B,N,D) -> (B,D,N), the layout convolutions take."""
    return x if x.dim() == IMAGE_RANK else x.transpose(1, 2)


def restore(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Inverse of ``channels_first`` for a tensor laid out like ``like``."""
    return y if like.dim() == IMAGE_RANK else y.transpose(1, 2)


def cell_centres(sizes: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(prod(sizes), d) coordinates in [0, 1)^d, row-major like ``flatten``."""
    axes = [(torch.arange(n, dtype=dtype, device=device) + 0.5) / n for n in sizes]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(sizes))
