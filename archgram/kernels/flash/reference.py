"""The naive math the flash kernels must match: materialise the logits, mask,
apply the score function, contract with the values. Independent of the
attention op's code and of the kernels; differentiable (tests take its
float64 gradients as the truth for the backward kernels).

Shapes: q (B, H, Nq, D), k and v (B, Hkv, Nk, D) with H % Hkv == 0; query head
h reads key/value head h // (H // Hkv) (MHA: Hkv = H, MQA: Hkv = 1).

Logits s_ij = scale * q_i . k_j - slope_h * |i - j| (ALiBi, optional)
+ rel_bias[h, clip(j - i, -R, R) + R] (a learned (H, 2R + 1) table, optional). Masks
and scores: see ``archgram.kernels.flash.spec``. lse is the natural
log-sum-exp of the (capped) logits over visible keys for softmax, softcap
and clipped; None otherwise.
"""
from __future__ import annotations

import math

import torch

from archgram.kernels.flash.spec import KERNEL_SCORES, make_spec


def _neighbors(i: int, n: int, size: int, dilation: int) -> list[int]:
    """Keys of query i under NATTEN's 1D rule, enumerated: i's dilation group,
    ``size`` consecutive members centred on i, shifted inward at the ends."""
    group = list(range(i % dilation, n, dilation))
    pos = group.index(i)
    start = min(max(pos - size // 2, 0), max(len(group) - size, 0))
    return group[start:start + size]


def _grid_neighbors(i: int, grid: tuple[int, int], size: int, dilation: int) -> list[int]:
    """Keys of token i of the row-major (H, W) grid under NATTEN's 2D rule,
    enumerated: every (row, column) pair of its 1D row and column neighbours."""
    h, w = grid
    rows = _neighbors(i // w, h, size, dilation)
    cols = _neighbors(i % w, w, size, dilation)
    return [r * w + c for r in rows for c in cols]


def visible(nq: int, nk: int, causal: bool = False, window: int | None = None, device=None, *,
            dilation: int = 1, neighborhood: int | None = None, block_mask: torch.Tensor | None = None,
            block: tuple[int, int] | None = None, grid: tuple[int, int] | None = None) -> torch.Tensor:
    """(nq, nk) bool: which keys each query sees."""
    diff = torch.arange(nq, device=device)[:, None] - torch.arange(nk, device=device)[None, :]
    keep = torch.ones(nq, nk, dtype=torch.bool, device=device)
    if causal:
        keep &= diff >= 0
    if window is not None:
        keep &= (diff.abs() <= window) & (diff % dilation == 0)
    if neighborhood is not None:
        near = torch.zeros(nq, nk, dtype=torch.bool)
        for i in range(nq):
            keys = _neighbors(i, nk, neighborhood, dilation) if grid is None else \
                _grid_neighbors(i, grid, neighborhood, dilation)
            near[i, keys] = True
        keep &= near.to(keep.device)
    if block_mask is not None:
        rows = torch.arange(nq, device=device) // block[0]
        cols = torch.arange(nk, device=device) // block[1]
        keep &= block_mask.to(device=keep.device, dtype=torch.bool)[rows][:, cols]
    return keep


def attention(q, k, v, *, alibi_slopes: torch.Tensor | None = None, rel_bias: torch.Tensor | None = None,
              dtype=torch.float64, **kw):
    """(out in q's dtype, lse float32 (B, H, Nq) or None), computed in ``dtype``.
    Keywords as ``archgram.kernels.flash.spec.Spec``."""
    b, h, nq, d = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    spec = make_spec(nq, nk, **kw)
    assert spec.score in KERNEL_SCORES
    scale = 1.0 / math.sqrt(d) if spec.scale is None else spec.scale
    group = h // hkv
    qf = q.to(dtype)
    kf = k.to(dtype).repeat_interleave(group, dim=1)
    vf = v.to(dtype).repeat_interleave(group, dim=1)
    s = torch.matmul(qf, kf.transpose(-1, -2)) * scale
    if alibi_slopes is not None:
        dist = (torch.arange(nq, device=q.device)[:, None] - torch.arange(nk, device=q.device)[None, :]).abs()
        s = s - alibi_slopes.to(device=q.device, dtype=dtype)[None, :, None, None] * dist.to(dtype)
    if rel_bias is not None:
        r = (rel_bias.shape[1] - 1) // 2
        offset = torch.arange(nk, device=q.device)[None, :] - torch.arange(nq, device=q.device)[:, None]
        s = s + rel_bias.to(dtype)[:, offset.clamp(-r, r) + r][None]
    keep = visible(nq, nk, spec.causal, spec.window, q.device, dilation=spec.dilation,
                   neighborhood=spec.neighborhood, block_mask=spec.block_mask, block=spec.block, grid=spec.grid)
    zero = torch.zeros((), dtype=dtype, device=q.device)
    lse = None
    if spec.score == "sigmoid":
        bias = -math.log(nk) if spec.sigmoid_bias is None else spec.sigmoid_bias
        w = torch.where(keep, torch.sigmoid(s + bias), zero)
    elif spec.score == "softplus":
        log_n = torch.log(keep.sum(-1, keepdim=True).clamp(min=1).to(dtype))
        f = torch.where(keep, torch.nn.functional.softplus(log_n * s) ** spec.power, zero)
        w = f / f.sum(-1, keepdim=True).clamp(min=1e-30)
    else:
        if spec.score == "softcap":
            s = spec.cap * torch.tanh(s / spec.cap)
        s = s.masked_fill(~keep, float("-inf"))
        lse = torch.logsumexp(s, dim=-1)
        w = torch.exp(s - lse[..., None]).nan_to_num(0.0)  # fully masked rows: zero weights
        if spec.score == "clipped":
            w = torch.where(keep, ((spec.zeta - spec.gamma) * w + spec.gamma).clamp(0.0, 1.0), zero)
        lse = lse.float()
    return torch.matmul(w, vf).to(q.dtype), lse
