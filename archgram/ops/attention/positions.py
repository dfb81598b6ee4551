"""Positional schemes, acting at one of three points of attention:

* ``rotate(q, k, grid)`` transforms queries/keys before the scores (RoPE; the
  positional-only scheme replaces them outright);
* ``bias(nq, nk, device)`` adds an (H, nq, nk) logit bias (ALiBi, URPE's B);
* ``reweight(weights, mask, grid)`` post-processes the attention weights
  (URPE's Toeplitz product, GPSA's gated mix); only schemes with
  ``reweights = True`` are called there, and the op refuses scores that never
  form the weights.

Schemes with ``uses_geometry = True`` are built with the token count and grid
(``tokens=``, ``grid=``), for parameters sized by the sequence.
"""
from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from archgram.errors import ShapeError
from archgram.ops.attention.parts import POSITIONS, Part


class Position(Part, nn.Module):
    #: True: ``reweight`` post-processes the attention weights.
    reweights: ClassVar[bool] = False
    #: True: the constructor also takes ``tokens`` and ``grid``.
    uses_geometry: ClassVar[bool] = False

    def __init__(self, heads: int, head_dim: int, **params):
        nn.Module.__init__(self)
        self.heads, self.head_dim = heads, head_dim

    @classmethod
    def check(cls, heads: int, head_dim: int) -> None:
        """Refuse head layouts this scheme cannot serve (ShapeError)."""

    def rotate(self, q, k, grid):
        return q, k

    def bias(self, nq: int, nk: int, device) -> torch.Tensor | None:
        return None

    def reweight(self, weights: torch.Tensor, mask: torch.Tensor | None, grid) -> torch.Tensor:
        """(B, H, Nq, Nk) attention weights -> new weights (``reweights`` schemes)."""
        return weights


@POSITIONS.register
class NoPosition(Position):
    name = "none"

    def flash(self, n, grid, device):
        return {}


def _rotate(x: torch.Tensor, pos: torch.Tensor, base: float) -> torch.Tensor:
    """Rotate consecutive pairs of ``x``'s last axis by angle pos * base^(-2i/d)."""
    d = x.shape[-1]
    freqs = base ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    angles = pos.to(torch.float32)[:, None] * freqs[None, :]  # (n, d/2)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.flatten(-2)


@POSITIONS.register
class RoPE(Position):
    """Rotary position embedding (Su et al.); on a grid, half the head dims rotate
    with the row and half with the column (axial 2D RoPE)."""

    name = "rope"
    params = ("base",)
    base = 10000.0

    def __init__(self, heads, head_dim, base: float = 10000.0):
        super().__init__(heads, head_dim)
        self.base = float(base)

    @classmethod
    def check(cls, heads, head_dim):
        if head_dim % 4:
            raise ShapeError(f"rope needs a head dim divisible by 4 (pairs, and rows/columns on grids), got {head_dim}")

    def rotate(self, q, k, grid):
        n = q.shape[-2]
        if grid is None:
            pos = torch.arange(n, device=q.device)
            return _rotate(q, pos, self.base), _rotate(k, pos, self.base)
        h, w = grid
        rows = torch.arange(h, device=q.device).repeat_interleave(w)
        cols = torch.arange(w, device=q.device).repeat(h)
        half = q.shape[-1] // 2

        def both(x):
            return torch.cat((_rotate(x[..., :half], rows, self.base), _rotate(x[..., half:], cols, self.base)), -1)

        return both(q), both(k)

    def flash(self, n, grid, device):
        return {}  # rotations are applied to q and k before the kernel


@POSITIONS.register
class ALiBi(Position):
    """Attention with linear biases (Press et al.): logit bias -m_h |i - j|, slopes
    m_h = 2^(-8 (h+1) / H) per head."""

    name = "alibi"

    def slopes(self) -> torch.Tensor:
        return torch.tensor([2 ** (-8 * (h + 1) / self.heads) for h in range(self.heads)])

    def bias(self, nq, nk, device):
        return -self.slopes().to(device)[:, None, None] * _distance(nq, nk, device).abs()[None]

    def flash(self, n, grid, device):
        return {"alibi_slopes": self.slopes()}


