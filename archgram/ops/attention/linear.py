"""Linear (kernelized / recurrent) attention scores: they never form the n x n
weights, so each overrides ``Score.attend`` and refuses, in ``check``, every
pattern but ``full`` and ``causal``.

The math lives in small pure functions so it can serve as the oracle of the
chunked Triton kernels (archgram/kernels/), in three forms that must agree:

  parallel   ``kernel_attention_parallel``: the explicit (masked, decayed) n x n
             matrix -- quadratic, only for tests and short sequences;
  chunked    ``chunked_causal``: Lightning Attention-2 tiling -- intra-block
             masked matmul plus an inter-block recurrence of the KV state;
  recurrent  ``recurrent_step``: one token at a time (``Score.step``), the form
             incremental decoding uses.

Causality: a linear score is causal when the op passes ``causal=True`` or any
mask at all (``check`` admits only ``full`` (no mask) and ``causal`` (the tril
mask)). Additive logit biases (ALiBi) cannot be honoured and raise ShapeError.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from archgram.errors import ShapeError
from archgram.ops.attention.parts import SCORES
from archgram.ops.attention.scores import Score

EPS = 1e-6


# --------------------------------------------------------------------------- math


def _log_decay(decay: torch.Tensor | None, heads: int, like: torch.Tensor) -> torch.Tensor:
    """log(lambda) per head, shaped (H, 1, 1); zeros when there is no decay."""
    if decay is None:
        return like.new_zeros(heads, 1, 1)
    return torch.log(decay.to(like)).view(heads, 1, 1)


def decay_matrix(n: int, decay: torch.Tensor | None, heads: int, like: torch.Tensor) -> torch.Tensor:
    """(H, n, n) causal decay mask D[i, j] = lambda^(i - j) for i >= j, else 0."""
    i = torch.arange(n, device=like.device)
    diff = (i[:, None] - i[None, :]).to(like)
    d = torch.exp(_log_decay(decay, heads, like) * diff.clamp(min=0))
    return d * (diff >= 0)


def kernel_attention_parallel(fq, fk, v, *, causal: bool, decay=None) -> torch.Tensor:
    """Parallel form: (fq fk^T (.) D) v with D the causal decay mask (or
    lambda^|i-j| both ways when not causal). Quadratic in n."""
    h, n = fq.shape[1], fq.shape[-2]
    scores = fq @ fk.transpose(-1, -2)
    d = decay_matrix(n, decay, h, fq)
    if not causal:
        d = d + d.transpose(-1, -2) - torch.eye(n, device=fq.device, dtype=fq.dtype)
    return (scores * d) @ v


def chunked_causal(fq, fk, v, block: int, decay=None) -> torch.Tensor:
    """Causal (decayed) linear attention, tiled as in Lightning Attention-2 (S48).

    Block t (positions tB .. tB+b-1, local index i) gets
      intra = [(Q_t K_t^T) (.) M] V_t,   M[i, j] = lambda^(i-j) for i >= j
      inter = diag(lambda^(i+1)) Q_t KV,
    then the state moves on: KV <- lambda^b KV + (diag(lambda^(b-1-j)) K_t)^T V_t.
    A short last block (n not divisible by ``block``) is handled by its own size."""
    b, h, n, dk = fq.shape
    log_lam = _log_decay(decay, h, fq)
    state = fq.new_zeros(b, h, dk, v.shape[-1])
    outs = []
    for start in range(0, n, block):
        qb, kb, vb = fq[..., start : start + block, :], fk[..., start : start + block, :], v[..., start : start + block, :]
        size = qb.shape[-2]
        idx = torch.arange(size, device=fq.device).to(fq.dtype)
        mask = decay_matrix(size, decay, h, fq)  # (H, b, b)
        intra = ((qb @ kb.transpose(-1, -2)) * mask) @ vb
        inter = (qb * torch.exp(log_lam * (idx + 1)[:, None])) @ state
        outs.append(intra + inter)
        k_weight = torch.exp(log_lam * (size - 1 - idx)[:, None])  # (H, b, 1)
        state = torch.exp(log_lam * size) * state + (kb * k_weight).transpose(-1, -2) @ vb
    return torch.cat(outs, dim=-2)


def causal_fast(fq, fk, v, block: int, decay=None) -> torch.Tensor:
    """``chunked_causal`` through the chunked Triton kernel where it applies (CUDA,
    archgram/kernels/linear; it has a backward), else the PyTorch tiling above."""
    from archgram.kernels.linear import dispatch

    out = dispatch.causal(fq, fk, v, decay)
    return chunked_causal(fq, fk, v, block, decay) if out is None else out


def bidirectional(fq, fk, v, block: int, decay=None) -> torch.Tensor:
    """Non-causal decayed form sum_j lambda^|i-j| (q_i . k_j) v_j: a causal pass,
    an anti-causal pass (the causal pass on the reversed sequence), minus the
    diagonal both counted."""
    if decay is None:
        return fq @ (fk.transpose(-1, -2) @ v)
    forward = causal_fast(fq, fk, v, block, decay)
    backward = causal_fast(fq.flip(-2), fk.flip(-2), v.flip(-2), block, decay).flip(-2)
    return forward + backward - (fq * fk).sum(-1, keepdim=True) * v


def kernel_attention(fq, fk, v, *, causal: bool, decay=None, normalize: bool = True, block: int = 64) -> torch.Tensor:
    """Linear attention on feature-mapped queries/keys (B, H, N, F).

    normalize: out_i = sum_j w_ij v_j / sum_j w_ij (the denominator rides along as
    an extra all-ones value column, so every form computes it the same way)."""
    if normalize:
        v = torch.cat((v, torch.ones_like(v[..., :1])), dim=-1)
    out = causal_fast(fq, fk, v, block, decay) if causal else bidirectional(fq, fk, v, block, decay)
    if normalize:
        out = out[..., :-1] / (out[..., -1:] + EPS)
    return out


def recurrent_step(state, fq_t, fk_t, v_t, decay=None, normalize: bool = True):
    """One token of the recurrence S_t = lambda S_{t-1} + k_t v_t^T, o_t = q_t S_t.
    Shapes: fq_t, fk_t (B, H, F), v_t (B, H, Dv); state (B, H, F, Dv[+1]) or None."""
    if normalize:
        v_t = torch.cat((v_t, torch.ones_like(v_t[..., :1])), dim=-1)
    from archgram.kernels.linear import dispatch

    fast = dispatch.step(state, fq_t, fk_t, v_t, decay)  # the fused Triton step on CUDA, else None
    if fast is not None:
        out, state = fast
    else:
        update = fk_t[..., :, None] * v_t[..., None, :]
        if state is None:
            state = torch.zeros_like(update)
        if decay is not None:
            state = decay.to(state).view(1, -1, 1, 1) * state
        state = state + update
        out = (fq_t[..., None, :] @ state)[..., 0, :]
    if normalize:
        out = out[..., :-1] / (out[..., -1:] + EPS)
    return out, state


# --------------------------------------------------------------------------- scores


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


class _LinearCost(Score):
    """Scores that never form the n x n matrix: full or causal only, O(n d^2) cost."""

    takes_bias = False

    @classmethod
    def check(cls, pattern, causal, params):
        full_or_causal(cls.name, pattern)

    @classmethod
    def flops(cls, n, head_dim, heads, batch, *, keys=None, qk_dim=None, **params):
        return linear_flops(n, n if keys is None else keys, qk_dim or head_dim, head_dim, heads, batch)


class KernelScore(_LinearCost):
    """Base of the kernelized scores: a feature map, an optional per-head decay and
    an optional normalisation; the three forms above do the rest."""

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


# --------------------------------------------------------------------------- Flowformer


def flow_attention(q, k, v) -> torch.Tensor:
    """Flow-Attention (Wu et al. 2022, S34), non-causal, on sigmoid features:
      incoming flow of sink i   I_i = phi(q_i) . sum_j phi(k_j)
      outgoing flow of source j O_j = phi(k_j) . sum_i phi(q_i)
      conserved  I^_i = phi(q_i) . sum_j phi(k_j) / O_j,  O^_j = phi(k_j) . sum_i phi(q_i) / I_i
      competition  V^ = n softmax_j(O^) v,   allocation  out_i = sigmoid(I^_i) phi(q_i) (phi(K)^T V^) / I_i.
    eps and the clamp of O^ to [-1, 1] follow the official code."""
    q, k = torch.sigmoid(q), torch.sigmoid(k)
    n = k.shape[-2]
    incoming = 1.0 / ((q + EPS) @ (k.sum(-2) + EPS)[..., None])[..., 0]  # 1 / I
    outgoing = 1.0 / ((k + EPS) @ (q.sum(-2) + EPS)[..., None])[..., 0]  # 1 / O
    sink = ((q + EPS) @ ((k * outgoing[..., None]).sum(-2) + EPS)[..., None])[..., 0]
    source = ((k + EPS) @ ((q * incoming[..., None]).sum(-2) + EPS)[..., None])[..., 0].clamp(-1.0, 1.0)
    allocation = torch.sigmoid(sink * (q.shape[-2] / n))
    competition = torch.softmax(source, dim=-1) * n
    kv = k.transpose(-1, -2) @ (v * competition[..., None])
    return (q * incoming[..., None]) @ kv * allocation[..., None]


def _flow_causal_terms(q, k, qsum, ksum, count):
    """Per-token flows of the causal form given the running sums up to this token."""
    incoming = count / ((q + EPS) * (ksum + EPS)).sum(-1)
    outgoing = count / ((k + EPS) * (qsum + EPS)).sum(-1)
    return incoming, outgoing


def flow_attention_causal(q, k, v) -> torch.Tensor:
    """Causal Flow-Attention: every sum becomes a prefix sum and each flow is
    rescaled by the number of tokens it saw (t + 1), as in the official code;
    competition is a running softmax, so past weights never change."""
    q, k = torch.sigmoid(q), torch.sigmoid(k)
    count = torch.arange(1, q.shape[-2] + 1, device=q.device, dtype=q.dtype)
    incoming, outgoing = _flow_causal_terms(q, k, q.cumsum(-2), k.cumsum(-2), count)
    sink = ((q + EPS) * ((k * outgoing[..., None]).cumsum(-2) + EPS)).sum(-1) / count
    source = (((k + EPS) * ((q * incoming[..., None]).cumsum(-2) + EPS)).sum(-1) / count).clamp(-1.0, 1.0)
    allocation = torch.sigmoid(sink)
    competition = torch.exp(source) / torch.exp(source).cumsum(-1) * count
    kv = (k[..., :, None] * (v * competition[..., None])[..., None, :]).cumsum(-3)  # (B, H, N, D, Dv)
    out = ((q * (incoming / count)[..., None])[..., None, :] @ kv)[..., 0, :]
    return out * allocation[..., None]


@SCORES.register
class Flow(_LinearCost):
    """Flowformer flow-conserving linear attention (catalog S34): source
    competition (softmax over conserved outgoing flow reweights values) and sink
    allocation (sigmoid of conserved incoming flow gates results). Causal form
    from the official code; it decodes recurrently (``step``).

    Fidelity (S34):
      Paper: attention as a flow network: sigmoid features, incoming flow of each
        sink and outgoing flow of each source, conserved flows computed against
        each other, source competition (softmax over conserved outgoing flow,
        scaled by n) reweights values and sink allocation (sigmoid of conserved
        incoming flow) gates outputs; linear cost; causal form with prefix sums.
      archgram: those equations, the causal variant and an O(1)-state decoder.
      Differs: nothing of the mechanism (eps and the clamp of O^ follow the
        official code).
    """

    name = "flow"
    refs = ("S34",)
    takes_bias = False


    def attend(self, q, k, v, mask, bias, scale, causal=False):
        refuse_bias(self, bias)
        return flow_attention_causal(q, k, v) if causal or mask is not None else flow_attention(q, k, v)

    def step(self, state, q_t, k_t, v_t, scale: float | None = None):
        """One token of the causal form; the state holds the running sums."""
        q, k = torch.sigmoid(q_t), torch.sigmoid(k_t)
        if state is None:
            zeros = torch.zeros_like(q)
            state = {"t": 0, "qsum": zeros, "ksum": zeros, "kout": zeros, "qin": zeros,
                     "expsum": zeros[..., 0], "kv": q.new_zeros(*q.shape, v_t.shape[-1])}
        s = dict(state)
        s["t"] += 1
        count = float(s["t"])
        s["qsum"], s["ksum"] = s["qsum"] + q, s["ksum"] + k
        incoming, outgoing = _flow_causal_terms(q, k, s["qsum"], s["ksum"], count)
        s["kout"] = s["kout"] + k * outgoing[..., None]
        s["qin"] = s["qin"] + q * incoming[..., None]
        sink = ((q + EPS) * (s["kout"] + EPS)).sum(-1) / count
        source = (((k + EPS) * (s["qin"] + EPS)).sum(-1) / count).clamp(-1.0, 1.0)
        s["expsum"] = s["expsum"] + torch.exp(source)
        competition = torch.exp(source) / s["expsum"] * count
        s["kv"] = s["kv"] + k[..., :, None] * (v_t * competition[..., None])[..., None, :]
        out = ((q * (incoming / count)[..., None])[..., None, :] @ s["kv"])[..., 0, :]
        return out * torch.sigmoid(sink)[..., None], s


# --------------------------------------------------------------------------- Agent attention


@SCORES.register
class Agent(Score):
    """Agent attention (Han et al. 2024, catalog S40): ``agents`` agent tokens A,
    average-pooled from the queries along the token axis, first aggregate
    (V_A = softmax(A K^T s + B1) V) and then broadcast
    (out = softmax(Q A^T s + B2) V_A), cost O(n a d); plus DWC(V), a depthwise
    convolution of the values (kernel ``dwc``, over the image grid or the
    sequence; 0 drops it) that restores the feature diversity the few agents
    lose. B1 (agents x keys) and B2 (queries x agents) are the learned agent
    biases, per head, zero at init. Non-causal only (the agents summarise every
    query), so it has no incremental decoding.

    Fidelity (S40): faithful -- Paper: the agent attention module
    O = softmax(Q A^T + B2) softmax(A K^T + B1) V + DWC(V) with pooled agent
    tokens and position-aware agent biases; archgram: that module, the biases
    sized for the op's token count (the op hands over its geometry); differs:
    the paper builds each bias from row, column and block components to save
    parameters on large images; here each is one full (agents x tokens) table,
    the same family of biases at a higher parameter cost."""

    name = "agent"
    params = ("agents", "dwc")
    refs = ("S40",)
    takes_bias = False
    takes_head_dim = True
    #: The op passes ``tokens`` and ``grid`` (the biases and DWC follow the input's geometry).
    uses_geometry = True

    @classmethod
    def flops(cls, n, head_dim, heads, batch, *, keys=None, qk_dim=None, agents=16, dwc=3, **params):
        """Two a-query softmax attentions (agents over the keys, queries over the
        agents) plus the depthwise conv of the values."""
        keys = n if keys is None else keys
        attention = 2 * batch * heads * int(agents) * (keys + n) * ((qk_dim or head_dim) + head_dim)
        return attention + 2 * batch * heads * head_dim * keys * int(dwc) ** 2

    def __init__(self, heads, head_dim, agents: int = 16, dwc: int = 3, tokens: int | None = None, grid=None,
                 value_dim: int | None = None):
        super().__init__(heads)
        self.agents, self.grid = int(agents), grid
        #: agent biases, built when the op gives its token count
        self.agent_bias = nn.Parameter(torch.zeros(heads, self.agents, tokens)) if tokens else None
        self.query_bias = nn.Parameter(torch.zeros(heads, tokens, self.agents)) if tokens else None
        channels = heads * (value_dim or head_dim)  # the values' head dim (a layout may widen q/k, e.g. random_qk)
        conv = nn.Conv2d if grid is not None else nn.Conv1d
        self.dwc = conv(channels, channels, int(dwc), padding=int(dwc) // 2, groups=channels) if dwc else None

    @classmethod
    def check(cls, pattern, causal, params):
        if causal or pattern.name != "full":
            raise ShapeError("score 'agent' pools agents from all queries: it serves only the full, non-causal pattern")
        if int(params.get("agents", 16)) < 1:
            raise ShapeError("agent attention needs at least one agent token")
        dwc = params.get("dwc", 3)
        if isinstance(dwc, bool) or not isinstance(dwc, int) or dwc < 0 or (dwc and dwc % 2 == 0):
            raise ShapeError(f"agent attention: dwc is 0 (off) or an odd kernel size, got {dwc!r}")

    def agent_tokens(self, q: torch.Tensor) -> torch.Tensor:
        b, h, n, d = q.shape
        pooled = F.adaptive_avg_pool1d(q.reshape(b * h, n, d).transpose(1, 2), self.agents)
        return pooled.transpose(1, 2).reshape(b, h, self.agents, d)

    def value_conv(self, v: torch.Tensor) -> torch.Tensor:
        """DWC(V): v (B, H, N, d) convolved depthwise over the grid (or the sequence)."""
        b, h, n, d = v.shape
        x = v.permute(0, 1, 3, 2).reshape(b, h * d, n)
        if self.grid is not None:
            x = x.view(b, h * d, *self.grid)
        return self.dwc(x).reshape(b, h, d, n).permute(0, 1, 3, 2)

    def attend(self, q, k, v, mask, bias, scale, causal=False):
        refuse_bias(self, bias)
        if causal or mask is not None:
            raise ShapeError("score 'agent' cannot be causal")
        a = self.agent_tokens(q)
        gather, broadcast = a @ k.transpose(-1, -2) * scale, q @ a.transpose(-1, -2) * scale
        if self.agent_bias is not None:
            gather, broadcast = gather + self.agent_bias.to(gather.dtype), broadcast + self.query_bias.to(broadcast.dtype)
        out = torch.softmax(broadcast, dim=-1) @ (torch.softmax(gather, dim=-1) @ v)
        return out if self.dwc is None else out + self.value_conv(v)


__all__ = [
    "Agent",
    "Flow",
    "Hebbian",
    "KernelScore",
    "Lightning",
    "Linear",
    "NormAware",
    "bidirectional",
    "chunked_causal",
    "decay_matrix",
    "flow_attention",
    "flow_attention_causal",
    "kernel_attention",
    "kernel_attention_parallel",
    "linear_flops",
    "recurrent_step",
]
