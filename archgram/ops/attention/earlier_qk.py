"""Attention whose queries and keys come from an earlier layer (Xue et al. 2025,
"Deconstructing Attention"; catalog S09, the relaxation of "coupling queries and
keys to the evolving hidden state").

Standard attention computes Q, K and V from the current hidden state h. The
paper's StaticEmbQK-style variants compute Q and K from a representation that
does not evolve with depth (the input embeddings, or an earlier layer) and keep
V from h, so *where* a token looks is fixed by the earlier representation while
*what* it reads is current:

    out = W_o softmax(W_q e (W_k e)^T / sqrt(d)) W_v h        per head

A merge op over two branches [h, e] of one split: ``clone(2) layer identity
earlier_qk_attention`` takes e from the split point, one layer before h. The
paper's static-embedding stack, where *every* layer takes Q and K from the
input embeddings, is a recursive rule: each level's split holds e and runs the
layers below in its other arm,

    static : clone(2) below identity earlier_qk_attention(residual=true) ffn
    below  : identity | static

so the nested splits hand the same e to every layer (``attention.pcfg`` offers
both stacks). e may have another width than h; both share batch and tokens.
``causal`` masks future keys; ``residual`` returns h + attention (the layer's
residual, which a split holding e cannot add around the op).

Fidelity (S09): Paper: controlled relaxations of attention (fixed,
input-independent mixing; non-dot-product similarity; queries and keys from
the static input embeddings or an earlier layer instead of the evolving
state) in uniform and hybrid stacks; archgram: this op (Q/K from an earlier
branch, V from the current one) in both the one-layer-back hybrid and the
all-layers static-embedding stack, ``fixed_mixing`` and ``l2`` scores for the
other relaxations; differs: nothing in the mechanism.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from archgram.errors import ShapeError
from archgram.ops.registry import Arg, MergeOp, check_rank, register_op
from archgram.shapes import Shape, fmt


@register_op(
    "earlier_qk_attention",
    family="attention",
    refs=("S09",),
    args={
        "heads": Arg(int, 2, low=1, doc="attention heads (must divide the width of h)"),
        "causal": Arg(bool, False, doc="mask future keys"),
        "residual": Arg(bool, False, doc="return h + attention: the layer's residual, for stacks that hold e in the split"),
    },
)
class EarlierQKAttention(MergeOp):
    """Attention over branches [h, e]: queries and keys from e (earlier layer), values from h."""

    def __init__(self, shapes: list[Shape], heads: int = 2, causal: bool = False, residual: bool = False):
        super().__init__()
        self.output_shape(shapes, heads=heads)
        (_, _, d), (_, _, de) = shapes
        self.heads, self.causal, self.residual = heads, causal, residual
        self.qk = nn.Linear(de, 2 * d)
        self.v, self.o = nn.Linear(d, d), nn.Linear(d, d)

    @classmethod
    def output_shape(cls, shapes: list[Shape], heads: int = 2, causal: bool = False, residual: bool = False) -> Shape:
        if len(shapes) != 2:
            raise ShapeError(f"earlier_qk_attention merges exactly 2 branches [h, e], got {len(shapes)}")
        h, e = shapes
        check_rank("earlier_qk_attention", h, 3)
        check_rank("earlier_qk_attention", e, 3)
        if h[:2] != e[:2]:
            raise ShapeError(f"earlier_qk_attention: h {fmt(h)} and e {fmt(e)} must share batch and tokens")
        if h[2] % heads:
            raise ShapeError(f"earlier_qk_attention: heads={heads} must divide the width of {fmt(h)}")
        return h

    @classmethod
    def branch_target(cls, done: list[Shape], heads: int = 2, causal: bool = False, residual: bool = False) -> tuple | None:
        h = done[0]
        return (h[0], h[1], None)

    @classmethod
    def count_params(cls, shapes: list[Shape], /, heads: int = 2, causal: bool = False, residual: bool = False) -> int:
        (_, _, d), (_, _, de) = shapes
        return de * 2 * d + 2 * d + 2 * (d * d + d)

    @classmethod
    def flops(cls, shapes: list[Shape], out: Shape, params: int, /, **args) -> int:
        b, n, d = shapes[0]
        return 2 * params * b * n + 4 * b * n * n * d

    def weights(self, e: torch.Tensor) -> torch.Tensor:
        """(B, heads, N, N) attention weights, a function of e alone."""
        b, n, _ = e.shape
        q, k = self.qk(e).view(b, n, 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        if self.causal:
            future = torch.ones(n, n, dtype=torch.bool, device=e.device).triu(1)
            logits = logits.masked_fill(future, float("-inf"))
        return logits.softmax(-1)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        h, e = xs
        b, n, d = h.shape
        v = self.v(h).view(b, n, self.heads, -1).transpose(1, 2)
        out = self.o((self.weights(e) @ v).transpose(1, 2).reshape(b, n, d))
        return h + out if self.residual else out