@POSITIONS.register
class RelativeBias(Position):
    """Learned relative position bias (Shaw et al. 2018, clipped; T5's bias
    without its log buckets): a per-head logit bias b_h[clip(j - i, -R, R)],
    zero at initialisation so training finds which offsets matter. The flash
    kernels take the same (H, 2R + 1) table and return its gradient."""

    name = "rel_bias"
    params = ("max_distance",)
    max_distance = 32

    def __init__(self, heads, head_dim, max_distance: int = 32):
        super().__init__(heads, head_dim)
        if isinstance(max_distance, bool) or not isinstance(max_distance, int) or max_distance < 1:
            raise ShapeError(f"rel_bias: max_distance must be an integer >= 1, got {max_distance!r}")
        self.max_distance = max_distance
        self.table = nn.Parameter(torch.zeros(heads, 2 * max_distance + 1))

    def bias(self, nq, nk, device):
        r = self.max_distance
        column = (-_distance(nq, nk, device)).clamp(-r, r) + r  # j - i, clipped
        return self.table[:, column]

    def flash(self, n, grid, device):
        return {"rel_bias": self.table}


def _distance(nq: int, nk: int, device) -> torch.Tensor:
    """(nq, nk) signed offsets i - j."""
    return torch.arange(nq, device=device)[:, None] - torch.arange(nk, device=device)[None, :]


