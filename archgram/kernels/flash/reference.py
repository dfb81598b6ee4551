"""The naive math the flash kernel must match: materialise the logits, mask,
apply the score function, contract with the values. Independent of the
attention op's code.

Shapes: q (B, H, Nq, D), k and v (B, Hkv, Nk, D) with H % Hkv == 0; query head
h reads key/value head h // (H // Hkv) (MHA: Hkv = H, MQA: Hkv = 1).

Logits s_ij = scale * q_i . k_j - slope_h * |i - j| (ALiBi, optional).
Visible keys: all (full), j <= i (causal), |i - j| <= window (window), or both
(causal window: i - window <= j <= i). Scores:

- softmax: w = softmax over visible keys; lse_i = log sum_j exp(s_ij).
- softcap: s <- cap * tanh(s / cap), then softmax (lse of the capped logits).
- sigmoid: w = sigmoid(s + b) on visible keys, 0 elsewhere (no normalisation;
  lse is None).
"""
from __future__ import annotations

import math

import torch

SCORES = ("softmax", "sigmoid", "softcap")


def visible(nq: int, nk: int, causal: bool, window: int | None, device=None) -> torch.Tensor:
    """(nq, nk) bool: which keys each query sees."""
    diff = torch.arange(nq, device=device)[:, None] - torch.arange(nk, device=device)[None, :]
    keep = torch.ones(nq, nk, dtype=torch.bool, device=device)
    if causal:
        keep &= diff >= 0
    if window is not None:
        keep &= diff.abs() <= window
    return keep


def attention(q, k, v, *, score: str = "softmax", causal: bool = False, window: int | None = None,
              alibi_slopes: torch.Tensor | None = None, scale: float | None = None,
              sigmoid_bias: float | None = None, cap: float = 50.0, dtype=torch.float64):
    """(out in q's dtype, lse float32 (B, H, Nq) or None), computed in ``dtype``."""
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}")
    b, h, nq, d = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    group = h // hkv
    qf = q.to(dtype)
    kf = k.to(dtype).repeat_interleave(group, dim=1)
    vf = v.to(dtype).repeat_interleave(group, dim=1)
    s = torch.matmul(qf, kf.transpose(-1, -2)) * scale
    if alibi_slopes is not None:
        dist = (torch.arange(nq, device=q.device)[:, None] - torch.arange(nk, device=q.device)[None, :]).abs()
        s = s - alibi_slopes.to(dtype)[None, :, None, None] * dist.to(dtype)
    keep = visible(nq, nk, causal, window, q.device)
    lse = None
    if score == "sigmoid":
        bias = -math.log(nk) if sigmoid_bias is None else sigmoid_bias
        w = torch.sigmoid(s + bias) * keep
    else:
        if score == "softcap":
            s = cap * torch.tanh(s / cap)
        s = s.masked_fill(~keep, float("-inf"))
        lse = torch.logsumexp(s, dim=-1)
        w = torch.exp(s - lse[..., None]).nan_to_num(0.0)  # fully masked rows: zero weights
        lse = lse.float()
    return torch.matmul(w, vf).to(q.dtype), lse
