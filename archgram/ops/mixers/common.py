"""Layout helpers shared by the mixers: every op speaks image (B,C,H,W) and/or sequence (B,N,D)."""
from __future__ import annotations

import torch
from torch import nn

from archgram.errors import ShapeError
from archgram.ops.registry import Op, check_rank
from archgram.shapes import IMAGE_RANK, Shape, channels, fmt, positions


def to_channels_first(x: torch.Tensor) -> torch.Tensor:
    """Images stay (B,C,H,W); sequences become (B,D,N) for 1D convolution."""
    return x if x.dim() == IMAGE_RANK else x.transpose(1, 2)


from_channels_first = to_channels_first  # the same transpose undoes itself


def depthwise(c: int, k: int, rank: int, bias: bool = True, dilation: int = 1) -> nn.Module:
    """Depthwise 'same' convolution over the positions: 2D for images, 1D along N for sequences."""
    conv = nn.Conv2d if rank == IMAGE_RANK else nn.Conv1d
    return conv(c, c, k, padding=k // 2 * dilation, dilation=dilation, groups=c, bias=bias)


def hidden(c: int, ratio: float) -> int:
    return max(1, round(c * ratio))


class Mixer(Op):
    """Shape-preserving op over the listed ranks; subclasses add their own checks in ``check``."""

    ranks: tuple[int, ...] = (3, 4)

    @classmethod
    def check(cls, shape: Shape, **args) -> None:
        """Extra refusals beyond the rank (odd kernels, divisibility...)."""

    @classmethod
    def output_shape(cls, shape: Shape, **args) -> Shape:
        check_rank(cls.spec.name, shape, *cls.ranks)
        cls.check(shape, **args)
        return shape

    @classmethod
    def refuse(cls, shape: Shape, reason: str) -> None:
        raise ShapeError(f"{cls.spec.name} cannot take {fmt(shape)}: {reason}")

    @classmethod
    def need_odd(cls, shape: Shape, k: int) -> None:
        if k % 2 == 0:
            cls.refuse(shape, f"kernel {k} must be odd to keep the size")

    @classmethod
    def flops(cls, shape, out, params, /, **args) -> int:
        return 2 * params * shape[0] * positions(shape) + 8 * shape[0] * positions(shape) * channels(shape)


__all__ = ["Mixer", "depthwise", "from_channels_first", "hidden", "to_channels_first"]
