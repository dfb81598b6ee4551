"""Polarized self-attention (Liu et al. 2021, "Polarized Self-Attention: Towards
High-quality Pixel-wise Regression"; catalog S62).

Each branch collapses one axis completely while keeping the other at high
internal resolution (C/2 channels), normalises the collapsed axis with softmax
and gates with sigmoid ("high dynamic range" mapping):

  channel-only  A^ch = sigmoid(LN(W_z( W_v(x) . softmax_HW(W_q(x)) )))   (B, C, 1, 1)
                W_q: C -> 1, W_v: C -> C/2, W_z: C/2 -> C (1x1 convs)
  spatial-only  A^sp = sigmoid( softmax_C(GAP(W_q'(x))) . W_v'(x) )       (B, 1, H, W)
                W_q', W_v': C -> C/2

  parallel      y = A^ch * x + A^sp * x
  sequential    y = A^sp(x') * x',  x' = A^ch(x) * x

(the paper's two compositions, chosen by ``mode``).

Paper's defining mechanism: two branches that each collapse one axis fully
(channel-only: a softmax over the H*W positions pools a C/2-channel value;
spatial-only: a softmax over C/2 globally pooled channels weighs every pixel)
while keeping the other axis at high internal resolution (C/2), each ending
in a sigmoid, composed in parallel or in sequence.
What archgram does: exactly the formulas above, 1x1 convs, LayerNorm before
the channel sigmoid, ``mode`` for the two compositions.
What differs: nothing in the mechanism.
"""
from __future__ import annotations

import torch
from torch import nn

from archgram.ops.registry import Arg, Op, register_op
from archgram.ops.vision._common import image
from archgram.shapes import Shape


class ChannelOnly(nn.Module):
    """Channel-only branch: a (B, C, 1, 1) sigmoid weight from a softmax-pooled C/2 summary."""

    def __init__(self, c: int):
        super().__init__()
        self.wv = nn.Conv2d(c, c // 2, 1)
        self.wq = nn.Conv2d(c, 1, 1)
        self.wz = nn.Conv2d(c // 2, c, 1)
        self.ln = nn.LayerNorm(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.wv(x).flatten(2)  # (B, C/2, HW)
        q = torch.softmax(self.wq(x).flatten(2), dim=-1)  # (B, 1, HW)
        z = (v @ q.transpose(1, 2)).unsqueeze(-1)  # (B, C/2, 1, 1)
        z = self.wz(z).flatten(1)  # (B, C)
        return torch.sigmoid(self.ln(z))[:, :, None, None]


class SpatialOnly(nn.Module):
    """Spatial-only branch: a (B, 1, H, W) sigmoid weight from a softmax over pooled channels."""

    def __init__(self, c: int):
        super().__init__()
        self.wq = nn.Conv2d(c, c // 2, 1)
        self.wv = nn.Conv2d(c, c // 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q = torch.softmax(self.wq(x).mean(dim=(2, 3)), dim=-1)  # (B, C/2)
        v = self.wv(x).flatten(2)  # (B, C/2, HW)
        return torch.sigmoid(q.unsqueeze(1) @ v).view(b, 1, h, w)


@register_op(
    "polarized_attention",
    family="vision",
    refs=("S62",),
    args={"mode": Arg(str, "parallel", choices=("parallel", "sequential"), doc="composition of the two branches")},
)
class PolarizedAttention(Op):
    """Polarized self-attention: channel-only and spatial-only softmax/sigmoid branches, parallel or sequential."""

    def __init__(self, shape: Shape, mode: str = "parallel"):
        super().__init__()
        c = self.output_shape(shape)[1]
        self.mode = mode
        self.channel = ChannelOnly(c)
        self.spatial = SpatialOnly(c)

    @classmethod
    def output_shape(cls, shape: Shape, **args) -> Shape:
        image("polarized_attention", shape, min_channels=2)
        return shape

    @classmethod
    def count_params(cls, shape: Shape, /, mode: str = "parallel") -> int:
        c, half = shape[1], shape[1] // 2
        channel = (c * half + half) + (c + 1) + (half * c + c) + 2 * c
        return channel + 2 * (c * half + half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "parallel":
            return self.channel(x) * x + self.spatial(x) * x
        x = self.channel(x) * x
        return self.spatial(x) * x
