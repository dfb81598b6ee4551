"""Routing ops: change the layout without learning anything (einspace's R).

im2col turns an image into a sequence of patches and records the patch grid in
the routing context; col2im reads that grid to fold the sequence back, the way
einspace's col2im uses its routing module's own im2col input. On a sequence
(B, L, D) both act in 1D: im2col unfolds windows of k positions and records a
1D grid (``SEQ_GRID``), col2im checks the token count against it and keeps the
sequence layout, so im2col -> linear -> col2im is a Conv1d there as it is a
Conv2d on images. einspace's own code unfolds images only.

A context entry is a plain tuple: ``(GRID, h, w)`` for an image's patch grid,
``(SEQ_GRID, length)`` for a sequence's windows.
"""
from __future__ import annotations

import torch.nn.functional as F

from archgram.errors import ShapeError
from archgram.ops.registry import Arg, Op, check_rank, register_op
from archgram.shapes import Shape, conv_length, fmt

EINSPACE = ("S57",)
GRID = "grid"
SEQ_GRID = "grid1d"


class _Free(Op):
    """Routing ops learn nothing."""

    @classmethod
    def count_params(cls, shape, /, **args):
        return 0


def _grid(h: int, w: int, k: int, s: int, p: int) -> tuple[int, int]:
    return conv_length(h, k, s, pad=2 * p), conv_length(w, k, s, pad=2 * p)


def _unfold_sequence(shape: Shape, ctx: tuple, k: int, s: int, p: int) -> tuple[Shape, tuple]:
    """im2col's rule on (B, L, D): windows of k positions -> (B, L', D k)."""
    if ctx and ctx[-1][0] == GRID:
        _, gh, gw = ctx[-1]
        raise ShapeError(f"im2col: {fmt(shape)} holds the tokens of an open {gh}x{gw} patch grid, not a sequence "
                         "(a 1D window would run across its row ends); close the grid with col2im first")
    b, n, d = shape
    length = conv_length(n, k, s, pad=2 * p)
    if length < 1:
        raise ShapeError(f"im2col(k={k}, s={s}, p={p}) does not fit a sequence of length {n}")
    return (b, length, d * k), ctx + ((SEQ_GRID, length),)


@register_op(
    "im2col",
    family="primitives",
    refs=EINSPACE,
    args={"k": Arg(int, low=1), "s": Arg(int, 1, low=1), "p": Arg(int, 0, low=0)},
)
class Im2Col(_Free):
    """Unfold k x k patches: (B,C,H,W) -> (B, H'W', C k k), pushing the grid (H',W');
    on a sequence, windows of k positions: (B,L,D) -> (B, L', D k), pushing (L',).
    Features are channel-major, kernel position last (F.unfold's order)."""

    uses_context = True

    def __init__(self, shape: Shape, k: int, s: int = 1, p: int = 0, ctx: tuple = ()):
        super().__init__()
        self.k, self.s, self.p = k, s, p

    @classmethod
    def transfer(cls, shape, ctx, k, s=1, p=0):
        check_rank("im2col", shape, 3, 4)
        if 2 * p >= k and p:
            raise ShapeError(f"im2col: padding {p} must be below the kernel size {k}")
        if len(shape) == 3:
            return _unfold_sequence(shape, ctx, k, s, p)
        b, c, h, w = shape
        gh, gw = _grid(h, w, k, s, p)
        if gh < 1 or gw < 1:
            raise ShapeError(f"im2col(k={k}, s={s}, p={p}) does not fit a {h}x{w} input")
        return (b, gh * gw, c * k * k), ctx + ((GRID, gh, gw),)

    def forward(self, x):
        if x.dim() == 3:  # (B, L, D) as a 1-row image (B, D, 1, L)
            x = x.transpose(1, 2).unsqueeze(2)
            return F.unfold(x, (1, self.k), padding=(0, self.p), stride=(1, self.s)).transpose(1, 2)
        return F.unfold(x, self.k, padding=self.p, stride=self.s).transpose(1, 2)

    def extra_repr(self) -> str:
        return f"k={self.k}, s={self.s}, p={self.p}"


@register_op("col2im", family="primitives", refs=EINSPACE)
class Col2Im(_Free):
    """Fold a sequence back to an image on the grid of the enclosing im2col:
    (B, H'W', D) -> (B, D, H', W'). On a sequence's 1D grid the tokens already
    are the sequence: (B, L', D) -> (B, L', D), the token count checked."""

    uses_context = True

    def __init__(self, shape: Shape, ctx: tuple = ()):
        super().__init__()
        self.grid = tuple(ctx[-1][1:])

    @classmethod
    def transfer(cls, shape, ctx):
        check_rank("col2im", shape, 3)
        if not ctx or ctx[-1][0] not in (GRID, SEQ_GRID):
            raise ShapeError("col2im needs an enclosing im2col (no patch grid to fold back to)")
        b, n, d = shape
        if ctx[-1][0] == SEQ_GRID:
            length = ctx[-1][1]
            if n != length:
                raise ShapeError(f"col2im: {n} tokens do not match the sequence length {length} of the enclosing im2col")
            return shape, ctx[:-1]
        _, gh, gw = ctx[-1]
        if n != gh * gw:
            raise ShapeError(f"col2im: {n} tokens do not fill the {gh}x{gw} grid of the enclosing im2col")
        return (b, d, gh, gw), ctx[:-1]

    def forward(self, x):
        if len(self.grid) == 1:
            return x
        b, n, d = x.shape
        return x.transpose(1, 2).reshape(b, d, *self.grid)

    def extra_repr(self) -> str:
        return "grid=" + "x".join(map(str, self.grid))


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
