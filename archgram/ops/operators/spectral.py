"""FNO spectral convolution (Li et al. 2021; catalog S02).

The kernel integral operator (K v)(x) = int k(x - y) v(y) dy is a product in
Fourier space; the layer learns that product for the lowest ``modes``
frequencies and drops the rest. The forward FFT is normalised by the number of
grid points (``norm="forward"``), so the Fourier coefficients approximate the
continuous ones and the same weights give the same function at any grid that
resolves the kept modes: discretisation invariance, the property S02 asks for.

Sequences (B,N,D) are 1D fields along N with D channels; images (B,C,H,W) are
2D fields along H and W with C channels.

Catalog S02 (Berner et al. 2025, "Principled Approaches for Extending Neural
Architectures to Function Spaces"), read against the paper:
Paper: a neural operator maps functions to functions; each layer must be
defined on functions and discretised so that it converges to one operator as
the grid is refined. Its layers: integral kernels (GNO), spectral convolution
(FNO), and local layers that stay local in the limit (differential kernels and
local integral kernels of fixed physical support), plus pointwise maps.
archgram: ``spectral_conv`` (this file), ``integral_kernel`` (integral.py),
``differential_kernel`` and ``local_integral_kernel`` (local.py), each on 1D and
2D grids; the ``operators`` grammar searches stacks of act(K v + W v) over them.
Differs: domains are periodic unit squares on regular grids (the paper also
treats irregular meshes and point clouds, which archgram's tensor shapes do not
carry); the integral kernel integrates the whole domain (GNO's ball radius is a
cost cut) and spans channels with a learned rank-r basis (rank C*C is the full
matrix kernel); the local integral kernel uses a tensor-product hat basis on a
square support where DISCO uses a disk basis.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from archgram.errors import ShapeError
from archgram.ops.registry import Arg, Op, check_rank, register_op
from archgram.shapes import IMAGE_RANK, Shape, channels, fmt, with_channels


def _check_modes(shape: Shape, modes: int) -> None:
    """Mode k needs a grid of at least 2k points per axis (k < n/2 keeps it below Nyquist)."""
    grid = shape[2:] if len(shape) == IMAGE_RANK else shape[1:2]
    for n in grid:
        if 2 * modes > n:
            raise ShapeError(
                f"spectral_conv: modes={modes} needs at least {2 * modes} grid points per axis, got {fmt(shape)}"
            )


@register_op(
    "spectral_conv",
    family="operators",
    refs=("S02",),
    args={
        "modes": Arg(int, 4, low=1, doc="Fourier modes kept per axis (needs a grid of 2*modes points)"),
        "out": Arg(int, 0, low=0, doc="output channels; 0 keeps the input's"),
    },
)
class SpectralConv(Op):
    """FNO spectral convolution: learned channel mixing of the lowest Fourier modes."""

    def __init__(self, shape: Shape, modes: int = 4, out: int = 0):
        super().__init__()
        cin = channels(shape)
        cout = out or cin
        self.modes, self.image = modes, len(shape) == IMAGE_RANK
        # Complex weights stored as (..., 2) real pairs; for images one block for
        # the non-negative and one for the negative frequencies of H (W is halved by rfft).
        blocks = (2, modes, modes) if self.image else (modes,)
        scale = 1.0 / (cin * cout)
        self.weight = nn.Parameter(scale * torch.rand(cin, cout, *blocks, 2))

    @classmethod
    def output_shape(cls, shape: Shape, modes: int = 4, out: int = 0) -> Shape:
        check_rank("spectral_conv", shape, 3, 4)
        _check_modes(shape, modes)
        return with_channels(shape, out or channels(shape))

    @classmethod
    def count_params(cls, shape: Shape, /, modes: int = 4, out: int = 0) -> int:
        cin = channels(shape)
        per_pair = 4 * modes * modes if len(shape) == IMAGE_RANK else 2 * modes
        return cin * (out or cin) * per_pair

    @classmethod
    def flops(cls, shape, out, params, /, modes: int = 4, **args) -> int:
        n = math.prod(shape[2:] if len(shape) == IMAGE_RANK else shape[1:2])
        fft = 5 * n * max(math.log2(n), 1) * (channels(shape) + channels(out)) * shape[0]
        return int(fft + 4 * params * shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_modes(tuple(x.shape), self.modes)
        w = torch.view_as_complex(self.weight)
        m = self.modes
        if not self.image:
            v = x.transpose(1, 2)  # (B, D, N)
            n = v.shape[-1]
            coef = torch.fft.rfft(v, norm="forward")[..., :m]
            mixed = torch.einsum("bik,iok->bok", coef, w)
            spec = coef.new_zeros(v.shape[0], w.shape[1], n // 2 + 1)
            spec[..., :m] = mixed
            return torch.fft.irfft(spec, n=n, norm="forward").transpose(1, 2)
        h, wd = x.shape[-2:]
        coef = torch.fft.rfft2(x, norm="forward")
        spec = coef.new_zeros(x.shape[0], w.shape[1], h, wd // 2 + 1)
        spec[..., :m, :m] = torch.einsum("bixy,ioxy->boxy", coef[..., :m, :m], w[:, :, 0])
        spec[..., h - m :, :m] = torch.einsum("bixy,ioxy->boxy", coef[..., h - m :, :m], w[:, :, 1])
        return torch.fft.irfft2(spec, s=(h, wd), norm="forward")

    def extra_repr(self) -> str:
        return f"modes={self.modes}"
