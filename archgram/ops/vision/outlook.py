"""Outlook attention (Yuan et al. 2021, "VOLO: Vision Outlooker for Visual
Recognition"; catalog S58).

Instead of query-key dot products, the feature at each anchor position *itself*
generates, through one linear layer, the attention weights among the K x K
neighbours around it (K^2 x K^2 per head). The values of that window are mixed
by those weights and the mixed windows are summed back onto the grid:

  v        = W_v x                                      (B, H, W, C)
  A        = softmax(scale * W_A(pool_s(x)))            (B, h, W', K^2, K^2) per anchor
  windows  = unfold_K(v)                                (the K x K values around each anchor)
  y_window = A @ windows                                per head, per anchor
  y        = W_o fold_K(y_window)                       overlapping windows summed

``stride`` s > 1 places anchors every s pixels (the attention comes from an
s x s average pool), as in the paper. Fidelity: the paper's mechanism is what
this computes. Deviations: none; K must be odd so the
zero-padded unfold/fold keeps the grid, and the anchor grid from the pool
(ceil(H/s)) must equal the unfold grid, which holds for padding K // 2.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from archgram.errors import ShapeError
from archgram.ops.registry import Arg, Op, register_op
from archgram.ops.vision._common import divides, image
from archgram.shapes import Shape

ARGS = {
    "heads": Arg(int, 1, low=1, doc="attention heads (channels split among them)"),
    "kernel": Arg(int, 3, low=1, doc="window side K (odd)"),
    "stride": Arg(int, 1, low=1, doc="anchor spacing s"),
}


@register_op("outlook_attention", family="vision", refs=("S58",), args=ARGS)
class OutlookAttention(Op):
    """VOLO outlook attention: each anchor's linear layer emits local KxK window weights; unfold, mix, fold."""

    def __init__(self, shape: Shape, heads: int = 1, kernel: int = 3, stride: int = 1):
        super().__init__()
        _, c, h, w = self.output_shape(shape, heads=heads, kernel=kernel, stride=stride)
        self.grid, self.heads, self.kernel, self.stride = (h, w), heads, kernel, stride
        self.scale = (c // heads) ** -0.5
        self.v = nn.Linear(c, c, bias=False)
        self.attn = nn.Linear(c, heads * kernel**4)
        self.proj = nn.Linear(c, c)

    @classmethod
    def output_shape(cls, shape: Shape, heads: int = 1, kernel: int = 3, stride: int = 1) -> Shape:
        _, c, h, w = image("outlook_attention", shape)
        divides("outlook_attention", shape, c, heads, "heads")
        if kernel % 2 == 0:
            raise ShapeError(f"outlook_attention: kernel must be odd to keep the grid of {shape}, got {kernel}")
        if stride > kernel:
            raise ShapeError(f"outlook_attention: stride {stride} > kernel {kernel} leaves pixels of {shape} unseen")
        return shape

    @classmethod
    def count_params(cls, shape: Shape, /, heads: int = 1, kernel: int = 3, stride: int = 1) -> int:
        c = shape[1]
        return c * c + (c * heads * kernel**4 + heads * kernel**4) + (c * c + c)

    @classmethod
    def flops(cls, shape, out, params, /, heads: int = 1, kernel: int = 3, stride: int = 1) -> int:
        b, c, h, w = shape
        anchors = math.ceil(h / stride) * math.ceil(w / stride)
        linear = 2 * b * (2 * c * c * h * w + c * heads * kernel**4 * anchors)
        return linear + 2 * b * anchors * kernel**4 * c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        k, s, nh = self.kernel, self.stride, self.heads
        kk, d = k * k, c // nh
        v = self.v(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (B, C, H, W)
        windows = F.unfold(v, k, padding=k // 2, stride=s)  # (B, C*K^2, L)
        windows = windows.view(b, nh, d, kk, -1).permute(0, 1, 4, 3, 2)  # (B, h, L, K^2, d)
        pooled = F.avg_pool2d(x, s, s, ceil_mode=True) if s > 1 else x  # (B, C, H', W')
        logits = self.attn(pooled.permute(0, 2, 3, 1)).reshape(b, -1, nh, kk, kk)  # (B, L, h, K^2, K^2)
        a = torch.softmax(logits.transpose(1, 2) * self.scale, dim=-1)  # (B, h, L, K^2, K^2)
        mixed = (a @ windows).permute(0, 1, 4, 3, 2).reshape(b, c * kk, -1)  # (B, C*K^2, L)
        y = F.fold(mixed, (h, w), k, padding=k // 2, stride=s)  # (B, C, H, W)
        return self.proj(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
