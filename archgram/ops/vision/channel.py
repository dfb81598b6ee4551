"""Channel group attention (Ding et al. 2022, "DaViT: Dual Attention Vision
Transformers"; catalog S12).

DaViT transposes self-attention: channels are the tokens and the spatial
positions are their features. Each of ``groups`` channel groups (C_g = C / G
channels) attends among its own channels, so every channel sees a summary of the
whole image (a global receptive field) at cost linear in the tokens:

  Q, K, V = x W_q, x W_k, x W_v                     (N, C), split into G groups
  A_g     = softmax(Q_g^T K_g / sqrt(C_g))          (C_g, C_g), softmax over keys
  y_g     = (A_g V_g^T)^T                           (N, C_g)
  y       = [y_1 .. y_G] W_o

Sequence (B, N, C) or image (B, C, H, W, tokens = H*W) input. DaViT alternates
this with spatial window attention; here that alternation is the grammar's job.
Deviations: the scale is the paper's 1/sqrt(C_g) (the official code scales the
keys the same way but multiplies in the order V-weights-then-Q; both normalise
over the channel axis of the same group).

Catalog S12, read against the paper. Paper: DaViT's dual attention block
alternates spatial window attention (tokens attend within local windows) and
channel group attention (channels are tokens, the whole image their features:
a global receptive field at linear cost in the tokens). archgram: this op, and
in ``vision.pcfg`` the dual block: the attention op with non-overlapping
``halo(b, 0)`` windows, then this op, each in a residual branch. Differs:
nothing in the mechanism; DaViT's convolutional position encodings and stage
layout are the grammar's.
"""
from __future__ import annotations

import torch
from torch import nn

from archgram.ops.registry import Arg, Op, check_rank, register_op
from archgram.ops.vision._common import divides
from archgram.shapes import IMAGE_RANK, Shape, channels


@register_op(
    "channel_attention",
    family="vision",
    refs=("S12",),
    args={"groups": Arg(int, 2, low=1, doc="channel groups G (the heads of channel attention)")},
)
class ChannelGroupAttention(Op):
    """DaViT channel group attention: channels attend to channels within groups, tokens act as features."""

    def __init__(self, shape: Shape, groups: int = 2):
        super().__init__()
        self.output_shape(shape, groups=groups)
        c = channels(shape)
        self.groups, self.scale = groups, (c // groups) ** -0.5
        self.qkv = nn.Linear(c, 3 * c)
        self.proj = nn.Linear(c, c)

    @classmethod
    def output_shape(cls, shape: Shape, groups: int = 2) -> Shape:
        check_rank("channel_attention", shape, 3, 4)
        divides("channel_attention", shape, channels(shape), groups, "groups")
        return shape

    @classmethod
    def count_params(cls, shape: Shape, /, groups: int = 2) -> int:
        c = channels(shape)
        return 4 * c * c + 4 * c

    @classmethod
    def flops(cls, shape, out, params, /, groups: int = 2) -> int:
        c = channels(shape)
        n = out[2] * out[3] if len(out) == IMAGE_RANK else out[1]
        return 2 * params * shape[0] * n + 4 * shape[0] * n * c * (c // groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = x.dim() == IMAGE_RANK
        t = x.flatten(2).transpose(1, 2) if image else x  # (B, N, C)
        b, n, c = t.shape
        q, k, v = self.qkv(t).view(b, n, 3, self.groups, c // self.groups).permute(2, 0, 3, 1, 4)  # (B, G, N, Cg)
        a = torch.softmax(q.transpose(-1, -2) @ k * self.scale, dim=-1)  # (B, G, Cg, Cg)
        y = (a @ v.transpose(-1, -2)).transpose(-1, -2)  # (B, G, N, Cg)
        y = self.proj(y.transpose(1, 2).reshape(b, n, c))
        return y.transpose(1, 2).reshape(x.shape) if image else y
