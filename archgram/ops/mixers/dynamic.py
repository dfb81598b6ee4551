"""Convolutions whose kernels are generated rather than stored: Orchid (a conditioning
network makes a global, input-dependent kernel applied by FFT), HyperZ.Z.W (a coordinate
MLP makes hyper-kernels) and ContMix (OverLoCK: per-position kernels from affinities to
region centres of a context map)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from archgram.ops.mixers.common import Mixer, to_channels_first
from archgram.ops.registry import Arg, register_op
from archgram.shapes import Shape, channels


def fft_conv(v: torch.Tensor, k: torch.Tensor, causal: bool = True) -> torch.Tensor:
    """Convolve v (B, D, N) with per-channel kernels k (B or 1, D, N) along N by FFT.

    causal: linear convolution y_t = sum_{s<=t} k_s v_{t-s} (zero-pad to 2N so nothing wraps);
    else circular convolution y_t = sum_s k_s v_{(t-s) mod N}. O(N log N) instead of O(N^2).
    """
    n = v.shape[-1]
    size = 2 * n if causal else n
    y = torch.fft.irfft(torch.fft.rfft(v, n=size) * torch.fft.rfft(k, n=size), n=size)
    return y[..., :n]


@register_op(
    "orchid",
    family="mixers",
    args={"k": Arg(int, 3, low=1, doc="short conv of the conditioning network"),
          "causal": Arg(bool, True, doc="linear (causal) convolution; False = circular")},
    refs=("S28",),
)
class Orchid(Mixer):
    """Orchid data-dependent global convolution (Karami & Ghodsi 2024), sequences only.

    Projections give a value v and a gate q. A conditioning network (short depthwise conv +
    pointwise map, then the magnitude of its Fourier transform, which is invariant to
    shifting the input, so the convolution stays shift-equivariant) yields an input-dependent
    kernel of length N; a static learned long kernel is added. The kernel is applied to v
    along N by FFT (O(N log N)), and the output is out(q * conv(v)).
    """

    ranks = (3,)

    def __init__(self, shape: Shape, k: int = 3, causal: bool = True):
        super().__init__()
        self.output_shape(shape, k=k)
        n, d = shape[1], shape[2]
        self.causal = causal
        self.inp = nn.Linear(d, 2 * d)
        self.cond_conv = nn.Conv1d(d, d, k, padding=k // 2, groups=d)
        self.cond_mix = nn.Conv1d(d, d, 1)
        self.static = nn.Parameter(torch.randn(1, d, n) / n)
        self.out = nn.Linear(d, d)

    @classmethod
    def check(cls, shape, k=3, **args):
        cls.need_odd(shape, k)

    def kernel(self, v: torch.Tensor) -> torch.Tensor:
        """Input-dependent long kernel (B, D, N): irfft of |rfft(conditioning(v))|, plus the static one."""
        n = v.shape[-1]
        h = self.cond_mix(F.gelu(self.cond_conv(v)))
        dynamic = torch.fft.irfft(torch.fft.rfft(h, dim=-1).abs(), n=n) / n
        return self.static + dynamic

    def forward(self, x):
        q, v = self.inp(x).chunk(2, dim=-1)
        v = v.transpose(1, 2)
        y = fft_conv(v, self.kernel(v), self.causal).transpose(1, 2)
        return self.out(q * y)

    @classmethod
    def flops(cls, shape, out, params, /, **args):
        b, n, d = shape
        return 2 * params * b * n + 30 * b * d * n * max(n.bit_length(), 1)


def grid(*sizes: int) -> torch.Tensor:
    """Coordinates in [-1, 1] of a grid, shape (prod(sizes), len(sizes))."""
    axes = [torch.linspace(-1, 1, s) if s > 1 else torch.zeros(1) for s in sizes]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(sizes))


class CoordinateMLP(nn.Module):
    """Slow net: maps a coordinate to one value per channel (an implicit, resolution-free kernel)."""

    def __init__(self, dims: int, out: int, width: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dims, width), nn.GELU(), nn.Linear(width, width), nn.GELU(),
                                 nn.Linear(width, out))

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return self.net(coords).T  # (out, points)


@register_op(
    "hyperzzw",
    family="mixers",
    args={"k": Arg(int, 7, low=1, doc="size of the hyper-kernel (large kernels cost no extra weights)"),
          "width": Arg(int, 16, low=1, doc="hidden width of the coordinate MLP")},
    refs=("S23",),
)
class HyperZZW(Mixer):
    """HyperZ.Z.W operator (Zhang, 'HyperZ.Z.W Operator Connects Slow-Fast Networks for Full
    Context Interaction', 2024).

    Slow net: a coordinate MLP maps each offset of a k x k grid (k points along N for
    sequences) in [-1, 1] to one weight per channel, an implicit hyper-kernel W whose size
    costs no parameters. Fast net: the hyper-kernel is convolved depthwise with the hidden
    activations Z, giving context-dependent weights W * Z at every position, which multiply Z
    elementwise: out = proj(Z . (W * Z)). (The paper's Terminator block also has a global
    branch with image-sized kernels, a slow-net loss and its own standardisation: not here.)
    """

    def __init__(self, shape: Shape, k: int = 7, width: int = 16):
        super().__init__()
        self.output_shape(shape, k=k)
        c = channels(shape)
        self.k, self.image = k, len(shape) == 4
        coords = grid(k, k) if self.image else grid(k)
        self.register_buffer("kernel_coords", coords, persistent=False)
        self.kernel_net = CoordinateMLP(coords.shape[1], c, width)
        self.proj = nn.Linear(c, c)

    @classmethod
    def check(cls, shape, k=7, **args):
        cls.need_odd(shape, k)

    def hyper_kernel(self) -> torch.Tensor:
        """(C, 1, k, k) for images, (C, 1, k) for sequences."""
        w = self.kernel_net(self.kernel_coords)
        return w.view(w.shape[0], 1, *([self.k] * (2 if self.image else 1)))

    def forward(self, x):
        z = to_channels_first(x)
        conv = F.conv2d if self.image else F.conv1d
        context = conv(z, self.hyper_kernel(), padding=self.k // 2, groups=z.shape[1])
        y = self.proj((z * context).movedim(1, -1)).movedim(-1, 1)
        return to_channels_first(y)


def dynamic_conv(v: torch.Tensor, kernels: torch.Tensor, k: int) -> torch.Tensor:
    """Per-position depthwise conv: v (B, G, C/G, H, W), kernels (B, G, H*W, k*k), 'same' padding.

    out[b, g, :, p] = sum_o kernels[b, g, p, o] * v[b, g, :, p + offset(o)] (offsets row-major).
    """
    b, g, cg, h, w = v.shape
    patches = F.unfold(v.reshape(b, g * cg, h, w), k, padding=k // 2)  # (B, G*Cg*k*k, HW)
    patches = patches.view(b, g, cg, k * k, h * w)
    out = torch.einsum("bgcop,bgpo->bgcp", patches, kernels)
    return out.reshape(b, g * cg, h, w)


@register_op(
    "contmix",
    family="mixers",
    args={"k": Arg(int, 5, low=1, doc="dynamic kernel size"),
          "regions": Arg(int, 4, low=1, doc="S: the context is pooled to S x S region centres"),
          "heads": Arg(int, 2, low=1, doc="channel groups, one kernel per group and position")},
    refs=("S50",),
)
class ContMix(Mixer):
    """ContMix, the context-mixing dynamic convolution of OverLoCK (Lou & Yu, CVPR 2025),
    images only.

    Each position's query (1x1 map of x) is compared with the keys of S x S region centres
    (adaptive average pooling of an overview context, here x itself, then a 1x1 map): the
    affinity vector of length S^2, per head, is mapped by a learned linear layer to a k x k
    kernel and softmax-normalised, so every kernel weight carries global context. The kernel
    is applied at that position to the values (depthwise, per head), then projected. In the
    full OverLoCK the keys come from the Overview-Net's top-down context; a grammar gives
    ContMix that context by what precedes it.
    """

    ranks = (4,)

    def __init__(self, shape: Shape, k: int = 5, regions: int = 4, heads: int = 2):
        super().__init__()
        self.output_shape(shape, k=k, regions=regions, heads=heads)
        c = shape[1]
        self.k, self.regions, self.heads = k, regions, heads
        self.q, self.key, self.v = nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1)
        self.to_kernel = nn.Linear(regions * regions, k * k)
        self.proj = nn.Conv2d(c, c, 1)

    @classmethod
    def check(cls, shape, k=5, regions=4, heads=2):
        cls.need_odd(shape, k)
        if shape[1] % heads:
            cls.refuse(shape, f"{shape[1]} channels do not split into {heads} heads")
        if regions > min(shape[2], shape[3]):
            cls.refuse(shape, f"{regions} x {regions} regions exceed the {shape[2]}x{shape[3]} grid")

    def kernels(self, x: torch.Tensor) -> torch.Tensor:
        """(B, heads, H*W, k*k) softmax-normalised dynamic kernels."""
        b, c, h, w = x.shape
        g = self.heads
        q = self.q(x).view(b, g, c // g, h * w)
        centres = self.key(F.adaptive_avg_pool2d(x, self.regions)).view(b, g, c // g, -1)
        affinity = torch.einsum("bgcp,bgcs->bgps", q, centres) * (c // g) ** -0.5
        return torch.softmax(self.to_kernel(affinity), dim=-1)

    def forward(self, x):
        b, c, h, w = x.shape
        v = self.v(x).view(b, self.heads, c // self.heads, h, w)
        return self.proj(dynamic_conv(v, self.kernels(x), self.k))


__all__ = ["ContMix", "CoordinateMLP", "HyperZZW", "Orchid", "dynamic_conv", "fft_conv", "grid"]
