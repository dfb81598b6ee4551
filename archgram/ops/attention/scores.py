"""Score functions: how attention logits become weights. One class each.

Most scores change only ``weights`` (logits -> weights) or ``logits`` (q, k ->
logits); scores with their own contraction (gated output, triple-wise keys,
per-query metrics) override ``attend``. Scores that hold learned
parameters sized by the head dim override ``build``; scores limited to a
sequence length refuse longer inputs in ``check_shape``.
"""
from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
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


def masked_zero(w: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Weights with masked entries exactly zero (where, not multiply: inf * 0 is NaN)."""
    return w if mask is None else torch.where(mask, w, torch.zeros((), dtype=w.dtype, device=w.device))


def _visible(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Number of keys each query may see, shape (..., Nq, 1), at least 1."""
    if mask is None:
        return torch.full((*logits.shape[:-1], 1), float(logits.shape[-1]), dtype=logits.dtype, device=logits.device)
    return mask.sum(-1, keepdim=True).to(logits.dtype).clamp(min=1)


def _l1_rows(w: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    return w / w.abs().sum(-1, keepdim=True).clamp(min=eps)


def _refuse(name: str, ok: bool, why: str) -> None:
    if not ok:
        raise ShapeError(f"score '{name}': {why}")


# ------------------------------------------------ Quantizable Transformers (S31)
@SCORES.register
class ClippedSoftmax(Score):
    """Clipped softmax (Bondarenko et al. 2023, "Quantizable Transformers", catalog
    S31): clip((zeta - gamma) * softmax(x) + gamma, 0, 1). The stretch gamma < 0
    lets a head reach exact zeros (and zeta > 1 exact ones) with finite logits,
    so heads that want to "do nothing" stop pushing logits (and activations)
    towards outliers. gamma = 0, zeta = 1 is plain softmax. Masked keys get
    softmax 0 -> gamma -> clipped to 0, so masks hold.

    Fidelity (S31): faithful -- Paper: clip((zeta - gamma) softmax + gamma, 0, 1)
      so a head can put exact zeros (a "no-op" head) without pushing logits to
      extremes, which removes activation outliers; archgram: exactly this, with the
      paper's gamma <= 0 <= 1 <= zeta range enforced; differs: nothing.
    """

    name = "clipped_softmax"
    params = ("gamma", "zeta")
    refs = ("S31",)

    def __init__(self, heads: int, gamma: float = -0.025, zeta: float = 1.0):
        super().__init__(heads)
        self.gamma, self.zeta = float(gamma), float(zeta)

    @classmethod
    def check(cls, pattern, causal, params):
        _refuse(cls.name, params.get("gamma", -0.025) <= 0, "needs gamma <= 0 (a stretch below zero)")
        _refuse(cls.name, params.get("zeta", 1.0) >= 1, "needs zeta >= 1")

    def weights(self, logits, mask):
        p = torch.softmax(masked_fill_min(logits, mask), dim=-1)
        return masked_zero(((self.zeta - self.gamma) * p + self.gamma).clamp(0.0, 1.0), mask)

    def flash(self, n, grid, device):
        return {"score": "clipped", "gamma": self.gamma, "zeta": self.zeta}


class HeadGate(nn.Module):
    """Gated attention's gate: sigmoid(W_g x_i + b_g), one scalar per token and
    head, computed from the layer input x (B, N, C) -> (B, H, N, 1)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.proj = nn.Linear(dim, heads)
        nn.init.zeros_(self.proj.weight)  # starts half open for every token
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.proj(x)).transpose(1, 2)[..., None]


@SCORES.register
class GatedSoftmax(Score):
    """Gated attention (Bondarenko et al. 2023, catalog S31): softmax attention whose
    per-head output is scaled by a learned gate sigmoid(W_g x_i + b_g) of the layer
    input, one scalar per token and head, so a head can switch itself off for a
    token without extreme logits. The op builds the gate (``input_gate``) and
    multiplies it into the head outputs; the weights are plain softmax, so the
    score also decodes token by token. The gate starts half open (W_g = 0, b_g = 0).

    Fidelity (S31, gated attention): faithful -- Paper: out_h = sigmoid(G_h(x)) *
    softmax attention_h, G a small map of the input (a linear layer per head);
    archgram: the same, G = one Linear(C, H); differs: nothing."""

    name = "gated_softmax"
    refs = ("S31",)

    @classmethod
    def input_gate(cls, heads: int, dim: int) -> nn.Module:
        return HeadGate(dim, heads)

    def weights(self, logits, mask):
        return masked_zero(torch.softmax(masked_fill_min(logits, mask), dim=-1), mask)


# ------------------------------------------------------------ logit soft-capping
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
        _refuse(cls.name, params.get("cap", 50.0) > 0, "needs a positive cap")

    def weights(self, logits, mask):
        capped = self.cap * torch.tanh(logits / self.cap)
        return masked_zero(torch.softmax(masked_fill_min(capped, mask), dim=-1), mask)


# ------------------------------------------- Softplus attention + re-weighting (S38)

    def flash(self, n, grid, device):
        return {"score": "softcap", "cap": self.cap}


@SCORES.register
class SoftplusReweight(Score):
    """Length-scaled softplus attention with re-weighting (Gao & Spratling 2025,
    "Softplus Attention with Re-weighting Boosts Length Extrapolation", catalog
    S38). Softmax = positivity map + l1 normalisation; the paper keeps the l1
    step, replaces exp by softplus and scales the logits by log N_i (N_i the
    keys query i can see: an entropy-invariance factor, so longer contexts do
    not flatten the weights): a = l1(softplus(log N_i * s_ij)). The second stage
    sharpens: w = l1(a ** power), amplifying strong weights and shrinking weak
    ones; power = 1 is the first stage alone (LSSA). Masked keys are zero before
    both normalisations and do not count in N_i.

    Fidelity (S38): Paper: softmax = positivity map + l1 normalisation; replace
      exp by softplus with an entropy-invariance scale log N_i (LSSA), then a
      re-weighting stage that sharpens (amplifies large, shrinks small weights)
      for length extrapolation; archgram: both stages, N_i the visible keys;
      differs: the sharpening is the power form l1(a^p) -- the stored sources
      describe a power-based re-weighting but its exact formula (e.g. any offset
      before the power) could not be read there, so p is a parameter.
    """

    name = "softplus_reweight"
    params = ("power",)
    refs = ("S38",)

    def __init__(self, heads: int, power: float = 2.0):
        super().__init__(heads)
        self.power = float(power)

    @classmethod
    def check(cls, pattern, causal, params):
        _refuse(cls.name, params.get("power", 2.0) >= 1, "needs power >= 1 (below 1 flattens and has infinite gradients at 0)")

    def weights(self, logits, mask):
        a = _l1_rows(masked_zero(F.softplus(torch.log(_visible(logits, mask)) * logits), mask))
        if self.power != 1.0:
            a = _l1_rows(a.pow(self.power))
        return a


# ------------------------------------------------ Kolmogorov-Arnold attention (S05)

    def flash(self, n, grid, device):
        return {"score": "softplus", "power": self.power}


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
        _refuse(cls.name, isinstance(grid, int) and grid >= 1, f"grid must be a positive integer, got {grid!r}")
        _refuse(cls.name, params.get("base", "exp") in cls.BASES, f"base must be one of {', '.join(cls.BASES)}")

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
        return _l1_rows(masked_zero(self.function(x), mask))


# ------------------------------------------------- Deconstructing attention (S09)
class _LengthLimited(Score):
    """Scores whose cost or parameters grow with the token count: refused above ``max_len``."""

    default_max_len = 64
    too_long = "{n} tokens exceed max_len {m}"

    @classmethod
    def check(cls, pattern, causal, params):
        m = params.get("max_len", cls.default_max_len)
        _refuse(cls.name, isinstance(m, int) and m >= 1, f"max_len must be a positive integer, got {m!r}")

    @classmethod
    def check_shape(cls, n, head_dim, params):
        m = params.get("max_len", cls.default_max_len)
        _refuse(cls.name, n <= m, cls.too_long.format(m=m, n=n))


@SCORES.register
class FixedMixing(_LengthLimited):
    """Input-independent token mixing (Xue et al. 2025, "Deconstructing Attention",
    catalog S09): the sequence-dependence relaxation. Each head learns an
    ``max_len`` x ``max_len`` logit table; weights = softmax(T_h[:N, :N] + bias)
    over the visible keys, the same for every input. The layout's q and k
    projections are unused (only v is mixed). Starts as a uniform average
    (zero logits: under a causal mask, a running mean). Inputs longer than
    ``max_len`` are refused at shape time.

    Catalog S09, read against the paper. Paper: attention bundles four principles
    (mixing across positions, sequence-dependent weights, the dot-product +
    softmax form, queries/keys tied to the current hidden state); controlled
    variants relax each, uniformly or in hybrid stacks that keep standard
    attention in some layers. archgram: input-independent mixing (this score),
    a non-dot-product similarity (``l2``), queries/keys from an earlier layer
    (the ``earlier_qk_attention`` merge op) and hybrid stacks (``attention.pcfg``
    mixes scores per layer and offers the earlier-layer hybrid). Differs: the
    paper's static-embedding variant takes queries/keys from the input
    embeddings at every layer; a tree grammar reaches one layer back (the
    branch point), so only the layer after a split sees an earlier state."""

    name = "fixed_mixing"
    params = ("max_len",)
    refs = ("S09",)

    def __init__(self, heads: int, max_len: int = 64):
        super().__init__(heads)
        self.table = nn.Parameter(torch.zeros(heads, max_len, max_len))

    default_max_len = 64
    too_long = "learned {m} x {m} mixing weights cannot serve {n} tokens (raise max_len)"

    def logits(self, q, k, scale):
        n, m = q.shape[-2], k.shape[-2]
        return self.table[:, :n, :m].expand(q.shape[0], -1, -1, -1)

    def weights(self, logits, mask):
        return masked_zero(torch.softmax(masked_fill_min(logits, mask), dim=-1), mask)


@SCORES.register
class L2Distance(Score):
    """Non-dot-product similarity (Xue et al. 2025, catalog S09): logits are negative
    squared Euclidean distances, -scale * ||q_i - k_j||^2, then softmax. Unlike
    the dot product, a token is always most similar to an identical key."""

    name = "l2"
    refs = ("S09",)

    def logits(self, q, k, scale):
        qq = q.pow(2).sum(-1, keepdim=True)
        kk = k.pow(2).sum(-1, keepdim=True).transpose(-1, -2)
        return -(qq + kk - 2 * torch.matmul(q, k.transpose(-1, -2))).clamp(min=0) * scale

    def weights(self, logits, mask):
        return masked_zero(torch.softmax(masked_fill_min(logits, mask), dim=-1), mask)


# -------------------------------------------- Reducing the Transformer (S45)
@SCORES.register
class Symmetric(Score):
    """Symmetric similarity (Bermeitinger et al. 2024, "Reducing the Transformer
    Architecture to a Minimum", catalog S45): logits_ij = scale * q_i W_h q_j^T
    with W_h symmetric, stored as its d(d+1)/2 upper triangle (half the
    parameters of a collapsed W_Q W_K^T). Queries stand on both sides, so the
    logit matrix is symmetric and the layout's k projection is unused. W starts
    as the identity (logits q_i . q_j).

    Paper's defining mechanism: drop the MLP, collapse W_Q W_K^T into one matrix
    (optionally symmetric), drop W_V and W_O, with little loss. archgram: this
    score plus ``layout=minimal`` (no W_Q/W_K/W_V/W_O) is exactly that layer; an
    MLP-free block is a grammar without the MLP. What differs: nothing; with
    another layout the score sits on projected queries (a superset)."""

    name = "symmetric"
    refs = ("S45",)

    def __init__(self, heads: int, head_dim: int):
        super().__init__(heads)
        self.head_dim = head_dim
        rows, cols = torch.triu_indices(head_dim, head_dim)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.upper = nn.Parameter((rows == cols).to(torch.get_default_dtype()).repeat(heads, 1))

    takes_head_dim = True

    def matrix(self) -> torch.Tensor:
        """(H, d, d) symmetric W."""
        u = self.upper.new_zeros(self.heads, self.head_dim, self.head_dim)
        u[:, self.rows, self.cols] = self.upper
        return u + u.triu(1).transpose(-1, -2)

    def logits(self, q, k, scale):
        return torch.matmul(torch.matmul(q, self.matrix()[None]), q.transpose(-1, -2)) * scale

    def weights(self, logits, mask):
        return masked_zero(torch.softmax(masked_fill_min(logits, mask), dim=-1), mask)


# ------------------------------------------- PLDR-LLM power-law graph attention (S66)
def _iswiglu(x: torch.Tensor) -> torch.Tensor:
    """SwiGLU with identity weights: x * silu(x) >= 0 (makes the metric positive)."""
    return x * F.silu(x)


class _ResGLU(nn.Module):
    """Residual unit of the metric learner: LayerNorm(GLU(A) + A) on the last axis."""

    def __init__(self, dim: int):
        super().__init__()
        self.gate, self.up, self.down = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return self.norm(self.down(F.silu(self.gate(a)) * self.up(a)) + a)


@SCORES.register
class PowerLaw(Score):
    """Power-law graph attention (Gokden 2024, PLDR-LLM, catalog S66). Per head, a
    d x d metric A = LayerNorm(Q^T Q) is refined by ``layers`` residual GLU units;
    A_LM = iSwiGLU(W A + b) + 1e-9 > 0; the energy-curvature tensor
    G = a (A_LM ** P) + b_a, with P a learned elementwise power-law exponent;
    logits_ij = scale * q_i G k_j^T, then softmax. G = I recovers dot-product
    attention (the paper's special case).

    The paper sums Q^T Q over the whole sequence, which leaks future tokens into
    a causal model; when the mask never lets a query see a later key (causal),
    each query i uses the metric of its prefix (sum over t <= i), so the op
    stays causal at O(N d^2) memory per head. Other patterns keep the
    whole-sequence metric (the paper has no patterns), so a window limits whose
    values are mixed, not which tokens shape G. Initialised as in the authors'
    code: W, a, P Xavier-normal; b, b_a zero.

    Paper's defining mechanism (the S66 paper, "PLDR-LLMs learn a
    generalizable tensor operator ..."): power-law graph attention whose deep
    learner turns the query metric into the energy-curvature tensor G_LM, and
    the finding that a trained G_LM is (nearly) input-invariant, so a G-cache
    holding the once-inferred G_LM replaces that deep network at inference;
    G_LM = I is scaled dot-product attention.
    What archgram does: the equations above; ``g_cache(True)`` arms the
    G-cache: the next call stores the G of its first sample (whole-sequence
    metric), later calls use it and skip the metric and its learner until
    ``g_cache(False)``.
    What differs: the per-prefix metric under a causal mask (the paper's
    whole-sequence Q^T Q would leak the future); the cache holds one G per
    head, filled from the first sample of the arming call, with no KV-cache
    companion (this score has no token-by-token decode)."""

    name = "power_law"
    params = ("layers",)
    refs = ("S66",)

    def __init__(self, heads: int, head_dim: int, layers: int = 1):
        super().__init__(heads)
        shape = (heads, head_dim, head_dim)
        self.norm = nn.LayerNorm(head_dim)
        self.learner = nn.ModuleList(_ResGLU(head_dim) for _ in range(layers))
        self.weight = nn.Parameter(nn.init.xavier_normal_(torch.empty(shape)))
        self.bias = nn.Parameter(torch.zeros(shape))
        self.power = nn.Parameter(nn.init.xavier_normal_(torch.empty(shape)))
        self.coupling = nn.Parameter(nn.init.xavier_normal_(torch.empty(shape)))
        self.coupling_bias = nn.Parameter(torch.zeros(shape))

    takes_head_dim = True

    @classmethod
    def check(cls, pattern, causal, params):
        layers = params.get("layers", 1)
        _refuse(cls.name, isinstance(layers, int) and layers >= 0, f"layers must be a non-negative integer, got {layers!r}")

    #: G-cache: None (off), "fill" (armed: the next call stores its G) or the cached (1, H, d, d) G
    _g_cache: torch.Tensor | str | None = None

    def g_cache(self, on: bool = True) -> None:
        """Arm (the next call fills it) or clear the G-cache."""
        self._g_cache = "fill" if on else None

    def curvature(self, q: torch.Tensor, prefix: bool) -> torch.Tensor:
        """G: (B, H, d, d), or (B, H, N, d, d) from each query's prefix."""
        if prefix:
            a = torch.cumsum(q[..., :, None] * q[..., None, :], dim=-3)  # (B, H, N, d, d)
        else:
            a = torch.matmul(q.transpose(-1, -2), q)
        a = self.norm(a)
        for unit in self.learner:
            a = unit(a)
        extra = (slice(None),) + (None,) * (a.dim() - 4)  # per-head params over (N,) if prefix
        aw = _iswiglu(torch.matmul(self.weight[extra], a) + self.bias[extra]) + 1e-9
        return torch.matmul(self.coupling[extra], aw.pow(self.power[extra])) + self.coupling_bias[extra]

    def attend(self, q, k, v, mask, bias, scale, causal=False):
        if isinstance(self._g_cache, torch.Tensor):
            g, prefix = self._g_cache, False
        else:
            prefix = mask is not None and not bool(mask.triu(1).any())
            g = self.curvature(q, prefix)
            if self._g_cache == "fill":
                self._g_cache = (g[:1, :, -1] if prefix else g[:1]).detach()
        if prefix:
            logits = torch.einsum("bhid,bhide,bhje->bhij", q, g, k) * scale
        else:
            logits = torch.matmul(torch.matmul(q, g), k.transpose(-1, -2)) * scale
        if bias is not None:
            logits = logits + bias
        return torch.matmul(self.weights(logits, mask), v)

    def weights(self, logits, mask):
        return masked_zero(torch.softmax(masked_fill_min(logits, mask), dim=-1), mask)


# --------------------------------------------- third-order (Kronecker) attention (S63)
@SCORES.register
class TripleWise(_LengthLimited):
    """Third-order attention (Alman & Song 2024, "How to Capture Higher-order
    Correlations? Generalizing Matrix Softmax Attention to Kronecker
    Computation", catalog S63): each query attends to pairs of keys,
    out = D^-1 exp(Q (K1 (/) K2)^T) (V1 (/) V2), (/) the column-wise Kronecker
    product, i.e. logit_i(j, l) = scale * sum_c q_ic k1_jc k2_lc and value
    v1_j * v2_l (elementwise). K1, V1 are the layout's k, v; K2 = K W_k, V2 = V W_v
    with per-head d x d maps starting at the identity. A pair is visible only if
    both keys are; position biases add for both keys. This is the naive O(N^3)
    form (the paper's almost-linear algorithm for bounded entries is a
    polynomial-method approximation, not implemented), so inputs longer than
    ``max_len`` are refused at shape time.

    Paper's defining mechanism: tensor (third-order) attention, a softmax over
    pairs of keys with logit <q_i, k1_j * k2_l> and value v1_j * v2_l written
    with column-wise Kronecker products, plus the complexity result: with
    entries bounded by o(cbrt(log n)) an almost-linear-time approximation
    exists, above that bound no sub-cubic one does (under SETH).
    What archgram does: the exact pairwise softmax above, K2/V2 as learned maps
    of the layout's K/V, masks and position biases applied to both keys.
    What differs: the bounded-entry almost-linear algorithm is absent; it is a
    polynomial-method construction whose degree grows with log n and whose
    constants make it an existence proof rather than a usable kernel, so the
    op is the cubic form on short sequences (max_len)."""

    name = "triplewise"
    params = ("max_len",)
    refs = ("S63",)

    def __init__(self, heads: int, head_dim: int, max_len: int = 32):
        super().__init__(heads)
        eye = torch.eye(head_dim).repeat(heads, 1, 1)
        self.key_map = nn.Parameter(eye.clone())
        self.value_map = nn.Parameter(eye.clone())

    takes_head_dim = True

    default_max_len = 32
    too_long = "the naive O(N^3) form is limited to {m} tokens, got {n} (raise max_len)"

    def attend(self, q, k, v, mask, bias, scale, causal=False):
        k2, v2 = torch.matmul(k, self.key_map), torch.matmul(v, self.value_map)
        logits = torch.einsum("bhic,bhjc,bhlc->bhijl", q, k, k2) * scale
        if bias is not None:
            logits = logits + bias[..., :, :, None] + bias[..., :, None, :]
        pair = None if mask is None else mask[..., :, :, None] & mask[..., :, None, :]
        b, h, n, m, _ = logits.shape
        flat = masked_fill_min(logits, pair).reshape(b, h, n, m * m)
        w = masked_zero(torch.softmax(flat, dim=-1).view(b, h, n, m, m), pair)
        return torch.einsum("bhijl,bhjc,bhlc->bhic", w, v, v2)
