"""Aaren: attention as a many-to-many RNN (Feng et al. 2024, "Attention as an
RNN", catalog S35).

A learned query token per head attends over the prefix x_1..x_t of the input for
every t: o_t = softmax_j<=t(s_j) v_j with s_j = q . k_j / sqrt(d). The prefix
softmaxes are an RNN over the triple (m, u, w) -- running max, denominator
sum exp(s - m) and numerator sum exp(s - m) v -- and since the combine

    (m_a, u_a, w_a) + (m_b, u_b, w_b) = (m, u_a e^(m_a-m) + u_b e^(m_b-m),
                                          w_a e^(m_a-m) + w_b e^(m_b-m)),  m = max(m_a, m_b)

is associative, all n outputs come from one parallel prefix scan
(``prefix_scan``, Hillis-Steele, log2 n steps); ``recurrent`` is the sequential
RNN, and ``Aaren.step`` decodes one token with constant memory.

Fidelity (S35): faithful -- Paper: attention with a learned query token is
  a many-to-many RNN over prefixes; its (max, denominator, numerator) state
  combines associatively, so all prefix outputs come from a parallel prefix
  scan, and new tokens update in O(1) memory; archgram: that op (parallel
  Hillis-Steele scan, sequential RNN and a one-token step); differs: the scan
  is a PyTorch loop of log2 n steps, not a fused kernel (the paper uses the
  same PyTorch-level scan).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from archgram.errors import ShapeError
from archgram.ops.registry import Arg, Op, check_rank, register_op
from archgram.shapes import Shape

Triple = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def combine(a: Triple, b: Triple) -> Triple:
    """The associative operator: ``a`` summarises earlier tokens than ``b``."""
    m = torch.maximum(a[0], b[0])
    ea, eb = torch.exp(a[0] - m), torch.exp(b[0] - m)
    return m, a[1] * ea + b[1] * eb, a[2] * ea[..., None] + b[2] * eb[..., None]


def prefix_scan(s: torch.Tensor, v: torch.Tensor) -> Triple:
    """Inclusive scan of ``combine`` along the tokens: s (..., N), v (..., N, D).
    Step ``offset`` combines every element with the one ``offset`` to its left."""
    m, u, w = s, torch.ones_like(s), v
    n, offset = s.shape[-1], 1
    while offset < n:
        left = (m[..., :-offset], u[..., :-offset], w[..., :-offset, :])
        right = (m[..., offset:], u[..., offset:], w[..., offset:, :])
        cm, cu, cw = combine(left, right)
        m = torch.cat((m[..., :offset], cm), dim=-1)
        u = torch.cat((u[..., :offset], cu), dim=-1)
        w = torch.cat((w[..., :offset, :], cw), dim=-2)
        offset *= 2
    return m, u, w


def recurrent(s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The same outputs token by token (the RNN form): (..., N, D)."""
    state, outs = None, []
    for t in range(s.shape[-1]):
        out, state = rnn_cell(state, s[..., t], v[..., t, :])
        outs.append(out)
    return torch.stack(outs, dim=-2)


def rnn_cell(state: Triple | None, s_t: torch.Tensor, v_t: torch.Tensor) -> tuple[torch.Tensor, Triple]:
    token = (s_t, torch.ones_like(s_t), v_t)
    state = token if state is None else combine(state, token)
    return state[2] / state[1][..., None], state


ARGS = {
    "heads": Arg(int, 4, low=1, doc="learned query tokens, one per head"),
    "head_dim": Arg(int, 0, low=0, doc="0: channels // heads"),
}


@register_op("aaren", family="attention", args=ARGS, refs=("S35",))
class Aaren(Op):
    """Attention as a many-to-many RNN: learned queries over every prefix, by parallel prefix scan."""

    def __init__(self, shape: Shape, heads: int = 4, head_dim: int = 0):
        super().__init__()
        dim = shape[-1]
        self.heads, self.head_dim = heads, head_dim or dim // heads
        inner = heads * self.head_dim
        self.query = nn.Parameter(torch.randn(heads, self.head_dim) / math.sqrt(self.head_dim))
        self.k = nn.Linear(dim, inner)
        self.v = nn.Linear(dim, inner)
        self.o = nn.Linear(inner, dim)

    @classmethod
    def output_shape(cls, shape: Shape, **args: Any) -> Shape:
        check_rank("aaren", shape, 3)
        heads, head_dim = args.get("heads", 4), args.get("head_dim", 0)
        if heads < 1:
            raise ShapeError("aaren needs at least one head")
        if not head_dim and shape[2] % heads:
            raise ShapeError(f"aaren: {shape[2]} channels do not split into {heads} heads (set head_dim)")
        return shape

    def scores_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """s (B, H, N) and v (B, H, N, d) for tokens x (B, N, D)."""
        b, n, _ = x.shape
        k = self.k(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        v = self.v(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        s = (k @ self.query[None, :, :, None])[..., 0] / math.sqrt(self.head_dim)
        return s, v

    def readout(self, o: torch.Tensor) -> torch.Tensor:
        b, h, n, d = o.shape
        return self.o(o.transpose(1, 2).reshape(b, n, h * d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, v = self.scores_values(x)
        _, u, w = prefix_scan(s, v)
        return self.readout(w / u[..., None])

    def step(self, state: Triple | None, x_t: torch.Tensor) -> tuple[torch.Tensor, Triple]:
        """Decode one token x_t (B, D): (y_t (B, D), state), constant memory."""
        s, v = self.scores_values(x_t[:, None, :])
        out, state = rnn_cell(state, s[..., 0], v[..., 0, :])
        return self.readout(out[..., None, :])[:, 0], state


__all__ = ["Aaren", "combine", "prefix_scan", "recurrent", "rnn_cell"]
