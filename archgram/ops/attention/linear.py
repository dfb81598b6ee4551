"""Linear (kernelized / recurrent) attention scores: they never form the n x n
weights, so each overrides ``Score.attend`` and refuses, in ``check``, every
pattern but ``full`` and ``causal``.

This module holds their shared base (``LinearCost``, ``KernelScore``) and the
kernelized scores; the math they share, in the three forms that must agree
(parallel, chunked, recurrent), is in linear_forms.py; Flowformer (flow.py) and
agent attention (agent.py) are linear scores of their own.

Causality: a linear score is causal when the op passes ``causal=True`` or any
mask at all (``check`` admits only ``full`` (no mask) and ``causal`` (the tril
mask)). Additive logit biases (ALiBi) cannot be honoured and raise ShapeError.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from archgram.errors import ShapeError
from archgram.ops.attention.linear_forms import EPS, kernel_attention, kernel_attention_parallel, recurrent_step
from archgram.ops.attention.parts import SCORES
from archgram.ops.attention.scores import Score


def linear_flops(n: int, keys: int, qk_dim: int, head_dim: int, heads: int, batch: int) -> int:
    """O(n d^2) cost of kernelized attention: the state phi(K)^T [V, 1] over the keys,
    then phi(Q) times the state for every query (the +1 is the denominator column)."""
    return 2 * batch * heads * (n + keys) * qk_dim * (head_dim + 1)


def refuse_bias(score: Score, bias) -> None:
    if bias is not None:
        raise ShapeError(f"score '{score.name}' is linear: it cannot add a logit bias (use position none or rope)")


def full_or_causal(name: str, pattern) -> None:
    """The patterns a linear score can honour: none (full) or the causal one."""
    if pattern.name not in ("full", "causal"):
        raise ShapeError(f"score '{name}' is linear attention: it serves patterns full and causal, not '{pattern.name}'")


class LinearCost(Score):
    """Scores that never form the n x n matrix: full or causal only, O(n d^2) cost."""

    takes_bias = False

    @classmethod
    def check(cls, pattern, causal, params):
        full_or_causal(cls.name, pattern)

    @classmethod
    def flops(cls, n, head_dim, heads, batch, *, keys=None, qk_dim=None, **params):
        return linear_flops(n, n if keys is None else keys, qk_dim or head_dim, head_dim, heads, batch)


class KernelScore(LinearCost):
    """Base of the kernelized scores: a feature map, an optional per-head decay and
    an optional normalisation; the three forms of linear_forms.py do the rest."""

    normalize = True
    block = 64
    takes_bias = False

    def features(self, q: torch.Tensor, k: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def decay(self, device=None) -> torch.Tensor | None:
        """Per-head decay lambda in (0, 1], shape (H,), or None for none; float64, so
        the math casts it once to the working dtype."""
        return None

    def finish(self, out: torch.Tensor) -> torch.Tensor:
        """Output transform after the weighted sum (per token), identity by default."""
        return out

    def attend(self, q, k, v, mask, bias, scale, causal=False):
        refuse_bias(self, bias)
        fq, fk = self.features(q, k, scale)
        out = kernel_attention(
            fq, fk, v, causal=causal or mask is not None, decay=self.decay(q.device), normalize=self.normalize, block=self.block
        )
        return self.finish(out)

    def parallel(self, q, k, v, scale, causal):
        """The explicit n x n form of this score (tests, visualisation)."""
        fq, fk = self.features(q, k, scale)
        d = self.decay(q.device)
        if not self.normalize:
            return self.finish(kernel_attention_parallel(fq, fk, v, causal=causal, decay=d))
        num = kernel_attention_parallel(fq, fk, v, causal=causal, decay=d)
        den = kernel_attention_parallel(fq, fk, torch.ones_like(v[..., :1]), causal=causal, decay=d)
        return self.finish(num / (den + EPS))

    def step(self, state, q_t, k_t, v_t, scale: float | None = None):
        """Incremental decoding: (out_t, state) for one token (B, H, D) of the causal
        form; start with state None."""
        scale = q_t.shape[-1] ** -0.5 if scale is None else scale
        fq, fk = self.features(q_t[..., None, :], k_t[..., None, :], scale)
        out, state = recurrent_step(state, fq[..., 0, :], fk[..., 0, :], v_t, self.decay(q_t.device), self.normalize)
        return self.finish(out), state


@SCORES.register
class Linear(KernelScore):
    """Kernelized linear attention (Katharopoulos et al. 2020, "Transformers are
    RNNs"): phi = elu + 1, out_i = phi(q_i) sum_j phi(k_j) v_j^T / phi(q_i) sum_j phi(k_j);
    causal via the KV-state recurrence (prefix sums)."""

    name = "linear"

    def features(self, q, k, scale):
        return F.elu(q) + 1, F.elu(k) + 1


@SCORES.register
class NormAware(KernelScore):
    """NaLaFormer norm-aware linear attention (Meng et al. 2025, catalog S21).

    Query q = ||q|| q_hat: the direction is split into same-sign halves raised to a
    norm-dependent power p = power * (0.5 + tanh ||q||), so a larger query norm
    gives a spikier (lower-entropy) distribution, as in softmax; the split
    [relu(x), relu(-x)] keeps the features non-negative while only same-sign
    dimensions interact (opposite directions are inhibited rather than zeroed
    away). Keys use the fixed odd power ``key_power`` (3 in the official code).
    Normalised like ``linear``, so it decodes recurrently.

    Fidelity (S21, checked against the paper and the authors' NALA.py):
      Paper: linear attention loses softmax's query-norm dependence, so the
        kernel splits q into norm and direction and raises the direction to a
        norm-dependent power p(||q||) (larger norm -> spikier, lower-entropy
        weights); a same-sign split keeps features non-negative without dropping
        negative inner products; l1 normalisation as in linear attention.
      archgram: that feature map, p = power * (0.5 + tanh ||q||), keys cubed and
        sign-split as in the official code; parallel, chunked and recurrent forms.
      Differs: nothing of the kernel. The official block's RoPE on the numerator,
        LePE depthwise conv and output gate are other axes/ops here (position=rope,
        a dwconv branch, a gating op), composed in the grammar.
    """

    name = "nala"
    params = ("power", "key_power")
    refs = ("S21",)

    def __init__(self, heads, power: float = 3.0, key_power: float = 3.0):
        super().__init__(heads)
        self.power, self.key_power = float(power), float(key_power)

    def features(self, q, k, scale):
        norm = q.norm(dim=-1, keepdim=True)
        direction = q / (norm + EPS)
        p = self.power * (0.5 + torch.tanh(norm))
        fq = torch.cat((F.relu(direction) ** p, F.relu(-direction) ** p), dim=-1)
        fk = torch.cat((F.relu(k) ** self.key_power, F.relu(-k) ** self.key_power), dim=-1)
        return fq, fk


@SCORES.register
class Hebbian(KernelScore):
    """Pavlovian / Hebbian associative memory (Qiao 2025, catalog S44): each value
    (unconditioned stimulus) is bound to its key (conditioned stimulus) by a
    Hebbian outer product, M = sum_j lambda^(t-j) v_j k_j^T, and a query (test
    stimulus) retrieves M q / sqrt(d). Identity feature map, no normalisation;
    ``decay`` < 1 makes old associations fade.

    Fidelity (S44): the paper's mechanism is exactly this Hebbian outer-product
    memory read by the test stimulus; archgram computes it as linear attention
    (parallel or recurrent); nothing differs (the decay is an option)."""

    name = "hebbian"
    params = ("decay",)
    refs = ("S44",)
    normalize = False

    def __init__(self, heads, decay: float = 1.0):
        super().__init__(heads)
        self.decay_rate = float(decay)

    @classmethod
    def check(cls, pattern, causal, params):
        super().check(pattern, causal, params)
        if not 0 < params.get("decay", 1.0) <= 1:
            raise ShapeError("hebbian decay must lie in (0, 1]")

    def features(self, q, k, scale):
        return q * scale, k

    def decay(self, device=None):
        if self.decay_rate == 1.0:
            return None
        return torch.full((self.heads,), self.decay_rate, device=device, dtype=torch.float64)


@SCORES.register
class Lightning(KernelScore):
    """Lightning Attention (Qin et al. 2024, S04) and its tiling Lightning
    Attention-2 (S48): TransNormerLLM's linear attention O = SRMSNorm([(Q K^T) (.) M] V),
    M[i, j] = lambda_h^(i-j), Q and K through SiLU, computed in blocks of ``block``
    tokens (intra-block masked matmul + inter-block KV recurrence).

    ``decay``: one lambda for every head, or (default) TNL's per-head schedule
    lambda_h = exp(-8 h / H), h = 0..H-1 (head 0 keeps undecayed global memory;
    TNL also scales by the layer depth, which a single op does not know).
    Not causal: decay lambda^|i-j| both ways (a forward and a reversed pass).

    Fidelity (S48). Paper: tile linear attention, conventional masked matmul
    inside a block and the kernel trick (a running KV state) across blocks, so
    cost per token stays constant. archgram: the same split in PyTorch and in the
    Triton kernel (archgram/kernels/linear). Differs: nothing in the mechanism;
    TNL's layer-depth decay scaling is not known to one op.

    Catalog S04, read against the paper. Paper: causal linear attention without the
    cumsum bottleneck, by splitting it into intra-block attention (a masked matmul
    inside each block) and inter-block linear-attention recurrence (a KV state
    carried across blocks), tiled so training speed stays constant over length at
    fixed memory; TNL's form adds SiLU features, per-head decay and SRMSNorm.
    archgram: exactly that split (``chunked_causal`` in PyTorch, the chunked Triton
    kernel in archgram/kernels/linear on CUDA) with TNL's decay schedule and
    SRMSNorm, plus the recurrent step for decoding. Differs: TNL's depth-dependent
    decay scaling is absent (an op does not know its layer index; ``decay`` sets
    one rate by hand); the paper's surrounding TNL block (GLU, gating) is the
    grammar's to build."""

    name = "lightning"
    params = ("block", "decay")
    refs = ("S04", "S48")
    normalize = False

    def __init__(self, heads, block: int = 64, decay: float | None = None):
        super().__init__(heads)
        self.block = int(block)
        self.decay_rate = decay

    @classmethod
    def check(cls, pattern, causal, params):
        super().check(pattern, causal, params)
        if int(params.get("block", 64)) < 1:
            raise ShapeError("lightning block size must be a positive integer")
        decay = params.get("decay")
        if decay is not None and not 0 < decay <= 1:
            raise ShapeError("lightning decay must lie in (0, 1]")

    def features(self, q, k, scale):
        return F.silu(q), F.silu(k)

    def decay(self, device=None):
        if self.decay_rate is not None:
            return torch.full((self.heads,), float(self.decay_rate), device=device, dtype=torch.float64)
        return torch.exp(-8.0 * torch.arange(self.heads, device=device, dtype=torch.float64) / self.heads)

    def finish(self, out):
        # SimpleRMSNorm (no learned gain): the normalisation TNL puts in place of a denominator.
        return out * torch.rsqrt(out.pow(2).mean(-1, keepdim=True) + EPS)
