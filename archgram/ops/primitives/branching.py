"""Branching (split) and aggregation (merge) ops: einspace's B module ends."""
from __future__ import annotations

import math

import torch

from archgram.errors import ShapeError
from archgram.ops.registry import Arg, MergeOp, SplitOp, register_op
from archgram.shapes import Shape, fmt

EINSPACE = ("S57",)


@register_op("clone", family="primitives", refs=EINSPACE, args={"n": Arg(int, 2, low=2, high=16)})
class Clone(SplitOp):
    """Copy the input into n branches."""

    def __init__(self, shape: Shape, n: int = 2):
        super().__init__()
        self.n = n

    @classmethod
    def output_shapes(cls, shape, n=2):
        return [shape] * n

    def forward(self, x):
        return [x] * self.n

    def extra_repr(self) -> str:
        return f"n={self.n}"


@register_op(
    "group",
    family="primitives",
    refs=EINSPACE,
    args={"n": Arg(int, 2, low=2, high=16), "dim": Arg(int, 1, low=1, high=3)},
)
class Group(SplitOp):
    """Split the input into n equal chunks along ``dim``, one per branch."""

    def __init__(self, shape: Shape, n: int = 2, dim: int = 1):
        super().__init__()
        self.n, self.dim = n, dim

    @classmethod
    def output_shapes(cls, shape, n=2, dim=1):
        if dim >= len(shape):
            raise ShapeError(f"group(dim={dim}) needs a rank-{dim + 1} input, got {fmt(shape)}")
        if shape[dim] % n:
            raise ShapeError(f"group: size {shape[dim]} of dim {dim} is not divisible into {n} chunks")
        return [shape[:dim] + (shape[dim] // n,) + shape[dim + 1 :]] * n

    def forward(self, x):
        return list(torch.chunk(x, self.n, dim=self.dim))

    def extra_repr(self) -> str:
        return f"n={self.n}, dim={self.dim}"


def _same_rank(name: str, shapes: list[Shape]) -> None:
    if len({len(s) for s in shapes}) != 1:
        raise ShapeError(f"{name}: branches end in different layouts {', '.join(map(fmt, shapes))}")


@register_op("add", family="primitives", refs=EINSPACE)
class Add(MergeOp):
    """Sum the branches (residual connections)."""

    commutative = True

    def __init__(self, shapes: list[Shape]):
        super().__init__()

    @classmethod
    def output_shape(cls, shapes):
        if len(set(shapes)) != 1:
            raise ShapeError(f"add needs equal shapes, got {', '.join(map(fmt, shapes))}")
        return shapes[0]

    @classmethod
    def branch_target(cls, done):
        return done[0]

    def forward(self, xs):
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


@register_op("multiply", family="primitives", refs=EINSPACE)
class Multiply(Add):
    """Elementwise product of the branches (gating)."""

    def forward(self, xs):
        out = xs[0]
        for x in xs[1:]:
            out = out * x
        return out

    @classmethod
    def output_shape(cls, shapes):
        if len(set(shapes)) != 1:
            raise ShapeError(f"multiply needs equal shapes, got {', '.join(map(fmt, shapes))}")
        return shapes[0]


@register_op("concat", family="primitives", refs=EINSPACE, args={"dim": Arg(int, 1, low=1, high=3)})
class Concat(MergeOp):
    """Concatenate the branches along ``dim``."""

    def __init__(self, shapes: list[Shape], dim: int = 1):
        super().__init__()
        self.dim = dim

    @classmethod
    def output_shape(cls, shapes, dim=1):
        _same_rank("concat", shapes)
        first = shapes[0]
        if dim >= len(first):
            raise ShapeError(f"concat(dim={dim}) needs rank > {dim}, got {fmt(first)}")
        for s in shapes[1:]:
            if s[:dim] + s[dim + 1 :] != first[:dim] + first[dim + 1 :]:
                raise ShapeError(f"concat(dim={dim}): shapes {fmt(first)} and {fmt(s)} differ off dim {dim}")
        return first[:dim] + (sum(s[dim] for s in shapes),) + first[dim + 1 :]

    @classmethod
    def branch_target(cls, done, dim=1):
        first = done[0]
        if dim >= len(first):
            return None
        return first[:dim] + (None,) + first[dim + 1 :]

    def forward(self, xs):
        return torch.cat(xs, dim=self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


@register_op("matmul", family="primitives", refs=EINSPACE, args={"scaled": Arg(bool, False)})
class MatMul(MergeOp):
    """Matrix product of two branches, a @ b (optionally times 1/sqrt(a's last dim)):
    with a softmax, einspace's route to dot-product attention."""

    def __init__(self, shapes: list[Shape], scaled: bool = False):
        super().__init__()
        self.scale = 1.0 / math.sqrt(shapes[0][-1]) if scaled else 1.0

    @classmethod
    def output_shape(cls, shapes, scaled=False):
        if len(shapes) != 2:
            raise ShapeError(f"matmul merges exactly 2 branches, got {len(shapes)}")
        a, b = shapes
        if len(a) != len(b) or a[:-2] != b[:-2] or a[-1] != b[-2]:
            raise ShapeError(f"matmul: {fmt(a)} @ {fmt(b)} do not chain")
        return a[:-1] + (b[-1],)

    @classmethod
    def branch_target(cls, done, scaled=False):
        a = done[0]
        return a[:-2] + (a[-1], None)

    @classmethod
    def flops(cls, shapes, out, params, /, **args) -> int:
        return 2 * math.prod(out) * shapes[0][-1]

    def forward(self, xs):
        a, b = xs
        out = a @ b
        return out * self.scale if self.scale != 1.0 else out

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}"
