"""Routing ops: change the layout without learning anything (einspace's R).

im2col turns an image into a sequence of patches and records the patch grid in
the routing context; col2im reads that grid to fold the sequence back, the way
einspace's col2im uses its routing module's own im2col input.
"""
from __future__ import annotations

import torch.nn.functional as F

from archgram.errors import ShapeError
from archgram.ops.registry import Arg, Op, check_rank, register_op
from archgram.shapes import Shape, conv_length, fmt

EINSPACE = ("S57",)
GRID = "grid"


class _Free(Op):
    """Routing ops learn nothing."""

    @classmethod
    def count_params(cls, shape, /, **args):
        return 0


def _grid(h: int, w: int, k: int, s: int, p: int) -> tuple[int, int]:
    return conv_length(h, k, s, pad=2 * p), conv_length(w, k, s, pad=2 * p)


@register_op(
    "im2col",
    family="primitives",
    refs=EINSPACE,
    args={"k": Arg(int, low=1), "s": Arg(int, 1, low=1), "p": Arg(int, 0, low=0)},
)
class Im2Col(_Free):
    """Unfold k x k patches: (B,C,H,W) -> (B, H'W', C k k). Pushes the grid (H',W')."""

    uses_context = True

    def __init__(self, shape: Shape, k: int, s: int = 1, p: int = 0, ctx: tuple = ()):
        super().__init__()
        self.k, self.s, self.p = k, s, p

    @classmethod
    def transfer(cls, shape, ctx, k, s=1, p=0):
        check_rank("im2col", shape, 4)
        b, c, h, w = shape
        if 2 * p >= k and p:
            raise ShapeError(f"im2col: padding {p} must be below the kernel size {k}")
        gh, gw = _grid(h, w, k, s, p)
        if gh < 1 or gw < 1:
            raise ShapeError(f"im2col(k={k}, s={s}, p={p}) does not fit a {h}x{w} input")
        return (b, gh * gw, c * k * k), ctx + ((GRID, gh, gw),)

    def forward(self, x):
        return F.unfold(x, self.k, padding=self.p, stride=self.s).transpose(1, 2)

    def extra_repr(self) -> str:
        return f"k={self.k}, s={self.s}, p={self.p}"


@register_op("col2im", family="primitives", refs=EINSPACE)
class Col2Im(_Free):
    """Fold a sequence back to an image on the grid of the enclosing im2col:
    (B, H'W', D) -> (B, D, H', W')."""

    uses_context = True

    def __init__(self, shape: Shape, ctx: tuple = ()):
        super().__init__()
        _, self.gh, self.gw = ctx[-1]

    @classmethod
    def transfer(cls, shape, ctx):
        check_rank("col2im", shape, 3)
        if not ctx or ctx[-1][0] != GRID:
            raise ShapeError("col2im needs an enclosing im2col (no patch grid to fold back to)")
        _, gh, gw = ctx[-1]
        b, n, d = shape
        if n != gh * gw:
            raise ShapeError(f"col2im: {n} tokens do not fill the {gh}x{gw} grid of the enclosing im2col")
        return (b, d, gh, gw), ctx[:-1]

    def forward(self, x):
        b, n, d = x.shape
        return x.transpose(1, 2).reshape(b, d, self.gh, self.gw)

    def extra_repr(self) -> str:
        return f"grid={self.gh}x{self.gw}"


@register_op("permute", family="primitives", refs=EINSPACE, args={"order": Arg(tuple)})
class Permute(_Free):
    """Permute non-batch axes; ``order`` is a full permutation starting with 0."""

    def __init__(self, shape: Shape, order: tuple):
        super().__init__()
        self.order = tuple(order)

    @classmethod
    def output_shape(cls, shape, order):
        order = tuple(order)
        if sorted(order) != list(range(len(shape))) or order[0] != 0:
            raise ShapeError(f"permute{order} is not a batch-preserving permutation of {fmt(shape)}")
        return tuple(shape[i] for i in order)

    def forward(self, x):
        return x.permute(*self.order)

    def extra_repr(self) -> str:
        return f"order={self.order}"

    @classmethod
    def flops(cls, shape, out, params, /, **args) -> int:
        return 0


@register_op("to_sequence", family="primitives", refs=EINSPACE)
class ToSequence(_Free):
    """(B,C,H,W) -> (B, HW, C); pushes the grid so ``col2im`` can fold back."""

    uses_context = True

    def __init__(self, shape: Shape, ctx: tuple = ()):
        super().__init__()

    @classmethod
    def transfer(cls, shape, ctx):
        check_rank("to_sequence", shape, 4)
        b, c, h, w = shape
        return (b, h * w, c), ctx + ((GRID, h, w),)

    def forward(self, x):
        return x.flatten(2).transpose(1, 2)

    @classmethod
    def flops(cls, shape, out, params, /, **args) -> int:
        return 0


@register_op("global_pool", family="primitives", refs=EINSPACE)
class GlobalPool(_Free):
    """Mean over positions: (B,C,H,W) or (B,N,D) -> (B,1,C); keeps sequence mode."""

    def __init__(self, shape: Shape):
        super().__init__()

    @classmethod
    def output_shape(cls, shape):
        check_rank("global_pool", shape, 3, 4)
        return (shape[0], 1, shape[1] if len(shape) == 4 else shape[2])

    def forward(self, x):
        if x.dim() == 4:
            return x.mean(dim=(2, 3)).unsqueeze(1)
        return x.mean(dim=1, keepdim=True)
