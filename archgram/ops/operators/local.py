"""Local-kernel operator layers (catalog S02): Berner et al. 2025 keep local
operations in a neural operator only in a form that converges as the grid is
refined, the differential and local integral kernels of Liu-Schiaffini et al.
2024. A plain convolution does not: its stencil spans a fixed number of grid
points, so on a finer grid it acts on a shrinking neighbourhood and tends to a
pointwise map.

``differential_kernel``: a learned stencil w with its mean removed, divided by
the grid spacing h. For smooth v, sum_k (w_k - mean w) v(x + k h) / h
= (sum_k k w_k) . grad v(x) + O(h): a learned first-order differential operator
(directional derivatives mixed over channels), the same one at every grid.

``local_integral_kernel``: (K v)(x) = int_{|z|_inf < r} kappa(z) v(x + z) dz with
a support radius r fixed in physical units (the domain is [0, 1)^d) and kappa a
continuous function, a tensor product of ``basis`` hat functions per axis that
vanish at the support's edge. On a grid of spacing h the kernel is sampled at the
offsets k h inside the support and weighted by h^d (quadrature), so a finer grid
uses more taps for the same physical neighbourhood.

Both pad periodically, the same domain convention as ``spectral_conv``.
Sequences (B,N,D) are 1D fields along N; images (B,C,H,W) 2D fields.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from archgram.errors import ShapeError
from archgram.ops.operators.fields import channels_first, grid_sizes, restore
from archgram.ops.registry import Arg, Op, check_rank, register_op
from archgram.shapes import Shape, channels, fmt

_CONV = {1: F.conv1d, 2: F.conv2d}


def _periodic_conv(v: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """'same' convolution of a periodic field with an odd-sized kernel."""
    pads = [p for size in reversed(kernel.shape[2:]) for p in (size // 2, size // 2)]
    return _CONV[v.dim() - 2](F.pad(v, pads, mode="circular"), kernel)


def spacing(sizes: tuple[int, ...]) -> float:
    """Grid spacing h of [0, 1)^d; a non-square grid uses the geometric mean."""
    return 1.0 / math.prod(sizes) ** (1.0 / len(sizes))


@register_op(
    "differential_kernel",
    family="operators",
    refs=("S02",),
    args={"k": Arg(int, 3, choices=(3, 5), doc="stencil width in grid points")},
)
class DifferentialKernel(Op):
    """(w - mean w) * v / h: a learned stencil that converges to a first-order differential operator."""

    def __init__(self, shape: Shape, k: int = 3):
        super().__init__()
        c, d = channels(shape), len(grid_sizes(shape))
        self.k = k
        self.weight = nn.Parameter(torch.randn(c, c, *(k,) * d) / math.sqrt(c * k**d))

    @classmethod
    def output_shape(cls, shape: Shape, k: int = 3) -> Shape:
        check_rank("differential_kernel", shape, 3, 4)
        if min(grid_sizes(shape)) < k:
            raise ShapeError(f"differential_kernel: a {k}-point stencil needs {k} grid points per axis, got {fmt(shape)}")
        return shape

    @classmethod
    def count_params(cls, shape: Shape, /, k: int = 3) -> int:
        return channels(shape) ** 2 * k ** len(grid_sizes(shape))

    def stencil(self, sizes: tuple[int, ...]) -> torch.Tensor:
        """The convolution kernel used on a grid of ``sizes``: zero-sum, scaled by 1/h."""
        dims = tuple(range(2, self.weight.dim()))
        return (self.weight - self.weight.mean(dim=dims, keepdim=True)) / spacing(sizes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = channels_first(x)
        return restore(_periodic_conv(v, self.stencil(tuple(v.shape[2:]))), x)

    def extra_repr(self) -> str:
        return f"k={self.k}"


def hat_basis(z: torch.Tensor, radius: float, basis: int) -> torch.Tensor:
    """(len(z), basis) hat functions on [-r, r], nodes inside, each zero at +-r."""
    nodes = torch.linspace(-radius, radius, basis + 2, dtype=z.dtype, device=z.device)[1:-1]
    width = 2 * radius / (basis + 1)
    return (1 - (z[:, None] - nodes[None]).abs() / width).clamp(min=0)


@register_op(
    "local_integral_kernel",
    family="operators",
    refs=("S02",),
    args={
        "radius": Arg(float, 0.125, low=0.0, high=0.5, doc="support half-width in domain units ([0, 1) per axis)"),
        "basis": Arg(int, 3, low=1, high=8, doc="hat functions per axis that span the kernel"),
    },
)
class LocalIntegralKernel(Op):
    """int_{|z|<r} kappa(z) v(x+z) dz with kappa continuous and r in physical units."""

    def __init__(self, shape: Shape, radius: float = 0.125, basis: int = 3):
        super().__init__()
        c, d = channels(shape), len(grid_sizes(shape))
        self.radius, self.basis, self.d = radius, basis, d
        self.coef = nn.Parameter(torch.randn(c, c, *(basis,) * d) / math.sqrt(c) / (2 * radius) ** d)

    @staticmethod
    def taps(n: int, radius: float) -> int:
        """Offsets k with |k h| < r on each side of the centre."""
        return math.ceil(radius * n) - 1

    @classmethod
    def output_shape(cls, shape: Shape, radius: float = 0.125, basis: int = 3) -> Shape:
        check_rank("local_integral_kernel", shape, 3, 4)
        for n in grid_sizes(shape):
            k = cls.taps(n, radius)
            if k < 1 or 2 * k + 1 > n:
                raise ShapeError(
                    f"local_integral_kernel: radius {radius} spans {k} grid points each side on {fmt(shape)}; "
                    "it needs at least 1 and at most half the grid"
                )
        return shape

    @classmethod
    def count_params(cls, shape: Shape, /, radius: float = 0.125, basis: int = 3) -> int:
        return channels(shape) ** 2 * basis ** len(grid_sizes(shape))

    @classmethod
    def flops(cls, shape, out, params, /, radius: float = 0.125, basis: int = 3) -> int:
        taps = math.prod(2 * cls.taps(n, radius) + 1 for n in grid_sizes(shape))
        return 2 * shape[0] * channels(shape) ** 2 * taps * math.prod(grid_sizes(shape))

    def kappa(self, offsets: list[torch.Tensor]) -> torch.Tensor:
        """kappa sampled on the tensor grid of per-axis ``offsets``: (C, C, len(o_1), ..., len(o_d))."""
        out = self.coef
        for axis, z in enumerate(offsets):
            phi = hat_basis(z, self.radius, self.basis)  # (len(z), basis)
            out = torch.tensordot(out, phi, dims=([2 + axis], [1])).movedim(-1, 2 + axis)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = channels_first(x)
        sizes = tuple(v.shape[2:])
        offsets = []
        for n in sizes:
            k = self.taps(n, self.radius)
            offsets.append(torch.arange(-k, k + 1, dtype=v.dtype, device=v.device) / n)
        weight = self.kappa(offsets) * math.prod(1.0 / n for n in sizes)  # quadrature weight h^d
        return restore(_periodic_conv(v, weight), x)

    def extra_repr(self) -> str:
        return f"radius={self.radius}, basis={self.basis}"
