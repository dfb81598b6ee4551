"""One decoding step of (decayed, gated) linear attention in Triton: the state
update S <- exp(a) S + k v^T and the read-out o = scale * q S, fused so the
state (B, H, Dk, Dv) is read and written once per token (in place by default:
decoding keeps one state buffer). Formula and torch oracle: ``reference.step``."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from archgram.kernels.launch import interpreting, pow2
from archgram.kernels.linear.chunk import DTYPES, MAX_KEY_DIM


@triton.jit
def _step(Q, K, V, G, LOGLAM, S, Out, H, DK, DV, scale,
          BK: tl.constexpr, BV: tl.constexpr, HAS_DECAY: tl.constexpr, HAS_GATE: tl.constexpr):
    pid_v = tl.program_id(0)
    pid_bh = tl.program_id(1)
    offs_k = tl.arange(0, BK)
    offs_v = pid_v * BV + tl.arange(0, BV)
    k_ok = offs_k < DK
    v_ok = offs_v < DV
    q = tl.load(Q + pid_bh * DK + offs_k, mask=k_ok, other=0.0).to(tl.float32)
    k = tl.load(K + pid_bh * DK + offs_k, mask=k_ok, other=0.0).to(tl.float32)
    v = tl.load(V + pid_bh * DV + offs_v, mask=v_ok, other=0.0).to(tl.float32)
    s_ptrs = S + pid_bh * DK * DV + offs_k[:, None] * DV + offs_v[None, :]
    s_mask = k_ok[:, None] & v_ok[None, :]
    s = tl.load(s_ptrs, mask=s_mask, other=0.0)
    if HAS_DECAY or HAS_GATE:
        a = 0.0
        if HAS_DECAY:
            a += tl.load(LOGLAM + pid_bh % H)
        if HAS_GATE:
            a += tl.load(G + pid_bh)
        s = s * tl.exp(a)
    s += k[:, None] * v[None, :]
    tl.store(s_ptrs, s, mask=s_mask)
    o = tl.sum(q[:, None] * s, 0) * scale
    tl.store(Out + pid_bh * DV + offs_v, o.to(Out.dtype.element_ty), mask=v_ok)


def recurrent_step(state, q_t, k_t, v_t, *, log_decay=None, gate_t=None, scale: float = 1.0):
    """(out_t (B, H, Dv) in q's dtype, state (B, H, Dk, Dv) float32).

    q_t, k_t (B, H, Dk); v_t (B, H, Dv); log_decay (H,); gate_t (B, H) log gate.
    ``state`` None starts from zeros; a contiguous float32 state is updated in
    place (and returned), any other is copied first."""
    if q_t.dim() != 3 or k_t.shape != q_t.shape or v_t.shape[:2] != q_t.shape[:2]:
        raise ValueError(f"step wants q_t, k_t (B, H, Dk), v_t (B, H, Dv); got {tuple(q_t.shape)}, "
                         f"{tuple(k_t.shape)}, {tuple(v_t.shape)}")
    if q_t.dtype not in DTYPES or q_t.shape[-1] > MAX_KEY_DIM:
        raise ValueError(f"unsupported dtype {q_t.dtype} or key dim {q_t.shape[-1]}")
    bsz, h, dk = q_t.shape
    dv = v_t.shape[-1]
    if state is None:
        state = torch.zeros(bsz, h, dk, dv, device=q_t.device, dtype=torch.float32)
    elif state.shape != (bsz, h, dk, dv):
        raise ValueError(f"state must be {(bsz, h, dk, dv)}, got {tuple(state.shape)}")
    elif state.dtype != torch.float32 or not state.is_contiguous():
        state = state.float().contiguous()
    q_t, k_t, v_t = q_t.contiguous(), k_t.contiguous(), v_t.contiguous()
    out = torch.empty(bsz, h, dv, device=q_t.device, dtype=q_t.dtype)
    lam = log_decay.to(device=q_t.device, dtype=torch.float32).contiguous() if log_decay is not None else out
    g = gate_t.to(device=q_t.device, dtype=torch.float32).contiguous() if gate_t is not None else out
    bv = min(pow2(dv), 16 if interpreting() else 64)
    _step[(triton.cdiv(dv, bv), bsz * h)](
        q_t, k_t, v_t, g, lam, state, out, h, dk, dv, float(scale),
        BK=pow2(dk), BV=bv, HAS_DECAY=log_decay is not None, HAS_GATE=gate_t is not None,
    )
    return out, state
