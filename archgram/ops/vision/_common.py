"""Shape checks shared by the vision ops (image mode (B, C, H, W) unless stated)."""
from __future__ import annotations

from archgram.errors import ShapeError
from archgram.ops.registry import check_rank
from archgram.shapes import Shape, fmt


def image(name: str, shape: Shape, min_channels: int = 1) -> tuple[int, int, int, int]:
    """Return (B, C, H, W) or raise ShapeError naming ``name`` and the shape."""
    check_rank(name, shape, 4)
    b, c, h, w = shape
    if c < min_channels:
        raise ShapeError(f"{name} needs at least {min_channels} channels, got {fmt(shape)}")
    return b, c, h, w


def divides(name: str, shape: Shape, channels: int, parts: int, what: str) -> None:
    """Raise ShapeError unless ``channels`` splits evenly into ``parts`` ``what``."""
    if parts < 1 or channels % parts:
        raise ShapeError(f"{name}: {channels} channels of {fmt(shape)} do not split into {parts} {what}")


def tokens_of(shape: Shape) -> tuple[int, int]:
    """(tokens, channels): H*W pixels of an image or the N positions of a sequence."""
    if len(shape) == 4:
        return shape[2] * shape[3], shape[1]
    return shape[1], shape[2]
