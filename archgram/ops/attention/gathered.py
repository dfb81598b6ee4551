"""Attention over a gathered subset of keys: each query reads only the keys a
selector chose for it (``idx``), so the core costs O(N k d) instead of O(N^2 d)
and no N x N logit matrix is formed.

Used by selector patterns (``Pattern.gathers``; Sparsifiner) on scores with the
default dot-product contraction (``Score.logits``/``Score.attend`` not
overridden); anything else falls back to the dense masked path.
"""
from __future__ import annotations

import torch


def gather_keys(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, H, N, D) rows picked per query: idx (B, H, Nq, k) -> (B, H, Nq, k, D)."""
    b, h = idx.shape[:2]
    bi = torch.arange(b, device=idx.device)[:, None, None, None]
    hi = torch.arange(h, device=idx.device)[None, :, None, None]
    return x[bi, hi, idx]


def gather_bias(bias: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """A (.., Nq, Nk) logit bias read at the chosen keys -> (B, H, Nq, k)."""
    full = bias.expand(*idx.shape[:2], *bias.shape[-2:])
    return full.gather(-1, idx)


def gathered_attend(score, q, k, v, idx, valid, bias, scale: float) -> torch.Tensor:
    """Per-head outputs (B, H, Nq, Dv): ``score.weights`` over the logits of the
    chosen keys only; ``valid`` (B, H, Nq, k) marks real choices (False where a
    query had fewer visible keys than k, e.g. early causal queries)."""
    logits = torch.einsum("bhnd,bhnjd->bhnj", q, gather_keys(k, idx)) * scale
    if bias is not None:
        logits = logits + gather_bias(bias.to(logits.dtype), idx)
    weights = score.weights(logits, valid)
    return torch.einsum("bhnj,bhnjd->bhnd", weights, gather_keys(v, idx))


def selection_mask(idx: torch.Tensor, valid: torch.Tensor, nk: int) -> torch.Tensor:
    """The dense (B, H, Nq, Nk) bool mask of a selection (for analysis and the
    dense fallback; the gathered path never builds it). A key listed twice for a
    query (e.g. routing's own-token slot) is visible if any of its entries is valid."""
    mask = torch.zeros(*idx.shape[:-1], nk, dtype=torch.int8, device=idx.device)
    return mask.scatter_reduce(-1, idx, valid.to(torch.int8), reduce="amax") > 0
