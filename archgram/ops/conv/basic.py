"""Depthwise / dilated 2D convolution on images and (grouped, dilated, causal) 1D convolution
along the tokens of a sequence. Grouped and dilated 2D convolution with a channel change is
einspace's ``conv2d`` (primitives); these cover what it cannot: channel-preserving depthwise
filters and convolution of (B, N, D) sequences along N."""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from archgram.errors import ShapeError
from archgram.ops.registry import Arg, Op, check_rank, register_op
from archgram.shapes import Shape, conv_length, fmt

CONV = ("S57",)


@register_op(
    "dwconv2d",
    family="conv",
    refs=CONV,
    args={
        "k": Arg(int, 3, low=1, doc="kernel size"),
        "s": Arg(int, 1, low=1, doc="stride"),
        "d": Arg(int, 1, low=1, doc="dilation"),
        "bias": Arg(bool, True),
    },
)
class DWConv2d(Op):
    """Depthwise (one filter per channel, groups = C) 2D convolution with 'same' padding.

    The spatial half of a depthwise-separable convolution (MobileNet, ConvNeXt); with d > 1
    it is the dilated (atrous) convolution that widens the receptive field at no extra cost.
    """

    def __init__(self, shape: Shape, k: int = 3, s: int = 1, d: int = 1, bias: bool = True):
        super().__init__()
        self.output_shape(shape, k=k, s=s, d=d)
        c = shape[1]
        self.conv = nn.Conv2d(c, c, k, s, k // 2 * d, d, groups=c, bias=bias)

    @classmethod
    def count_params(cls, shape, /, k=3, s=1, d=1, bias=True):
        return shape[1] * k * k + (shape[1] if bias else 0)

    @classmethod
    def output_shape(cls, shape, k=3, s=1, d=1, bias=True):
        check_rank("dwconv2d", shape, 4)
        b, c, h, w = shape
        pad = 2 * (k // 2 * d)
        ho, wo = conv_length(h, k, s, d, pad), conv_length(w, k, s, d, pad)
        if ho < 1 or wo < 1:
            raise ShapeError(f"dwconv2d(k={k}, s={s}, d={d}) does not fit a {fmt(shape)} input")
        return (b, c, ho, wo)

    @classmethod
    def flops(cls, shape, out, params, /, k=3, **args):
        return 2 * out[0] * out[1] * out[2] * out[3] * k * k

    def forward(self, x):
        return self.conv(x)


@register_op(
    "conv1d",
    family="conv",
    refs=CONV,
    args={
        "out": Arg(int, 0, low=0, doc="output channels (D of the result); 0 keeps D"),
        "k": Arg(int, 3, low=1),
        "s": Arg(int, 1, low=1),
        "d": Arg(int, 1, low=1),
        "groups": Arg(int, 1, low=1, doc="channel groups; groups = D = out is depthwise"),
        "causal": Arg(bool, False, doc="pad on the left only, so token t sees tokens <= t"),
    },
)
class Conv1d(Op):
    """1D convolution of a (B, N, D) sequence along its tokens N, channels D -> out (0: D).

    'Same' padding (k // 2 * d each side) or, with causal=True, d * (k - 1) on the left
    only (the short causal convolutions of H3 / Hyena / Mamba). Groups and dilation as usual.
    """

    def __init__(self, shape: Shape, out: int = 0, k=3, s=1, d=1, groups=1, causal=False):
        super().__init__()
        self.output_shape(shape, out=out, k=k, s=s, d=d, groups=groups, causal=causal)
        out = out or shape[2]
        self.pad = (d * (k - 1), 0) if causal else (k // 2 * d, k // 2 * d)
        self.conv = nn.Conv1d(shape[2], out, k, s, 0, d, groups=groups)

    @classmethod
    def count_params(cls, shape, /, out=0, k=3, s=1, d=1, groups=1, causal=False):
        out = out or shape[2]
        return shape[2] // groups * out * k + out

    @classmethod
    def output_shape(cls, shape, out=0, k=3, s=1, d=1, groups=1, causal=False):
        check_rank("conv1d", shape, 3)
        b, n, c = shape
        out = out or c
        if c % groups or out % groups:
            raise ShapeError(f"conv1d: groups={groups} must divide in ({c}) and out ({out}) channels")
        pad = d * (k - 1) if causal else 2 * (k // 2 * d)
        length = conv_length(n, k, s, d, pad)
        if length < 1:
            raise ShapeError(f"conv1d(k={k}, s={s}, d={d}) does not fit a {fmt(shape)} sequence")
        return (b, length, out)

    def forward(self, x):
        y = self.conv(F.pad(x.transpose(1, 2), self.pad))
        return y.transpose(1, 2)


__all__ = ["Conv1d", "DWConv2d"]
