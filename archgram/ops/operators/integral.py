"""Integral-kernel operator layer (catalog S02; the GNO layer of Li et al. 2020,
one of the layers Berner et al. 2025 name as discretisation-convergent).

    (K v)(x) = \\int_D kappa(x, y) v(y) dy

with kappa a small network of the coordinates (x, y), so the layer is defined on
functions, not on grids. On a grid it is discretised by a quadrature rule: the
midpoint rule on the cell centres of [0, 1)^d, weight 1/N per point. Refining
the grid changes only the quadrature, so the same weights converge to the same
operator as the grid is refined: discretisation convergence, the paper's
principle, in contrast to a convolution whose stencil is fixed in grid points.

The kernel returns a C x C matrix per pair of points, written in a learned
basis: kappa(x, y) = sum_r a_r(x, y) M_r, with a = MLP(x, y) in R^rank and
M_r in R^{C x C}. rank = C^2 is the full matrix-valued kernel; a smaller rank
keeps the N^2 kernel evaluations at N^2 * rank numbers instead of N^2 * C^2.
Cost is O(N^2) in the grid points (the paper's GNO restricts the integral to a
ball to cut it; here the whole domain is integrated, the exact operator).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from archgram.ops.operators.fields import cell_centres, channels_first, grid_sizes, restore
from archgram.ops.registry import Arg, Op, check_rank, register_op
from archgram.shapes import Shape, channels

#: Kernel evaluations per chunk of query points: bounds memory at any grid size.
PAIRS_PER_CHUNK = 1 << 18


@register_op(
    "integral_kernel",
    family="operators",
    refs=("S02",),
    args={
        "hidden": Arg(int, 32, low=1, doc="width of the kernel network kappa(x, y)"),
        "rank": Arg(int, 4, low=1, doc="channel matrices the kernel mixes; C*C is a full matrix kernel"),
    },
)
class IntegralKernel(Op):
    """(K v)(x) = int kappa(x, y) v(y) dy, kappa an MLP of coordinates, midpoint quadrature."""

    def __init__(self, shape: Shape, hidden: int = 32, rank: int = 4):
        super().__init__()
        c, d = channels(shape), len(grid_sizes(shape))
        self.kernel = nn.Sequential(nn.Linear(2 * d, hidden), nn.GELU(), nn.Linear(hidden, rank))
        self.mix = nn.Parameter(torch.randn(rank, c, c) / math.sqrt(rank * c))

    @classmethod
    def output_shape(cls, shape: Shape, hidden: int = 32, rank: int = 4) -> Shape:
        check_rank("integral_kernel", shape, 3, 4)
        return shape

    @classmethod
    def count_params(cls, shape: Shape, /, hidden: int = 32, rank: int = 4) -> int:
        c, d = channels(shape), len(grid_sizes(shape))
        return 2 * d * hidden + hidden + hidden * rank + rank + rank * c * c

    @classmethod
    def flops(cls, shape, out, params, /, hidden: int = 32, rank: int = 4) -> int:
        c, d = channels(shape), len(grid_sizes(shape))
        n = math.prod(grid_sizes(shape))
        kernel = 2 * n * n * (2 * d * hidden + hidden * rank)
        return kernel + 2 * shape[0] * (n * n * rank * c + n * rank * c * c)

    def kernel_values(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """a(x_i, y_j): (len(x), len(y), rank) kernel coefficients for points x, y of shape (., d)."""
        pair = torch.cat([x[:, None, :].expand(-1, len(y), -1), y[None].expand(len(x), -1, -1)], dim=-1)
        return self.kernel(pair)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = channels_first(x)
        b, c = v.shape[:2]
        sizes = tuple(v.shape[2:])
        n = math.prod(sizes)
        pts = cell_centres(sizes, v.dtype, v.device)
        v = v.reshape(b, c, n)
        rows = []
        for chunk in pts.split(max(1, PAIRS_PER_CHUNK // n)):
            a = self.kernel_values(chunk, pts)  # (m, N, rank)
            z = torch.einsum("mnr,bcn->brcm", a, v) / n  # midpoint rule, weight 1/N
            rows.append(torch.einsum("brcm,rco->bom", z, self.mix))
        return restore(torch.cat(rows, dim=-1).reshape(b, -1, *sizes), x)
