"""MgNO's multigrid parameterisation of a linear operator (He, Liu & Xu 2023; catalog S01).

Paper: a neural-operator layer is sigma(sum_j W_ij u_j + B_ij), with each linear
operator W parameterised as one multi-channel V-cycle of multigrid (MgNet's
W_Mg: smoothing S^{l,i}, residual operator A^l, restriction R, prolongation P,
all convolutions), so cheap local stencils give a global operator; the bias B is
a function on the domain.
archgram: ``mgno`` is W_Mg exactly as below, on 1D and 2D grids; sigma and a
bias are separate grammar choices (``act``, ``pointwise``) in ``operators.pcfg``.
Differs: the grammar's bias is a constant per channel, not a learned function
on the grid (a bias tensor of the grid's size would bind the op to one
resolution; the V-cycle itself runs at any).

One V-cycle with learned convolutions. At level l the right-hand side f_l is
smoothed (u <- u + S_{l,i} * (f_l - A_l * u) for i = 1..smooth, from u = 0), the residual
f_l - A_l * u_l is restricted to the next coarser grid with a stride-2
convolution R_l, the coarse problem is solved by the same recursion, and its
solution is prolonged back with a stride-2 transposed convolution P_l and added:
u_l <- u_l + P_l * u_{l+1}. Every map is a bias-free convolution, so the whole
op is one bounded linear operator whose kernels are local at every scale: the
multigrid structure gives a global receptive field from 3-point stencils.

Like the paper, the op acts on any grid (convolutions do not fix the
resolution); the grid only has to survive ``levels - 1`` halvings. As in the
paper's W_Mg, smoothing happens on the way down only (no post-smoothing) and each
smoothing iteration has its own kernel. Sequences (B,N,D) are 1D fields along N;
images 2D.
"""
from __future__ import annotations

import torch
from torch import nn

from archgram.errors import ShapeError
from archgram.ops.registry import Arg, Op, check_rank, register_op
from archgram.shapes import IMAGE_RANK, Shape, channels, fmt


def coarsest(n: int, levels: int) -> int:
    """Grid size after ``levels - 1`` stride-2 restrictions (kernel 3, padding 1)."""
    for _ in range(levels - 1):
        n = (n + 1) // 2
    return n


def _check_grid(shape: Shape, levels: int) -> None:
    grid = shape[2:] if len(shape) == IMAGE_RANK else shape[1:2]
    if min(coarsest(n, levels) for n in grid) < 2:
        raise ShapeError(f"mgno: {levels} levels coarsen a {fmt(shape)} grid below 2 points per axis")


@register_op(
    "mgno",
    family="operators",
    refs=("S01",),
    args={
        "levels": Arg(int, 3, low=1, high=8, doc="grids in the V-cycle (finest included)"),
        "smooth": Arg(int, 1, low=1, high=4, doc="smoothing iterations per level"),
    },
)
class MultigridOperator(Op):
    """MgNO V-cycle: a linear operator from smoothing, restriction and prolongation convolutions."""

    def __init__(self, shape: Shape, levels: int = 3, smooth: int = 1):
        super().__init__()
        c = channels(shape)
        self.image = len(shape) == IMAGE_RANK
        self.levels, self.smooth = levels, smooth
        conv = nn.Conv2d if self.image else nn.Conv1d
        up = nn.ConvTranspose2d if self.image else nn.ConvTranspose1d
        self.A = nn.ModuleList(conv(c, c, 3, padding=1, bias=False) for _ in range(levels))
        self.S = nn.ModuleList(
            nn.ModuleList(conv(c, c, 3, padding=1, bias=False) for _ in range(smooth)) for _ in range(levels)
        )
        self.R = nn.ModuleList(conv(c, c, 3, stride=2, padding=1, bias=False) for _ in range(levels - 1))
        self.P = nn.ModuleList(up(c, c, 3, stride=2, padding=1, bias=False) for _ in range(levels - 1))

    @classmethod
    def output_shape(cls, shape: Shape, levels: int = 3, smooth: int = 1) -> Shape:
        check_rank("mgno", shape, 3, 4)
        _check_grid(shape, levels)
        return shape

    @classmethod
    def count_params(cls, shape: Shape, /, levels: int = 3, smooth: int = 1) -> int:
        k = 9 if len(shape) == IMAGE_RANK else 3
        return channels(shape) ** 2 * k * ((3 + smooth) * levels - 2)

    @classmethod
    def flops(cls, shape, out, params, /, **args) -> int:
        # Each coarser level has a quarter (half in 1D) of the positions; bound by the finest.
        return 2 * 2 * params * shape[0] * (out[2] * out[3] if len(out) == IMAGE_RANK else out[1])

    def vcycle(self, f: torch.Tensor, level: int = 0) -> torch.Tensor:
        A, S = self.A[level], self.S[level]
        u = S[0](f)  # the first iteration from u = 0
        for smooth in S[1:]:
            u = u + smooth(f - A(u))
        if level + 1 < self.levels:
            coarse = self.vcycle(self.R[level](f - A(u)), level + 1)
            u = u + self.P[level](coarse, output_size=f.shape[2:])
        return u

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_grid(tuple(x.shape), self.levels)
        if self.image:
            return self.vcycle(x)
        return self.vcycle(x.transpose(1, 2)).transpose(1, 2)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, smooth={self.smooth}"


__all__ = ["MultigridOperator", "coarsest"]
