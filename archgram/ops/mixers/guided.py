"""ContMix guided by a top-down overview context, as OverLoCK's Focus-Net uses it
(Lou & Yu, CVPR 2025, "OverLoCK: An Overview-first-Look-Closely-next ConvNet with
Context-Mixing Dynamic Kernels"; catalog S50).

Paper's defining mechanism: a lightweight Overview-Net produces a coarse,
high-level context (top-down attention); in the Focus-Net, ContMix takes its
queries from the current feature map and its keys from that context: each
position's affinities to the S x S region centres of the context become, through
a learned linear map and a softmax, that position's k x k depthwise kernel, so
every kernel weight carries global, top-down context while the convolution
stays local.

What archgram does: ``contmix_guided`` is a merge op over ``[context, x]``::

  q        = W_q x                                   per position, per head
  centres  = W_k pool_S(context)                     S x S region centres
  kernel_p = softmax(W_map (q_p . centres / sqrt(C/G)))   k x k per head
  y        = W_o dynamic_conv_k(W_v x, kernel)

The context may have its own channels and a coarser grid (pooling to S x S
accepts any grid of at least S x S). In a grammar the Overview-Net is a branch:
``clone(2) <overview> identity contmix_guided``. The unary ``contmix`` is the
same op with the context taken from x.

What differs: nothing in the mechanism. OverLoCK's Focus-Net block also gates
and fuses the context into the features around ContMix, and its context is
updated across blocks (context flow); those are grammar wiring around this op.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from archgram.errors import ShapeError
from archgram.ops.mixers.dynamic import dynamic_conv
from archgram.ops.registry import Arg, MergeOp, check_rank, register_op
from archgram.shapes import Shape, fmt


@register_op(
    "contmix_guided",
    family="mixers",
    args={"k": Arg(int, 5, low=1, doc="dynamic kernel size (odd)"),
          "regions": Arg(int, 4, low=1, doc="S: the context is pooled to S x S region centres"),
          "heads": Arg(int, 2, low=1, doc="channel groups, one kernel per group and position")},
    refs=("S50",),
)
class GuidedContMix(MergeOp):
    """ContMix over [context, x]: queries from x, keys from the top-down context's region centres."""

    def __init__(self, shapes: list[Shape], k: int = 5, regions: int = 4, heads: int = 2):
        super().__init__()
        self.output_shape(shapes, k=k, regions=regions, heads=heads)
        c_ctx, c = shapes[0][1], shapes[1][1]
        self.k, self.regions, self.heads = k, regions, heads
        self.q, self.v = nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1)
        self.key = nn.Conv2d(c_ctx, c, 1)
        self.to_kernel = nn.Linear(regions * regions, k * k)
        self.proj = nn.Conv2d(c, c, 1)

    @classmethod
    def output_shape(cls, shapes: list[Shape], k: int = 5, regions: int = 4, heads: int = 2) -> Shape:
        if len(shapes) != 2:
            raise ShapeError(f"contmix_guided merges exactly 2 branches [context, x], got {len(shapes)}")
        ctx, x = shapes
        check_rank("contmix_guided", ctx, 4)
        check_rank("contmix_guided", x, 4)
        if ctx[0] != x[0]:
            raise ShapeError(f"contmix_guided: context {fmt(ctx)} and x {fmt(x)} differ in batch")
        if k % 2 == 0:
            raise ShapeError(f"contmix_guided: the kernel size must be odd to keep the grid of {fmt(x)}, got {k}")
        if x[1] % heads:
            raise ShapeError(f"contmix_guided: {x[1]} channels of {fmt(x)} do not split into {heads} heads")
        if regions > min(ctx[2], ctx[3]):
            raise ShapeError(f"contmix_guided: {regions} x {regions} regions exceed the context grid of {fmt(ctx)}")
        return x

    @classmethod
    def branch_target(cls, done: list[Shape], k: int = 5, regions: int = 4, heads: int = 2) -> tuple | None:
        return (done[0][0], None, None, None)

    @classmethod
    def count_params(cls, shapes: list[Shape], /, k: int = 5, regions: int = 4, heads: int = 2) -> int:
        c_ctx, c = shapes[0][1], shapes[1][1]
        return 3 * (c * c + c) + (c_ctx * c + c) + (regions * regions * k * k + k * k)

    @classmethod
    def flops(cls, shapes: list[Shape], out: Shape, params: int, /, k: int = 5, regions: int = 4, heads: int = 2) -> int:
        b, c, h, w = out
        s2, c_ctx = regions * regions, shapes[0][1]
        maps = 3 * 2 * c * c * h * w + 2 * c_ctx * c * s2  # q, v, proj; keys on the centres
        return b * (maps + 2 * c * s2 * h * w + 2 * heads * s2 * k * k * h * w + 2 * c * k * k * h * w)

    def kernels(self, context: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B, heads, H*W, k*k) softmax-normalised kernels: queries of x against the context's centres."""
        b, c, h, w = x.shape
        g = self.heads
        q = self.q(x).view(b, g, c // g, h * w)
        centres = self.key(F.adaptive_avg_pool2d(context, self.regions)).view(b, g, c // g, -1)
        affinity = torch.einsum("bgcp,bgcs->bgps", q, centres) * (c // g) ** -0.5
        return torch.softmax(self.to_kernel(affinity), dim=-1)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        context, x = xs
        b, c, h, w = x.shape
        v = self.v(x).view(b, self.heads, c // self.heads, h, w)
        return self.proj(dynamic_conv(v, self.kernels(context, x), self.k))
