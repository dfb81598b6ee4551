"""Fourier KArAt (Maity et al. 2025, "Kolmogorov-Arnold Attention"; catalog S05):
the elementwise ``karat`` score and the low-rank row operator ``karat_lowrank``.

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
from archgram.ops.attention.scores import LengthLimited, Score, l1_rows, masked_fill_min, masked_zero, refuse


@SCORES.register
class FourierKArAt(Score):
    """Fourier Kolmogorov-Arnold attention (Maity et al. 2025, "KArAt", catalog S05):
    softmax is replaced by a learnable function of the scores followed by l1 row
    normalisation. Per head h the function is a Fourier series with ``grid``
    frequencies on top of a fixed base: f_h(x) = base(x) + sum_k a_hk cos(k x) +
    b_hk sin(k x); weights w_ij = f(s_ij) / sum_j |f(s_ij)| (weights may be
    negative, as in the paper's l1 projection). With base ``exp`` (applied as
    exp(x - max_j x), a per-row constant that the normalisation removes) and
    zero coefficients this is exactly softmax; coefficients start at 1e-3 so
    training begins softmax-like. base ``none`` is the paper's pure Fourier KAN.
    The paper's full operator mixes each score row through an N x N (or low-rank)
    KAN; this one is elementwise per head (length-independent). Masked keys are
    zero before normalisation.

    Catalog S05, read against the paper. Paper: softmax is replaced by a learnable
    operator on each row of scores, a KAN R^N -> R^N with a learnable univariate
    function per (output, input) pair in a chosen basis (Fourier for Fourier-KArAt),
    made affordable as a low-rank operator (R^N -> R^r, then back), followed by a
    projection onto the l1 ball. archgram: that operator is ``karat_lowrank``
    (karat.py; its parameters are indexed by key position, so it is length-limited
    by ``max_len``), and this score is its length-free diagonal special case
    (phi_jk = 0 for j != k, shared over positions). Differs: both add an optional
    exp base so training can start from softmax; the paper's full-rank N x N
    operator is the low-rank one with rank = N."""

    name = "karat"
    params = ("grid", "base")
    refs = ("S05",)
    BASES = ("exp", "none")

    def __init__(self, heads: int, grid: int = 3, base: str = "exp"):
        super().__init__(heads)
        self.base = base
        self.cos = nn.Parameter(torch.full((heads, grid), 1e-3))
        self.sin = nn.Parameter(torch.full((heads, grid), 1e-3))

    @classmethod
    def check(cls, pattern, causal, params):
        grid = params.get("grid", 3)
        refuse(cls.name, isinstance(grid, int) and grid >= 1, f"grid must be a positive integer, got {grid!r}")
        refuse(cls.name, params.get("base", "exp") in cls.BASES, f"base must be one of {', '.join(cls.BASES)}")

    def function(self, x: torch.Tensor) -> torch.Tensor:
        """f_h(x) elementwise on (B, H, Nq, Nk) scores (before normalisation)."""
        k = torch.arange(1, self.cos.shape[1] + 1, dtype=x.dtype, device=x.device)
        kx = x[..., None] * k  # (B, H, Nq, Nk, G)
        four = (torch.cos(kx) * self.cos[:, None, None, :]).sum(-1) + (torch.sin(kx) * self.sin[:, None, None, :]).sum(-1)
        if self.base == "exp":
            return torch.exp(x - x.amax(-1, keepdim=True).detach()) + four
        return four

    def weights(self, logits, mask):
        x = masked_fill_min(logits, mask)
        if mask is not None:  # keep the Fourier terms of masked keys finite; they are zeroed below
            x = torch.where(mask, x, x.amax(-1, keepdim=True))
        return l1_rows(masked_zero(self.function(x), mask))


@SCORES.register
class FourierKArAtLowRank(LengthLimited):
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
            refuse(cls.name, isinstance(v, int) and v >= 1, f"{key} must be a positive integer, got {v!r}")
        refuse(cls.name, params.get("base", "exp") in cls.BASES, f"base must be one of {', '.join(cls.BASES)}")

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
        return l1_rows(masked_zero(self.function(x, mask), mask))
