"""I2Correlation (Yao et al., ICCV 2023, "Focus the Discrepancy: Intra- and
Inter-Correlation Learning for Image Anomaly Detection"; catalog S07).

FOD replaces a transformer's self-attention with two branches. Anomalous
patches differ from the other patches of their own image (intra-image
discrepancy) and correlate weakly with normal patterns (inter-image
discrepancy), so each is made explicit:

  intra  Y_a = softmax(Q K^T / sqrt(d)) V,          Q, K, V from the patch tokens x
  inter  Y_e = softmax(Q' K_r^T / sqrt(d)) V_r,     Q' from x; K_r, V_r from learned
                                                     reference tokens R (M x C)
  fuse   y   = W_o [Y_a ; Y_e]                      (concatenate, project back to C)

R stands for features of normal images; here it is a learned parameter (the
paper's learnable reference). Multi-head, sequence (B, N, C) or image tokens.

Deviations: the paper's RBF-kernel target correlations and entropy constraint
are training losses, not part of the layer; ``fuse='add'`` (sum of the two
branch outputs, then W_o) is offered as a cheaper variant.
"""
from __future__ import annotations

import torch
from torch import nn

from archgram.ops.registry import Arg, Op, check_rank, register_op
from archgram.ops.vision._common import divides, from_tokens, to_tokens, tokens_of
from archgram.shapes import Shape


def mha(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Softmax attention of q (B, N, C) over k, v (B, M, C) with ``heads`` heads."""
    b, n, c = q.shape
    d = c // heads

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(t.shape[0], t.shape[1], heads, d).transpose(1, 2)

    a = torch.softmax(split(q) @ split(k).transpose(-1, -2) * d**-0.5, dim=-1)
    return (a @ split(v)).transpose(1, 2).reshape(b, n, c)


@register_op(
    "i2correlation",
    family="vision",
    refs=("S07",),
    args={
        "heads": Arg(int, 2, low=1, doc="attention heads of both branches"),
        "references": Arg(int, 8, low=1, doc="learned reference tokens M of the inter-image branch"),
        "fuse": Arg(str, "concat", choices=("concat", "add"), doc="how the two branch outputs are combined"),
    },
)
class I2Correlation(Op):
    """FOD I2Correlation: intra-image self-attention plus inter-image attention to learned reference tokens."""

    def __init__(self, shape: Shape, heads: int = 2, references: int = 8, fuse: str = "concat"):
        super().__init__()
        self.output_shape(shape, heads=heads)
        _, c = tokens_of(shape)
        self.heads, self.fuse = heads, fuse
        self.reference = nn.Parameter(torch.randn(references, c) * 0.02)
        self.qkv = nn.Linear(c, 3 * c)
        self.q_inter = nn.Linear(c, c)
        self.kv_ref = nn.Linear(c, 2 * c)
        self.out = nn.Linear(2 * c if fuse == "concat" else c, c)

    @classmethod
    def output_shape(cls, shape: Shape, heads: int = 2, **args) -> Shape:
        check_rank("i2correlation", shape, 3, 4)
        divides("i2correlation", shape, tokens_of(shape)[1], heads, "heads")
        return shape

    @classmethod
    def count_params(cls, shape: Shape, /, heads: int = 2, references: int = 8, fuse: str = "concat") -> int:
        c = tokens_of(shape)[1]
        fused = 2 * c if fuse == "concat" else c
        return references * c + (3 * c * c + 3 * c) + (c * c + c) + (2 * c * c + 2 * c) + (fused * c + c)

    def branches(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(intra, inter) branch outputs for tokens t (B, N, C)."""
        q, k, v = self.qkv(t).chunk(3, dim=-1)
        intra = mha(q, k, v, self.heads)
        k_r, v_r = self.kv_ref(self.reference).expand(t.shape[0], -1, -1).chunk(2, dim=-1)
        inter = mha(self.q_inter(t), k_r, v_r, self.heads)
        return intra, inter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        intra, inter = self.branches(to_tokens(x))
        fused = torch.cat([intra, inter], dim=-1) if self.fuse == "concat" else intra + inter
        return from_tokens(self.out(fused), x)
