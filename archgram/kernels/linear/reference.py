"""The naive math the chunked linear-attention kernel must match, written from
the definition (not from the op's chunked code): materialise the (N, N) causal
decay matrix and contract.

Shapes: q, k (B, H, N, Dk), v (B, H, N, Dv), already through the feature map.

  out_i = scale * sum_{j <= i} D_ij (q_i . k_j) v_j,
  D_ij  = exp(sum_{t = j+1 .. i} a_t),   a_t = log(lambda_h) + g_{b,h,t}

``log_decay`` (H,): log lambda per head (Lightning / RetNet constant decay,
lambda^(i-j)); ``gate`` (B, H, N): a per-token, per-head log forget gate g <= 0
(data-dependent scalar gating as in Mamba-2 / simple GLA; the gate of token t
decays everything written before t). Both optional; with neither, D is the
causal 0/1 mask (Katharopoulos et al.'s causal linear attention).

The recurrent view (what decoding runs): S_t = exp(a_t) S_{t-1} + k_t v_t^T,
out_t = scale * q_t S_t; ``final_state`` returns S_N.
"""
from __future__ import annotations

import torch


def log_decays(n: int, heads: int, batch: int, log_decay=None, gate=None, dtype=torch.float64, device=None):
    """(B, H, N) per-token log decay a_t."""
    a = torch.zeros(batch, heads, n, dtype=dtype, device=device)
    if log_decay is not None:
        a = a + log_decay.to(device=device, dtype=dtype).view(1, heads, 1)
    if gate is not None:
        a = a + gate.to(device=device, dtype=dtype)
    return a


def decay_matrix(a: torch.Tensor) -> torch.Tensor:
    """(B, H, N, N) D_ij = exp(sum_{t=j+1..i} a_t) for j <= i, else 0."""
    n = a.shape[-1]
    c = a.cumsum(-1)
    diff = c[..., :, None] - c[..., None, :]
    keep = torch.ones(n, n, dtype=torch.bool, device=a.device).tril()
    return torch.where(keep, diff, torch.full_like(diff, float("-inf"))).exp()


def attention(q, k, v, *, log_decay=None, gate=None, scale: float = 1.0, dtype=torch.float64) -> torch.Tensor:
    """out (B, H, N, Dv) in q's dtype, computed in ``dtype``."""
    b, h, n, _ = q.shape
    a = log_decays(n, h, b, log_decay, gate, dtype, q.device)
    w = (q.to(dtype) @ k.to(dtype).transpose(-1, -2)) * decay_matrix(a) * scale
    return (w @ v.to(dtype)).to(q.dtype)


def final_state(k, v, *, log_decay=None, gate=None, dtype=torch.float64) -> torch.Tensor:
    """S_N = sum_j exp(sum_{t=j+1..N-1} a_t) k_j v_j^T, (B, H, Dk, Dv)."""
    b, h, n, _ = k.shape
    a = log_decays(n, h, b, log_decay, gate, dtype, k.device)
    c = a.cumsum(-1)
    weight = (c[..., -1:] - c).exp()  # (B, H, N)
    return (k.to(dtype) * weight[..., None]).transpose(-1, -2) @ v.to(dtype)


def step(state, q_t, k_t, v_t, *, log_decay=None, gate_t=None, scale: float = 1.0):
    """One token of the recurrence: (out_t (B, H, Dv), new state (B, H, Dk, Dv)).
    q_t, k_t (B, H, Dk); v_t (B, H, Dv); gate_t (B, H) or None; state None = zeros."""
    dtype = torch.float64
    update = k_t.to(dtype)[..., :, None] * v_t.to(dtype)[..., None, :]
    state = torch.zeros_like(update) if state is None else state.to(dtype)
    a = torch.zeros(q_t.shape[:2], dtype=dtype, device=q_t.device)
    if log_decay is not None:
        a = a + log_decay.to(a).view(1, -1)
    if gate_t is not None:
        a = a + gate_t.to(a)
    state = a.exp()[..., None, None] * state + update
    out = scale * (q_t.to(dtype)[..., None, :] @ state)[..., 0, :]
    return out.to(q_t.dtype), state
