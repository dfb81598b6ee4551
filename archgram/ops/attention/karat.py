"""Low-rank Fourier KArAt (Maity et al. 2025, "Kolmogorov-Arnold Attention"; catalog S05).

KArAt replaces softmax by a learnable operator on each row of attention scores.
The general form is a KAN layer Phi: R^N -> R^N, out_j = sum_k phi_jk(s_k), with
a learnable univariate function per (output, input) pair; memory forces the
paper's modular variant to be low rank: Phi maps the row to R^r and a learnable
W (N x r) maps back, then the row is projected onto the l1 ball:

    z_r   = sum_k phi_rk(s_ik),  phi_rk(x) = sum_g a_rkg cos(g x) + b_rkg sin(g x)
    w_ij  = base(s_ij) + sum_r W_jr z_r,        w_i <- w_i / sum_j |w_ij|

per head. Unlike the elementwise ``karat`` score, a key's weight depends on the
scores of the other keys through Phi. Its parameters are indexed by key
position, so sequences longer than ``max_len`` are refused (and a shorter one
uses the first N rows). Masked keys contribute nothing to z and get weight 0.
With base ``exp`` (exp(s - max), the softmax numerator) and zero W the score is
exactly softmax, and W starts at zero so training begins from softmax; base
``none`` is the paper's pure operator.
"""
from __future__ import annotations

import torch
from torch import nn

from archgram.ops.attention.parts import SCORES
from archgram.ops.attention.scores import _l1_rows, _LengthLimited, _refuse, masked_fill_min, masked_zero


@SCORES.register
class FourierKArAtLowRank(_LengthLimited):
    """KArAt's low-rank learnable row operator: Fourier KAN R^N -> R^r, then W: R^r -> R^N, l1 rows."""

    name = "karat_lowrank"
    params = ("rank", "grid", "base", "max_len")
    refs = ("S05",)
    BASES = ("exp", "none")
    too_long = "a learned operator over {m} key positions cannot serve {n} tokens (raise max_len)"

    def __init__(self, heads: int, rank: int = 4, grid: int = 3, base: str = "exp", max_len: int = 64):
        super().__init__(heads)
        self.base = base
        self.cos = nn.Parameter(torch.randn(heads, rank, max_len, grid) * 0.1 / max_len**0.5)
        self.sin = nn.Parameter(torch.randn(heads, rank, max_len, grid) * 0.1 / max_len**0.5)
        self.up = nn.Parameter(torch.zeros(heads, max_len, rank))  # W: zero, so training starts at the base

    @classmethod
    def check(cls, pattern, causal, params):
        super().check(pattern, causal, params)
        for key in ("rank", "grid"):
            v = params.get(key, 4 if key == "rank" else 3)
            _refuse(cls.name, isinstance(v, int) and v >= 1, f"{key} must be a positive integer, got {v!r}")
        _refuse(cls.name, params.get("base", "exp") in cls.BASES, f"base must be one of {', '.join(cls.BASES)}")

    def function(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Row operator before normalisation, (B, H, Nq, Nk) scores -> (B, H, Nq, Nk)."""
        n = x.shape[-1]
        g = torch.arange(1, self.cos.shape[-1] + 1, dtype=x.dtype, device=x.device)
        gx = x[..., None] * g  # (B, H, Nq, Nk, G)
        terms = torch.einsum("bhqkg,hrkg->bhqrk", torch.cos(gx), self.cos[:, :, :n]) + torch.einsum(
            "bhqkg,hrkg->bhqrk", torch.sin(gx), self.sin[:, :, :n])
        if mask is not None:  # masked keys feed nothing into z
            terms = terms * mask[..., None, :].to(terms.dtype)
        z = terms.sum(-1)  # (B, H, Nq, r)
        out = torch.einsum("bhqr,hkr->bhqk", z, self.up[:, :n])
        if self.base == "exp":
            out = out + torch.exp(x - x.amax(-1, keepdim=True).detach())
        return out

    def weights(self, logits, mask):
        x = masked_fill_min(logits, mask)
        if mask is not None:  # keep the Fourier terms of masked keys finite; they are zeroed below
            x = torch.where(mask, x, x.amax(-1, keepdim=True))
        return _l1_rows(masked_zero(self.function(x, mask), mask))
