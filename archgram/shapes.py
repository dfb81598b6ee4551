"""Tensor shapes as plain tuples, and the two layouts every op speaks.

image mode: (B, C, H, W); sequence mode: (B, N, D). The channel axis is where
linear maps act (C for images, D for sequences).
"""
from __future__ import annotations

from math import prod

Shape = tuple[int, ...]

IMAGE_RANK = 4
SEQUENCE_RANK = 3
MODES = {IMAGE_RANK: "image", SEQUENCE_RANK: "sequence", 2: "vector"}


def mode(shape: Shape) -> str:
    """Name the layout of a shape, or 'rank-N' for layouts no op knows."""
    return MODES.get(len(shape), f"rank-{len(shape)}")


def channel_axis(shape: Shape) -> int:
    """Axis that linear maps act on: 1 for images, last otherwise."""
    return 1 if len(shape) == IMAGE_RANK else len(shape) - 1


def channels(shape: Shape) -> int:
    return shape[channel_axis(shape)]


def with_channels(shape: Shape, c: int) -> Shape:
    axis = channel_axis(shape)
    return shape[:axis] + (c,) + shape[axis + 1 :]


def positions(shape: Shape) -> int:
    """Number of positions per example (H*W or N); 1 for vectors."""
    axis = channel_axis(shape)
    return prod(d for i, d in enumerate(shape) if i not in (0, axis))


def numel(shape: Shape) -> int:
    return prod(shape)


def conv_length(n: int, k: int, s: int = 1, d: int = 1, pad: int = 0) -> int:
    """Output length of a convolution/pooling/unfold along one axis (PyTorch's
    formula); ``pad`` is the total padding added to that axis."""
    return (n + pad - d * (k - 1) - 1) // s + 1


def parse_shape(text: str) -> Shape:
    """Parse '8,3,32,32' (or '8x3x32x32') into a shape, with a clear error."""
    from archgram.errors import ArchgramError

    parts = [p for p in text.replace("x", ",").replace(" ", "").split(",") if p]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise ArchgramError(f"input shape {text!r} is not a comma-separated list of integers") from None
    if len(shape) not in (SEQUENCE_RANK, IMAGE_RANK) or min(shape, default=0) < 1:
        raise ArchgramError(
            f"input shape {text!r} must be B,C,H,W (image) or B,N,D (sequence) with positive sizes"
        )
    return shape


def fmt(shape) -> str:
    """'(8,3,32,32)'; a list of shapes (a merge's inputs) as '[(..), (..)]'."""
    if shape and isinstance(shape[0], (tuple, list)):
        return "[" + ", ".join(fmt(s) for s in shape) + "]"
    return "(" + ",".join(str(d) for d in shape) + ")"
