"""Linear attention's math on feature-mapped queries and keys, as small pure
functions: the oracle of the chunked Triton kernels (archgram/kernels/linear)
and what every kernelized score in linear.py calls. Three forms must agree:

  parallel   ``kernel_attention_parallel``: the explicit (masked, decayed) n x n
             matrix -- quadratic, only for tests and short sequences;
  chunked    ``chunked_causal``: Lightning Attention-2 tiling -- intra-block
             masked matmul plus an inter-block recurrence of the KV state;
  recurrent  ``recurrent_step``: one token at a time (``Score.step``), the form
             incremental decoding uses.
"""
from __future__ import annotations

import torch

EPS = 1e-6


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
