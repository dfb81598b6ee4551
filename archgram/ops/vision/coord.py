"""Coordinate attention (Hou, Zhou & Feng, CVPR 2021, "Coordinate Attention for
Efficient Mobile Network Design"; catalog S65).

SE-style channel attention throws away *where* a feature is by pooling the whole
plane to one number. Coordinate attention factorises that pooling into two 1-D
poolings, one per spatial direction, so each attention map keeps exact position
along one axis while summarising the other:

  z^h[c, i] = mean_j x[c, i, j]        (B, C, H)   pool along W
  z^w[c, j] = mean_i x[c, i, j]        (B, C, W)   pool along H
  f        = h_swish(BN(F1([z^h ; z^w])))          shared 1x1 transform C -> mid
  g^h      = sigmoid(F_h(f^h))  (B, C, H, 1)       split back, one 1x1 conv each
  g^w      = sigmoid(F_w(f^w))  (B, C, 1, W)
  y[c, i, j] = x[c, i, j] * g^h[c, i] * g^w[c, j]

with mid = max(min_mid, C // reduction) (the paper's r = 32 and floor 8).

Paper's defining mechanism: the two 1-D directional poolings, one shared
transform over their concatenation, and two sigmoid maps whose product gates
each pixel, so the attention keeps exact position along one axis per map.
What archgram does: the formulas above, BatchNorm and h_swish in the shared
transform as in the paper.
What differs: nothing in the mechanism; ``act`` lets the grammar swap
h_swish for ReLU or SiLU (default h_swish).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from archgram.ops.registry import Arg, Op, register_op
from archgram.ops.vision._common import image
from archgram.shapes import Shape

_ACTS = {"hswish": F.hardswish, "relu": F.relu, "silu": F.silu}


def mid_channels(c: int, reduction: int, min_mid: int) -> int:
    return max(min_mid, c // reduction)


@register_op(
    "coord_attention",
    family="vision",
    refs=("S65",),
    args={
        "reduction": Arg(int, 32, low=1, doc="channel reduction r of the shared transform"),
        "min_mid": Arg(int, 8, low=1, doc="floor of the reduced width"),
        "act": Arg(str, "hswish", choices=tuple(_ACTS), doc="nonlinearity after the shared transform"),
    },
)
class CoordAttention(Op):
    """Coordinate attention: directional H- and W-poolings, shared 1x1 transform, two sigmoid maps gate the input."""

    def __init__(self, shape: Shape, reduction: int = 32, min_mid: int = 8, act: str = "hswish"):
        super().__init__()
        _, c, _, _ = self.output_shape(shape)
        mid = mid_channels(c, reduction, min_mid)
        self.shared = nn.Conv2d(c, mid, 1)
        self.bn = nn.BatchNorm2d(mid)
        self.act = _ACTS[act]
        self.to_h = nn.Conv2d(mid, c, 1)
        self.to_w = nn.Conv2d(mid, c, 1)

    @classmethod
    def output_shape(cls, shape: Shape, **args) -> Shape:
        image("coord_attention", shape)
        return shape

    @classmethod
    def count_params(cls, shape: Shape, /, reduction: int = 32, min_mid: int = 8, act: str = "hswish") -> int:
        c = shape[1]
        mid = mid_channels(c, reduction, min_mid)
        return (c * mid + mid) + 2 * mid + 2 * (mid * c + c)

    @classmethod
    def flops(cls, shape, out, params, /, **args) -> int:
        b, c, h, w = shape
        return 2 * params * b * (h + w) + 3 * b * c * h * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        zh = x.mean(dim=3, keepdim=True)  # (B, C, H, 1)
        zw = x.mean(dim=2, keepdim=True).transpose(2, 3)  # (B, C, W, 1)
        f = self.act(self.bn(self.shared(torch.cat([zh, zw], dim=2))))
        fh, fw = f.split([h, w], dim=2)
        gh = torch.sigmoid(self.to_h(fh))  # (B, C, H, 1)
        gw = torch.sigmoid(self.to_w(fw.transpose(2, 3)))  # (B, C, 1, W)
        return x * gh * gw
