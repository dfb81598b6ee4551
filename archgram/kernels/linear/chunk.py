"""Chunked causal linear attention in Triton (Lightning Attention-2, S48).

One program per (value block, batch*head) walks the sequence chunk by chunk
(``BT`` tokens), keeping the state S (Dk x BV, fp32) in registers:

  intra  O_c  = [(Q_c K_c^T) (.) W_c] V_c,   W_c[i, j] = exp(b_i - b_j), j <= i
  inter  O_c += (Q_c (.) exp(b)) S
  state  S    = exp(b_last) S + (K_c (.) exp(b_last - b))^T V_c

with b the chunk-local inclusive cumulative log decay (per-head constant
log lambda plus an optional per-token gate; see ``reference``). Every exponent
is <= 0, so nothing overflows however long the sequence.

``REVERSE`` walks the sequence backwards (the anti-causal sum over i >= j) by
pointer arithmetic alone; the backward pass is three runs of this one kernel:

  dq = fwd(do, v, k)                         causal
  dk = fwd(v, do, q),  dv = fwd(k, q, do)    anti-causal (REVERSE)
  da_t = sum_{m >= t} (q_m . dq_m - k_m . dk_m)   the decay/gate gradient.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_KEY_DIM = 256  # the state block Dk x BV lives in registers


@triton.jit
def _chunk_fwd(
    Q, K, V, G, LOGLAM, Out, S_OUT,
    sqb, sqh, sqn, sqd,
    skb, skh, skn, skd,
    svb, svh, svn, svd,
    sob, soh, son, sod,
    H, N, DK, DV, scale,
    BK: tl.constexpr, BV: tl.constexpr, BT: tl.constexpr,
    HAS_DECAY: tl.constexpr, HAS_GATE: tl.constexpr, REVERSE: tl.constexpr, STORE_STATE: tl.constexpr,
    PRECISION: tl.constexpr,
):
    pid_v = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_t = tl.arange(0, BT)
    offs_k = tl.arange(0, BK)
    offs_v = pid_v * BV + tl.arange(0, BV)
    k_ok = offs_k < DK
    v_ok = offs_v < DV
    causal = offs_t[:, None] >= offs_t[None, :]
    q_base = Q + b * sqb + h * sqh
    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh
    o_base = Out + b * sob + h * soh
    state = tl.zeros([BK, BV], dtype=tl.float32)
    loglam = 0.0
    if HAS_DECAY:
        loglam = tl.load(LOGLAM + h)
    for start in range(0, N, BT):
        rows = start + offs_t
        ok = rows < N
        if REVERSE:
            pos = N - 1 - rows
        else:
            pos = rows
        q = tl.load(q_base + pos[:, None] * sqn + offs_k[None, :] * sqd, mask=ok[:, None] & k_ok[None, :], other=0.0)
        k = tl.load(k_base + pos[:, None] * skn + offs_k[None, :] * skd, mask=ok[:, None] & k_ok[None, :], other=0.0)
        v = tl.load(v_base + pos[:, None] * svn + offs_v[None, :] * svd, mask=ok[:, None] & v_ok[None, :], other=0.0)
        qk = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
        if HAS_DECAY or HAS_GATE:
            a = tl.zeros([BT], dtype=tl.float32) + loglam
            if HAS_GATE:
                if REVERSE:
                    gpos = pos + 1  # reversed, token t's gate sits between t-1 and t
                else:
                    gpos = pos
                a += tl.load(G + pid_bh * N + gpos, mask=ok & (gpos < N), other=0.0)
            a = tl.where(ok, a, 0.0)
            cum = tl.cumsum(a, 0)
            total = tl.sum(a, 0)
            qk = qk * tl.exp(tl.where(causal, cum[:, None] - cum[None, :], float("-inf")))
            q_in = q.to(tl.float32) * (tl.exp(cum) * scale)[:, None]
            k_in = k.to(tl.float32) * tl.exp(total - cum)[:, None]
        else:
            qk = tl.where(causal, qk, 0.0)
            q_in = q.to(tl.float32) * scale
            k_in = k.to(tl.float32)
        out = tl.dot(qk.to(v.dtype), v, input_precision=PRECISION)
        out += tl.dot(q_in.to(v.dtype), state.to(v.dtype), input_precision=PRECISION)
        if HAS_DECAY or HAS_GATE:
            state = state * tl.exp(total)
        state += tl.dot(tl.trans(k_in.to(v.dtype)), v, input_precision=PRECISION)
        tl.store(o_base + pos[:, None] * son + offs_v[None, :] * sod, out.to(Out.dtype.element_ty),
                 mask=ok[:, None] & v_ok[None, :])
    if STORE_STATE:
        s_ptrs = S_OUT + pid_bh * DK * DV + offs_k[:, None] * DV + offs_v[None, :]
        tl.store(s_ptrs, state, mask=k_ok[:, None] & v_ok[None, :])


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _pow2(n: int, low: int = 16) -> int:
    return max(low, triton.next_power_of_2(n))


def _config(dk: int, dv: int) -> tuple[int, int, int, int]:
    """(BT chunk, BV value block, num_warps, num_stages)."""
    bv = min(_pow2(dv), 16 if _interpreting() else 64)
    if _interpreting():
        return 16, bv, 1, 1
    return 64, bv, 4 if dk <= 64 else 8, 2


def check_inputs(q, k, v, log_decay=None, gate=None) -> None:
    """ValueError naming the first thing the kernel cannot take."""
    if q.dim() != 4 or k.shape != q.shape or v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"linear attention wants q, k (B, H, N, Dk) and v (B, H, N, Dv); got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.dtype not in DTYPES or not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"unsupported dtypes {q.dtype}, {k.dtype}, {v.dtype} (float32/16, bfloat16, all equal)")
    if q.shape[-1] > MAX_KEY_DIM:
        raise ValueError(f"key dim {q.shape[-1]} > {MAX_KEY_DIM}: the state would not fit in registers")
    if log_decay is not None and log_decay.shape != (q.shape[1],):
        raise ValueError(f"log_decay must be (H,) = ({q.shape[1]},), got {tuple(log_decay.shape)}")
    if gate is not None and gate.shape != q.shape[:3]:
        raise ValueError(f"gate must be (B, H, N) = {tuple(q.shape[:3])}, got {tuple(gate.shape)}")


def chunk_forward(q, k, v, *, log_decay=None, gate=None, scale: float = 1.0, reverse: bool = False,
                  return_state: bool = False, out_dtype=None, chunk: int | None = None):
    """(out (B, H, N, Dv), final state (B, H, Dk, Dv) float32 or None). No autograd:
    see ``linear_attention``. ``reverse`` computes the anti-causal sum over i >= j
    (the gate shifted by one token, as the backward pass needs)."""
    check_inputs(q, k, v, log_decay, gate)
    bsz, h, n, dk = q.shape
    dv = v.shape[-1]
    out = torch.empty(bsz, h, n, dv, device=q.device, dtype=out_dtype or q.dtype)
    state = torch.empty(bsz, h, dk, dv, device=q.device, dtype=torch.float32) if return_state else out
    lam = log_decay.to(device=q.device, dtype=torch.float32).contiguous() if log_decay is not None else out
    g = gate.to(device=q.device, dtype=torch.float32).contiguous() if gate is not None else out
    bt, bv, warps, stages = _config(dk, dv)
    bt = chunk or bt
    grid = (triton.cdiv(dv, bv), bsz * h)
    _chunk_fwd[grid](
        q, k, v, g, lam, out, state,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        h, n, dk, dv, float(scale),
        BK=_pow2(dk), BV=bv, BT=bt,
        HAS_DECAY=log_decay is not None, HAS_GATE=gate is not None, REVERSE=bool(reverse),
        STORE_STATE=bool(return_state), PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=warps, num_stages=stages,
    )
    return out, (state if return_state else None)


class LinearAttentionFn(torch.autograd.Function):
    """Autograd around ``chunk_forward``: gradients for q, k, v, the per-head
    log decay and the per-token log gate."""

    @staticmethod
    def forward(ctx, q, k, v, log_decay, gate, scale):
        out, _ = chunk_forward(q, k, v, log_decay=log_decay, gate=gate, scale=scale)
        ctx.save_for_backward(q, k, v, log_decay, gate)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, do):
        q, k, v, log_decay, gate = ctx.saved_tensors
        kw = {"log_decay": log_decay, "gate": gate, "scale": ctx.scale}
        decays = log_decay is not None or gate is not None
        do = do.to(q.dtype)
        acc = torch.float32 if decays else None  # the decay gradient reads dq, dk: keep them in fp32
        dq, _ = chunk_forward(do, v, k, out_dtype=acc, **kw)
        dk, _ = chunk_forward(v, do, q, reverse=True, out_dtype=acc, **kw)
        dv, _ = chunk_forward(k, q, do, reverse=True, **kw)
        d_lam = d_gate = None
        if decays:
            dc = (q.float() * dq).sum(-1) - (k.float() * dk).sum(-1)  # dL/d cumsum(a), (B, H, N)
            da = dc.flip(-1).cumsum(-1).flip(-1)
            if gate is not None and ctx.needs_input_grad[4]:
                d_gate = da.to(gate.dtype)
            if log_decay is not None and ctx.needs_input_grad[3]:
                d_lam = da.sum((0, 2)).to(log_decay.dtype)
        return dq.to(q.dtype), dk.to(k.dtype), dv, d_lam, d_gate, None


def linear_attention(q, k, v, *, log_decay=None, gate=None, scale: float = 1.0) -> torch.Tensor:
    """Causal (decayed, gated) linear attention, differentiable; see ``reference``
    for the formula. q, k (B, H, N, Dk), v (B, H, N, Dv), log_decay (H,),
    gate (B, H, N) log forget gates (<= 0)."""
    check_inputs(q, k, v, log_decay, gate)
    return LinearAttentionFn.apply(q, k, v, log_decay, gate, float(scale))
