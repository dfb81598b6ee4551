"""Score functions: how attention logits become weights. The ``Score`` base,
the helpers scores share, and the plain scores (softmax, sigmoid, soft-capping).

Most scores change only ``weights`` (logits -> weights) or ``logits`` (q, k ->
logits); scores with their own contraction (gated output, triple-wise keys,
per-query metrics) override ``attend``. Scores that hold learned
parameters sized by the head dim override ``build``; scores limited to a
sequence length refuse longer inputs in ``check_shape``. A paper's scores live
in a module of their own beside this one (quantizable.py, karat.py, linear.py, ...).
"""
from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from archgram.errors import ShapeError
from archgram.ops.attention.parts import SCORES, Part


class Score(Part, nn.Module):
    """Default path: logits = scale * q k^T + bias, weights = self.weights(logits), out = weights v.

    Scores that never form the n x n weights (linear attention) override
    ``attend`` and declare in ``check`` which patterns they can honour."""

    #: False for scores that cannot add a logit bias (linear attention never forms
    #: the logits); the op refuses bias-adding positions for them at shape time.
    takes_bias: ClassVar[bool] = True

    def __init__(self, heads: int, **params):
        nn.Module.__init__(self)
        self.heads = heads

    @classmethod
    def flops(cls, n: int, head_dim: int, heads: int, batch: int, *, keys: int | None = None,
              qk_dim: int | None = None, **params) -> int:
        """Forward FLOPs of the attention core (projections excluded): the quadratic
        q k^T and weights v, 2 * B * H * n * keys * (d_qk + d_v). Scores that never
        form the n x keys matrix (linear attention) override with their own cost."""
        keys = n if keys is None else keys
        qk_dim = head_dim if qk_dim is None else qk_dim
        return 2 * batch * heads * n * keys * (qk_dim + head_dim)

    #: Scores whose weights are sized by the head dim take it in their constructor.
    takes_head_dim: ClassVar[bool] = False
    #: Scores sized by the input's geometry get ``tokens`` and ``grid`` from the op.
    uses_geometry: ClassVar[bool] = False

    @classmethod
    def build(cls, heads: int, head_dim: int, **params) -> Score:
        """The module for one attention op."""
        return cls(heads, head_dim, **params) if cls.takes_head_dim else cls(heads, **params)

    @classmethod
    def check(cls, pattern, causal: bool, params: dict) -> None:
        """Refuse (ShapeError) patterns or parameters this score cannot serve."""

    @classmethod
    def value_gate(cls, heads: int, dim: int, **params) -> nn.Module | None:
        """A module mapping the op's input tokens (B, N, C) to per-head gates
        (B, H, N, 1) that the op multiplies into the values before attention
        (reversed attention's per-child message gate), or None."""
        return None

    @classmethod
    def input_gate(cls, heads: int, dim: int) -> nn.Module | None:
        """A module mapping the op's input tokens (B, N, C) to per-head output
        gates (B, H, N, 1) that the op multiplies into the heads' outputs (gated
        attention), or None for scores without one."""
        return None

    @classmethod
    def check_shape(cls, n: int, head_dim: int, params: dict) -> None:
        """Refuse (ShapeError) token counts or head dims this score cannot serve."""

    def logits(self, q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
        return torch.matmul(q, k.transpose(-1, -2)) * scale

    def attend(self, q, k, v, mask, bias, scale: float, causal: bool = False):
        logits = self.logits(q, k, scale)
        if bias is not None:
            logits = logits + bias
        return torch.matmul(self.weights(logits, mask), v)

    def weights(self, logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError


def masked_fill_min(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Masked logits at the dtype's minimum (not -inf: a fully masked row stays finite)."""
    if mask is None:
        return logits
    return logits.masked_fill(~mask, torch.finfo(logits.dtype).min)


def masked_zero(w: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Weights with masked entries exactly zero (where, not multiply: inf * 0 is NaN)."""
    return w if mask is None else torch.where(mask, w, torch.zeros((), dtype=w.dtype, device=w.device))


def visible_keys(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Number of keys each query may see, shape (..., Nq, 1), at least 1."""
    if mask is None:
        return torch.full((*logits.shape[:-1], 1), float(logits.shape[-1]), dtype=logits.dtype, device=logits.device)
    return mask.sum(-1, keepdim=True).to(logits.dtype).clamp(min=1)


def l1_rows(w: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Rows divided by their l1 norm (signed weights keep their sign)."""
    return w / w.abs().sum(-1, keepdim=True).clamp(min=eps)


def refuse(name: str, ok: bool, why: str) -> None:
    """A score's ``check``: ShapeError with ``why`` unless ``ok``."""
    if not ok:
        raise ShapeError(f"score '{name}': {why}")


class LengthLimited(Score):
    """Scores whose cost or parameters grow with the token count: refused above ``max_len``."""

    default_max_len = 64
    too_long = "{n} tokens exceed max_len {m}"

    @classmethod
    def check(cls, pattern, causal, params):
        m = params.get("max_len", cls.default_max_len)
        refuse(cls.name, isinstance(m, int) and m >= 1, f"max_len must be a positive integer, got {m!r}")

    @classmethod
    def check_shape(cls, n, head_dim, params):
        m = params.get("max_len", cls.default_max_len)
        refuse(cls.name, n <= m, cls.too_long.format(m=m, n=n))


@SCORES.register
class Softmax(Score):
    """Standard scaled dot-product attention."""

    name = "softmax"

    def weights(self, logits, mask):
        return torch.softmax(masked_fill_min(logits, mask), dim=-1)

    def flash(self, n, grid, device):
        return {"score": "softmax"}


@SCORES.register
class Sigmoid(Score):
    """Sigmoid attention (Ramapuram et al. 2024, catalog S06).

    Paper: weights sigmoid(q.k / sqrt(d) + b), each key judged on its own (no
    row normalisation), with b = -log n (n the sequence length) so that at
    initialisation a row sums to about 1 as softmax's does; training is stable
    only with the large early attention norms tamed, by that bias, QK-norm and
    hybrid-norm or LayerScale; FlashSigmoid is its fused kernel.
    Here: ``bias`` None gives b = -log n, n the number of keys of the call (the
    sequence length; under a gathering pattern -- axial, halo, circular,
    routing -- the size of the gathered neighbourhood); ``qk_norm=true`` normalises each query and key to RMS 1
    over the head dim (a rotation leaves it unchanged, so RoPE commutes with
    it) and scales each head's logits by a learned gain starting at 1. Hybrid-
    norm and LayerScale act on the branch output, so they are grammar choices
    (``attention(...) layernorm``, ``layer_scale``; see ``stabilisers``). The
    Triton flash kernel (``archgram/kernels/flash``) serves the plain form.
    Differs: the QK-norm here is parameter-free per channel with one gain per
    head, not LayerNorm with per-channel gain and shift (which would not
    commute with RoPE). At decode time n is the number of keys so far, so the
    bias of a token's row differs from the parallel form's, whose n is the
    whole length; the paper fixes n to the training length."""

    name = "sigmoid"
    params = ("bias", "qk_norm")
    refs = ("S06",)

    def __init__(self, heads: int, bias: float | None = None, qk_norm: bool = False):
        super().__init__(heads)
        self.bias = bias
        self.qk_norm = bool(qk_norm)
        if self.qk_norm:
            self.qk_gain = nn.Parameter(torch.ones(heads, 1, 1))

    def logits(self, q, k, scale):
        if not self.qk_norm:
            return super().logits(q, k, scale)
        q = q * torch.rsqrt(q.square().mean(-1, keepdim=True) + 1e-6)
        k = k * torch.rsqrt(k.square().mean(-1, keepdim=True) + 1e-6)
        return super().logits(q, k, scale) * self.qk_gain

    def weights(self, logits, mask):
        b = -math.log(logits.shape[-1]) if self.bias is None else self.bias
        w = torch.sigmoid(logits + b)
        return w if mask is None else w * mask

    def flash(self, n, grid, device):
        return None if self.qk_norm else {"score": "sigmoid", "sigmoid_bias": self.bias}


@SCORES.register
class SoftCap(Score):
    """tanh soft-capping (Gemma 2): logits <- cap * tanh(logits / cap), then softmax.
    Bounds every logit to (-cap, cap) smoothly, so no single key can saturate
    the softmax; close to plain softmax while |logits| << cap."""

    name = "softcap"
    params = ("cap",)

    def __init__(self, heads: int, cap: float = 50.0):
        super().__init__(heads)
        self.cap = float(cap)

    @classmethod
    def check(cls, pattern, causal, params):
        refuse(cls.name, params.get("cap", 50.0) > 0, "needs a positive cap")

    def weights(self, logits, mask):
        capped = self.cap * torch.tanh(logits / self.cap)
        return masked_zero(torch.softmax(masked_fill_min(capped, mask), dim=-1), mask)

    def flash(self, n, grid, device):
        return {"score": "softcap", "cap": self.cap}
