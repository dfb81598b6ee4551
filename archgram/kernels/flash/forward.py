"""Flash attention forward in Triton: one program per (query block, batch*head),
online softmax over key blocks, fp32 accumulation.

Compile-time options (``tl.constexpr``), as FlexAttention's score_mod/mask_mod:

- ``SCORE``: 0 softmax, 1 sigmoid (bias b added before the sigmoid, no
  normalisation), 2 softcap (cap * tanh(s / cap), then softmax);
- ``CAUSAL`` (j <= i) and ``WINDOW`` (|i - j| <= window; -1 none), which also
  narrow the range of key blocks each program visits;
- ``HAS_ALIBI``: logit bias -slope_h * |i - j|;
- head mapping: query head h reads key/value head h // GROUP (MHA, GQA, MQA);
- any Nq, Nk (rows and columns out of range are masked), head dim a power of
  two from 16 to 128; fp32/fp16/bf16 inputs.

Returns the output (q's dtype) and the log-sum-exp per query (float32,
natural log; softmax and softcap only) for a backward pass.
"""
from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

SCORE_IDS = {"softmax": 0, "sigmoid": 1, "softcap": 2}
HEAD_DIMS = (16, 32, 64, 128)
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _flash_fwd(
    Q, K, V, Out, LSE, SLOPES,
    sqb, sqh, sqm, sqd,
    skb, skh, skn, skd,
    svb, svh, svn, svd,
    sob, soh, som, sod,
    H, NQ, NK, scale, sig_bias, cap, window,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, SCORE: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_ALIBI: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    kvh = h // GROUP
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < NQ

    q_ptrs = Q + b * sqb + h * sqh + offs_m[:, None] * sqm + offs_d[None, :] * sqd
    q = tl.load(q_ptrs, mask=row_ok[:, None], other=0.0)
    k_base = K + b * skb + kvh * skh
    v_base = V + b * svb + kvh * svh

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    if HAS_ALIBI:
        slope = tl.load(SLOPES + h)

    # key range this query block can see
    lo = 0
    hi = NK
    if CAUSAL:
        hi = tl.minimum(NK, (pid_m + 1) * BLOCK_M)
    if HAS_WINDOW:
        lo = tl.maximum(0, pid_m * BLOCK_M - window)
        lo = (lo // BLOCK_N) * BLOCK_N
        hi = tl.minimum(hi, (pid_m + 1) * BLOCK_M + window)

    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        col_ok = cols < NK
        k = tl.load(k_base + cols[None, :] * skn + offs_d[:, None] * skd, mask=col_ok[None, :], other=0.0)
        s = tl.dot(q, k, input_precision=PRECISION) * scale
        diff = offs_m[:, None] - cols[None, :]
        if HAS_ALIBI:
            s = s - slope * tl.abs(diff).to(tl.float32)
        keep = col_ok[None, :] & row_ok[:, None]
        if CAUSAL:
            keep = keep & (diff >= 0)
        if HAS_WINDOW:
            keep = keep & (tl.abs(diff) <= window)
        v = tl.load(v_base + cols[:, None] * svn + offs_d[None, :] * svd, mask=col_ok[:, None], other=0.0)
        if SCORE == 1:
            p = tl.where(keep, tl.sigmoid(s + sig_bias), 0.0)
            acc += tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        else:
            if SCORE == 2:
                s = cap * (2.0 * tl.sigmoid(2.0 * s / cap) - 1.0)  # cap * tanh(s / cap)
            s = tl.where(keep, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing visible yet
            alpha = tl.exp(m_i - m_safe)
            p = tl.exp(s - m_safe[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
            m_i = m_new

    if SCORE != 1:
        l_safe = tl.where(l_i == 0.0, 1.0, l_i)
        acc = acc / l_safe[:, None]
        lse = tl.where(l_i == 0.0, float("-inf"), m_i + tl.log(l_safe))
        tl.store(LSE + pid_bh * NQ + offs_m, lse, mask=row_ok)
    o_ptrs = Out + b * sob + h * soh + offs_m[:, None] * som + offs_d[None, :] * sod
    tl.store(o_ptrs, acc.to(Out.dtype.element_ty), mask=row_ok[:, None])


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _config(head_dim: int) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages)."""
    if _interpreting():
        return 16, 16, 1, 1
    if head_dim <= 64:
        return 128, 64, 4, 3
    return 128, 64, 8, 3


def flash_forward(q, k, v, *, score: str = "softmax", causal: bool = False, window: int | None = None,
                  alibi_slopes: torch.Tensor | None = None, scale: float | None = None,
                  sigmoid_bias: float | None = None, cap: float = 50.0, block: tuple[int, int] | None = None):
    """(out (B, H, Nq, D) in q's dtype, lse (B, H, Nq) float32 or None for sigmoid).

    q (B, H, Nq, D); k, v (B, Hkv, Nk, D), H % Hkv == 0. Semantics as
    ``archgram.kernels.flash.reference.attention``. Inputs must be on a CUDA
    device, or on the CPU under ``TRITON_INTERPRET=1``."""
    bsz, h, nq, d = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    if h % hkv or k.shape != v.shape or k.shape[0] != bsz or k.shape[3] != d:
        raise ValueError(f"bad shapes q {tuple(q.shape)} k {tuple(k.shape)} v {tuple(v.shape)}")
    if d not in HEAD_DIMS or q.dtype not in DTYPES or not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"unsupported head dim {d} or dtypes {q.dtype}, {k.dtype}, {v.dtype}")
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    sig_bias = -math.log(nk) if sigmoid_bias is None else float(sigmoid_bias)
    out = torch.empty_like(q)
    lse = torch.empty(bsz, h, nq, device=q.device, dtype=torch.float32)
    slopes = alibi_slopes.to(device=q.device, dtype=torch.float32).contiguous() if alibi_slopes is not None else lse
    bm, bn, warps, stages = _config(d)
    if block is not None:
        bm, bn = block
    grid = (triton.cdiv(nq, bm), bsz * h)
    _flash_fwd[grid](
        q, k, v, out, lse, slopes,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        h, nq, nk, scale, sig_bias, float(cap), -1 if window is None else int(window),
        GROUP=h // hkv, HEAD_DIM=d, SCORE=SCORE_IDS[score],
        CAUSAL=bool(causal), HAS_WINDOW=window is not None, HAS_ALIBI=alibi_slopes is not None,
        BLOCK_M=bm, BLOCK_N=bn, PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=warps, num_stages=stages,
    )
    return out, (None if score == "sigmoid" else lse)