def _masked_softmax(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is not None:
        logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
    return torch.softmax(logits, dim=-1)


@POSITIONS.register
class RoPEALiBi(ALiBi, RoPE):
    """Factored RoPE + ALiBi with harmonic slopes (Li 2024, 'The Nature of
    Mathematical Modeling and Probabilistic Optimization Engineering in
    Generative AI', catalog S67).

    q/k are rotated as in RoPE and the logits get ALiBi's linear distance
    penalty -m_h |i - j|, with the slopes following the harmonic series
    m_h = 1 / (h + 1) instead of ALiBi's geometric 2^(-8h/H). In the softmax
    numerator the two factor: exp(q R_(i-j) k) * exp(-m_h |i - j|), a
    rotary content term times a per-head recency decay; both depend on
    i - j only, so the combination stays relative.

    Fidelity (S67): faithful to the abstract (the full text could not be found).
    Paper: three mechanisms -- the factored RoPE + ALiBi encoding with harmonic
    slopes; PrFlashAttention, a probability distribution over block distances
    deciding which blocks of the causal matrix take part in a round of
    attention; staircase adaptive quantization (SAQ) of the multi-query KV
    cache, older entries at stepwise fewer bits.
    archgram: this position scheme (also served by the flash kernels through
    their ALiBi slopes); ``pattern=pr_flash(block, decay, seed)``
    (``pr_flash.py``); ``score=saq(stair, high, low)`` (``staircase.py``), all
    three combinable in one op (``layout=mqa`` for the paper's setting).
    Differs: the abstract names neither the block-distance distribution nor
    the bit schedule or quantizer; we chose p(d) = (d + 1)^-decay (harmonic at
    decay 1, like the slopes), bits halving per stair (8 -> 4 -> 2) and
    per-token min-max quantization, each documented in its module.
    """

    name = "rope_alibi"
    refs = ("S67",)

    def slopes(self) -> torch.Tensor:  # ALiBi's bias and kernel slopes; RoPE's rotation
        return 1.0 / torch.arange(1, self.heads + 1, dtype=torch.float32)

    def flash(self, n, grid, device):
        """Served, and declared so (a part inherits no kernel): q and k are rotated
        before the kernel, which adds these slopes' ALiBi bias."""
        return ALiBi.flash(self, n, grid, device)


@POSITIONS.register
class URPE(Position):
    """Universal RPE (Luo et al. 2022, 'Your Transformer May Not be as Powerful
    as You Expect', catalog S32).

    Softmax attention is right-stochastic, so a relative bias B inside it
    cannot express every relative pattern. URPE multiplies the probabilities
    elementwise by a learned Toeplitz matrix, Attn = (softmax(QK^T/sqrt(d) + B)
    * C) V with C_ij = c_(i-j) per head, and does *not* renormalise -- breaking
    the stochastic constraint is the point. B is a learned relative bias b_(i-j)
    (the paper pairs C with the model's RPE). One value per offset, 2N-1 per
    head, so the scheme is built for its token count; on images the offsets
    are those of the flattened tokens. C starts at 1 and B at 0 (plain
    attention at init).

    Fidelity (S32): faithful -- Paper: softmax attention is right-stochastic so a
      relative bias cannot express every relative pattern; URPE multiplies the
      probabilities by a learned Toeplitz matrix C (no renormalisation), paired
      with the model's RPE bias; archgram: exactly that, B and C per head; differs:
      nothing (C and B are sized for the op's token count, as in the paper).
    """

    name = "urpe"
    refs = ("S32",)
    reweights = True
    uses_geometry = True

    def __init__(self, heads, head_dim, tokens: int = 1, grid=None):
        super().__init__(heads, head_dim)
        self.tokens = tokens
        self.b = nn.Parameter(torch.zeros(heads, 2 * tokens - 1))
        self.c = nn.Parameter(torch.ones(heads, 2 * tokens - 1))

    def toeplitz(self, values: torch.Tensor, nq: int, nk: int) -> torch.Tensor:
        """(H, nq, nk) with entry (i, j) = values[:, i - j]."""
        return values[:, _distance(nq, nk, values.device) + self.tokens - 1]

    def bias(self, nq, nk, device):
        return self.toeplitz(self.b, nq, nk)

    def reweight(self, weights, mask, grid):
        n = weights.shape[-1]
        return weights * self.toeplitz(self.c, weights.shape[-2], n).to(weights.dtype)


def _offsets(heads: int, grid) -> torch.Tensor:
    """(H, 2) preferred (dx, dy) offsets: a centred kernel of offsets, as many as
    heads -- sqrt(H) x sqrt(H) on grids (ConViT), a row of H on sequences."""
    if grid is None:
        return torch.tensor([[h - (heads - 1) // 2, 0] for h in range(heads)], dtype=torch.float32)
    size = math.ceil(math.sqrt(heads))
    return torch.tensor([[h % size - size // 2, h // size - size // 2] for h in range(heads)], dtype=torch.float32)


@POSITIONS.register
class GPSA(Position):
    """Gated positional self-attention (d'Ascoli et al. 2021, ConViT, catalog S22).

    Each head mixes two attention maps with a learned gate g_h = sigmoid(lambda_h):
    A = (1 - g_h) * content + g_h * softmax(v_h . r_ij), where content is the
    score axis's weights and r_ij = (dx, dy, dx^2 + dy^2) the relative offset of
    key j from query i (dy = 0 on sequences). Locality init sets
    v_h = alpha (2 Dx_h, 2 Dy_h, -1), so the positional logit is
    -alpha |delta - D_h|^2 + const: head h attends around its own offset D_h,
    like one tap of a convolution kernel; lambda_h = 1 starts mostly positional
    and training may escape to content. ConViT renormalises the mix, a no-op
    for softmax content; here the mix is left as is so non-normalised scores
    (sigmoid) keep their meaning.

    Fidelity (S22): faithful -- Paper: GPSA mixes content attention with a
      positional attention softmax(v_pos . r_ij) through a learned per-head gate
      sigmoid(lambda_h), locality-initialised so each head starts as one tap of a
      conv kernel and may escape locality; archgram: that, with ConViT's init;
      differs: the final renormalisation is skipped (a no-op for softmax content).
    """

    name = "gpsa"
    params = ("locality",)
    refs = ("S22",)
    reweights = True
    uses_geometry = True

    def __init__(self, heads, head_dim, locality: float = 1.0, tokens: int = 1, grid=None):
        super().__init__(heads, head_dim)
        self.pos = nn.Linear(3, heads)
        self.gate = nn.Parameter(torch.ones(heads))
        offsets = _offsets(heads, grid)
        with torch.no_grad():
            self.pos.weight.copy_(float(locality) * torch.cat((2 * offsets, -torch.ones(heads, 1)), dim=1))
            self.pos.bias.zero_()
        if grid is None:
            dx = -_distance(tokens, tokens, None).float()
            dy = torch.zeros_like(dx)
        else:
            h, w = grid
            rows = torch.arange(h).repeat_interleave(w)
            cols = torch.arange(w).repeat(h)
            dx = (cols[None, :] - cols[:, None]).float()
            dy = (rows[None, :] - rows[:, None]).float()
        self.register_buffer("rel", torch.stack((dx, dy, dx**2 + dy**2), dim=-1), persistent=False)

    def positional(self, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(H, N, N) positional attention softmax(v_h . r_ij)."""
        return _masked_softmax(self.pos(self.rel).permute(2, 0, 1), mask)

    def reweight(self, weights, mask, grid):
        g = torch.sigmoid(self.gate).view(-1, 1, 1).to(weights.dtype)
        return (1 - g) * weights + g * self.positional(mask).to(weights.dtype)


def _sinusoids(pos: torch.Tensor, size: int) -> torch.Tensor:
    """(n, size) sin/cos features of positions (Vaswani et al.)."""
    freqs = 10000.0 ** (-torch.arange(0, size, 2, dtype=torch.float32, device=pos.device) / size)
    angles = pos.float()[:, None] * freqs[None, :]
    return torch.cat((angles.sin(), angles.cos()), dim=-1)


@POSITIONS.register
class PositionalOnly(Position):
    """Positional attention (Back de Luca et al. 2025, catalog S30): the
    attention weights depend on positions only, A_h = score(P W_Q^h (P W_K^h)^T),
    while values still carry content. P holds fixed sinusoidal encodings
    (rows and columns in halves on a grid), the same at every layer, with
    learned per-head W_Q, W_K, so weights are identical for any two inputs of
    one length. The layout's own q/k projections go unused.

    Fidelity (S30): Paper: positional attention -- weights computed from
      positional encodings alone, the same encodings at every layer, values carry
      the input; its claim is that such transformers learn parallel algorithms
      (sums, minimum, sorting, ...) and extrapolate in value magnitude, because
      the routing cannot depend on the values; archgram: this position scheme
      (any score turns P W_Q (P W_K)^T into weights) and the ``algorithmic``
      task (sum, cumsum, cummin, cummax, sort; test split at larger magnitudes,
      the paper's value-generalisation setting); differs: P is fixed sinusoidal
      (the paper also uses one-hot/learned encodings, a choice of P), and the
      tasks are a subset of the paper's (no median, max-sum subarray, k-hop).
    """

    name = "positional"
    refs = ("S30",)

    def __init__(self, heads, head_dim, **params):
        super().__init__(heads, head_dim)
        self.size = 4 * math.ceil(head_dim / 4)
        self.wq = nn.Parameter(torch.randn(heads, self.size, head_dim) / math.sqrt(self.size))
        self.wk = nn.Parameter(torch.randn(heads, self.size, head_dim) / math.sqrt(self.size))

    def encodings(self, n: int, grid, device) -> torch.Tensor:
        if grid is None:
            return _sinusoids(torch.arange(n, device=device), self.size)
        h, w = grid
        rows = torch.arange(h, device=device).repeat_interleave(w)
        cols = torch.arange(w, device=device).repeat(h)
        half = self.size // 2
        return torch.cat((_sinusoids(rows, half), _sinusoids(cols, half)), dim=-1)

    def rotate(self, q, k, grid):
        p = self.encodings(q.shape[-2], grid, q.device)
        qp = torch.einsum("np,hpd->hnd", p, self.wq).to(q.dtype)
        kp = torch.einsum("np,hpd->hnd", p, self.wk).to(k.dtype)
        return qp.expand_as(q), kp.expand_as(k)
