"""The naive math the split-KV decode kernel must match.

q (B, H, Nq, D): the Nq newest tokens of each sequence; k, v (B, Hkv, Nk, D):
the KV cache, of which sequence b uses the first ``lengths[b]`` slots (the
newest Nq among them are the queries' own keys). Query head h reads KV head
h // (H // Hkv). Query t (0..Nq-1) sits at position lengths[b] - Nq + t and sees
keys j <= that position (causal among the new tokens; Nq = 1 sees the whole
cache). out = softmax(scale * q k^T over visible keys) v; lse = log sum exp.
"""
from __future__ import annotations

import math

import torch


def visible(lengths: torch.Tensor, nq: int, nk: int) -> torch.Tensor:
    """(B, 1, Nq, Nk) bool."""
    pos = lengths.view(-1, 1, 1) - nq + torch.arange(nq, device=lengths.device).view(1, -1, 1)
    j = torch.arange(nk, device=lengths.device).view(1, 1, -1)
    return (j <= pos)[:, None]


def attention(q, k, v, lengths=None, *, scale: float | None = None, dtype=torch.float64):
    """(out in q's dtype, lse float32 (B, H, Nq)); rows that see nothing give 0 and -inf."""
    b, h, nq, d = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    if lengths is None:
        lengths = torch.full((b,), nk, device=q.device)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    kf = k.to(dtype).repeat_interleave(h // hkv, dim=1)
    vf = v.to(dtype).repeat_interleave(h // hkv, dim=1)
    s = (q.to(dtype) @ kf.transpose(-1, -2)) * scale
    s = s.masked_fill(~visible(lengths.to(q.device), nq, nk), float("-inf"))
    lse = torch.logsumexp(s, -1)
    w = torch.exp(s - lse[..., None]).nan_to_num(0.0)
    return (w @ vf).to(q.dtype), lse.float()
