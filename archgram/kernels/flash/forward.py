"""Flash attention forward in Triton: one program per (query tile, batch*head),
online softmax over key tiles in log2 units, fp32 accumulation.

Compile-time options (``tl.constexpr``), as FlexAttention's score_mod/mask_mod:
``SCORE`` (softmax, sigmoid, softcap, softplus, clipped: see ``spec``), the
mask (``CAUSAL``, ``HAS_WINDOW``, ``NEIGHBOR``, ``DILATED``, ``GRID2D``, ``BLOCK_SPARSE``),
``HAS_ALIBI`` (bias -slope_h * |i - j|) and the head mapping (query head h
reads key/value head h // GROUP: MHA, GQA, MQA; SQA is H query heads over
Hkv <= H key/value heads, the same mapping).

Each program visits only the key tiles its rows can see ([min a_i, max b_i]
of the per-row visible interval), so causal / window / neighborhood cost
grows with the visible band, not the length; tiles every row fully sees run
without mask evaluation (the interior), the boundary tiles with it. A 2D
neighborhood visits the token range of the image rows its rows see (cost
grows with the window, not the image), always masked: those rows' tokens
outside the window's columns are hidden.
Block-sparse masks visit only the tiles the block mask leaves visible.
Clipped softmax needs the final normaliser before clipping: a statistics
pass, then the weighted pass. Softplus counts each row's visible keys
first (a mask-only pass, no loads).

Any Nq, Nk; any head dim from 16 to 256 (a power-of-two tile, the columns past
the head dim masked: ``common.head_dim_args``); fp32/fp16/bf16.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from archgram.kernels.flash.common import (
    CLIPPED,
    COUNT_PASS,
    LOG2E,
    MAX_HEAD_DIM,
    MIN_HEAD_DIM,
    SIGMOID,
    SOFTCAP,
    SOFTMAX,
    SOFTPLUS,
    STATS_PASS,
    WEIGHTED_PASS,
    cap_logits,
    element_mask,
    fwd_config,
    head_dim_args,
    load_tile,
    rel_index,
    row_bounds,
    sigmoid2,
    smaller,
    softplus_logit2,
    softplus_parts,
    tile_lists,
)
from archgram.kernels.flash.spec import SCORE_IDS, FlashArgumentError, Spec, make_spec
from archgram.kernels.launch import dot_precision, fast_approx, launch_fitting

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def key_ranges(a, b, row_ok, NK, BLOCK_N: tl.constexpr, SPLIT: tl.constexpr):
    """(lo, full_lo, full_hi, hi): key tiles [lo, hi) hold every visible key of the
    rows; [full_lo, full_hi) those all rows see entirely (empty unless SPLIT)."""
    lo = (tl.min(tl.where(row_ok, a, NK)) // BLOCK_N) * BLOCK_N
    hi = tl.max(tl.where(row_ok, b, -1)) + 1
    full_lo = hi
    full_hi = hi
    if SPLIT:
        f_lo = ((tl.max(tl.where(row_ok, a, 0)) + BLOCK_N - 1) // BLOCK_N) * BLOCK_N
        f_hi = ((tl.min(tl.where(row_ok, b, NK)) + 1) // BLOCK_N) * BLOCK_N
        full_lo = tl.where(f_hi > f_lo, f_lo, hi)
        full_hi = tl.where(f_hi > f_lo, f_hi, hi)
    return lo, full_lo, full_hi, hi


@triton.jit
def _fwd_tile(acc, l_i, m_i, q, k_base, v_base, skn, skd, svn, svd, start_n, rows, offs_n, offs_d, d_ok,
              a, b, NK, dil, gw, BMASK, nbq, nbk, bq, bk, slope2, rb_base, rmax, qk_scale, sig_b2, cap,
              czeta, gamma, power, logn,
              lse2,
              SCORE: tl.constexpr, STAGE: tl.constexpr, MASKED: tl.constexpr, DILATED: tl.constexpr,
              GRID2D: tl.constexpr,
              BLOCK_SPARSE: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_RELB: tl.constexpr, PRECISION: tl.constexpr,
              FAST_APPROX: tl.constexpr, PAD_D: tl.constexpr):
    """One key tile. STAGE COUNT_PASS: count visible keys into l_i; STATS_PASS:
    softmax statistics only (clipped's first pass); WEIGHTED_PASS: accumulate
    the output."""
    cols = start_n + offs_n
    if MASKED:
        keep = element_mask(rows[:, None], cols[None, :], a[:, None], b[:, None], dil, gw, BMASK, nbq, nbk, bq, bk,
                            DILATED, GRID2D, BLOCK_SPARSE)
    if STAGE == COUNT_PASS:
        if MASKED:
            l_i += tl.sum(keep.to(tl.float32), 1)
        else:
            l_i += _width(offs_n)
    else:
        k = load_tile(k_base + cols[None, :] * skn + offs_d[:, None] * skd, (cols < NK)[None, :], d_ok[:, None],
                      MASKED, PAD_D)
        s2 = tl.dot(q, k, input_precision=PRECISION) * qk_scale
        if HAS_ALIBI:
            s2 = s2 - slope2 * tl.abs(rows[:, None] - cols[None, :]).to(tl.float32)
        if HAS_RELB:
            s2 = s2 + tl.load(rb_base + rel_index(rows[:, None], cols[None, :], rmax))
        if SCORE == SOFTCAP:
            s2, _t = cap_logits(s2, cap, FAST_APPROX)
        if SCORE == SOFTPLUS:  # softplus ** power = exp2(logit): a softmax over these logits
            sp, _sig, x2 = softplus_parts(s2, logn[:, None])
            s2 = softplus_logit2(sp, x2, power, FAST_APPROX)
        if STAGE == STATS_PASS or SCORE == SOFTMAX or SCORE == SOFTCAP or SCORE == SOFTPLUS:  # online softmax
            if MASKED:
                s2 = tl.where(keep, s2, float("-inf"))
                m_new = tl.maximum(m_i, tl.max(s2, 1))
                m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing visible yet
            else:
                m_new = tl.maximum(m_i, tl.max(s2, 1))
                m_use = m_new
            alpha = tl.exp2(m_i - m_use)
            p = tl.exp2(s2 - m_use[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            m_i = m_new
            if STAGE == WEIGHTED_PASS:
                v = load_tile(v_base + cols[:, None] * svn + offs_d[None, :] * svd, (cols < NK)[:, None],
                              d_ok[None, :], MASKED, PAD_D)
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        else:
            if SCORE == SIGMOID:
                w = sigmoid2(s2 + sig_b2, FAST_APPROX)
            else:  # clipped, with the final lse of the statistics pass
                w = tl.minimum(tl.maximum(czeta * tl.exp2(s2 - lse2[:, None]) + gamma, 0.0), 1.0)
            if MASKED:
                w = tl.where(keep, w, 0.0)
            v = load_tile(v_base + cols[:, None] * svn + offs_d[None, :] * svd, (cols < NK)[:, None], d_ok[None, :],
                          MASKED, PAD_D)
            acc += tl.dot(w.to(v.dtype), v, input_precision=PRECISION)
    return acc, l_i, m_i


@triton.jit
def _width(offs_n):
    return tl.sum((offs_n >= 0).to(tl.float32), 0)


@triton.jit
def _sweep(acc, l_i, m_i, q, k_base, v_base, skn, skd, svn, svd, rows, offs_n, offs_d, d_ok, a, b, NK, dil, gw,
           BMASK, nbq, nbk, bq, bk, TILES, n_tiles, pid_m, slope2, rb_base, rmax, qk_scale, sig_b2, cap,
           czeta, gamma, power,
           logn, lse2, lo, full_lo, full_hi, hi,
           SCORE: tl.constexpr, STAGE: tl.constexpr, DILATED: tl.constexpr, GRID2D: tl.constexpr,
           BLOCK_SPARSE: tl.constexpr,
           HAS_ALIBI: tl.constexpr, HAS_RELB: tl.constexpr, PRECISION: tl.constexpr, FAST_APPROX: tl.constexpr,
           BLOCK_N: tl.constexpr, PAD_D: tl.constexpr):
    """All key tiles of one query tile: masked boundary, unmasked interior,
    masked boundary; or the block-sparse list."""
    if BLOCK_SPARSE:
        row = TILES + pid_m * (n_tiles + 1)  # [count, tile indices...] per query tile
        for t in range(0, tl.load(row)):
            start_n = tl.load(row + 1 + t) * BLOCK_N
            acc, l_i, m_i = _fwd_tile(acc, l_i, m_i, q, k_base, v_base, skn, skd, svn, svd, start_n, rows, offs_n,
                                      offs_d, d_ok, a, b, NK, dil, gw, BMASK, nbq, nbk, bq, bk, slope2, rb_base,
                                      rmax, qk_scale, sig_b2, cap,
                                      czeta, gamma, power, logn, lse2, SCORE, STAGE, True, DILATED, GRID2D,
                                      BLOCK_SPARSE,
                                      HAS_ALIBI, HAS_RELB, PRECISION, FAST_APPROX, PAD_D)
    else:
        for start_n in range(lo, full_lo, BLOCK_N):
            acc, l_i, m_i = _fwd_tile(acc, l_i, m_i, q, k_base, v_base, skn, skd, svn, svd, start_n, rows, offs_n,
                                      offs_d, d_ok, a, b, NK, dil, gw, BMASK, nbq, nbk, bq, bk, slope2, rb_base,
                                      rmax, qk_scale, sig_b2, cap,
                                      czeta, gamma, power, logn, lse2, SCORE, STAGE, True, DILATED, GRID2D,
                                      BLOCK_SPARSE,
                                      HAS_ALIBI, HAS_RELB, PRECISION, FAST_APPROX, PAD_D)
        for start_n in range(full_lo, full_hi, BLOCK_N):
            acc, l_i, m_i = _fwd_tile(acc, l_i, m_i, q, k_base, v_base, skn, skd, svn, svd, start_n, rows, offs_n,
                                      offs_d, d_ok, a, b, NK, dil, gw, BMASK, nbq, nbk, bq, bk, slope2, rb_base,
                                      rmax, qk_scale, sig_b2, cap,
                                      czeta, gamma, power, logn, lse2, SCORE, STAGE, False, DILATED, GRID2D,
                                      BLOCK_SPARSE,
                                      HAS_ALIBI, HAS_RELB, PRECISION, FAST_APPROX, PAD_D)
        for start_n in range(full_hi, hi, BLOCK_N):
            acc, l_i, m_i = _fwd_tile(acc, l_i, m_i, q, k_base, v_base, skn, skd, svn, svd, start_n, rows, offs_n,
                                      offs_d, d_ok, a, b, NK, dil, gw, BMASK, nbq, nbk, bq, bk, slope2, rb_base,
                                      rmax, qk_scale, sig_b2, cap,
                                      czeta, gamma, power, logn, lse2, SCORE, STAGE, True, DILATED, GRID2D,
                                      BLOCK_SPARSE,
                                      HAS_ALIBI, HAS_RELB, PRECISION, FAST_APPROX, PAD_D)
    return acc, l_i, m_i


@triton.jit
def _flash_fwd(
    Q, K, V, Out, LSE, AUX, SLOPES, RELB, BMASK, TILES,
    sqb, sqh, sqm, sqd, skb, skh, skn, skd, svb, svh, svn, svd, sob, soh, som, sod,
    H, NQ, NK, qk_scale, sig_b2, cap, czeta, gamma, power, window, dil, nbhd, gw, nbq, nbk, bq, bk, n_tiles, rmax,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, PAD_D: tl.constexpr, SCORE: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, NEIGHBOR: tl.constexpr, DILATED: tl.constexpr, GRID2D: tl.constexpr,
    BLOCK_SPARSE: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_RELB: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr, FAST_APPROX: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b_idx = pid_bh // H
    h = pid_bh % H
    kvh = h // GROUP
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM  # BLOCK_D pads a head dim that is not a power of two
    row_ok = rows < NQ

    q = tl.load(Q + b_idx * sqb + h * sqh + rows[:, None] * sqm + offs_d[None, :] * sqd,
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    k_base = K + b_idx * skb + kvh * skh
    v_base = V + b_idx * svb + kvh * svh
    slope2 = 0.0
    rb_base = RELB + h * (2 * rmax + 1)  # this head's bias table
    if HAS_ALIBI:
        slope2 = tl.load(SLOPES + h)
    a, b = row_bounds(rows, NK, window, dil, nbhd, gw, CAUSAL, HAS_WINDOW, NEIGHBOR, GRID2D)
    lo, full_lo, full_hi, hi = key_ranges(a, b, row_ok, NK, BLOCK_N, not DILATED and not BLOCK_SPARSE and not GRID2D)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    logn = l_i
    lse2 = l_i
    if SCORE == SOFTPLUS and (DILATED or GRID2D or BLOCK_SPARSE):  # softplus: log of each row's visible key count
        _a, cnt, _m = _sweep(acc, l_i, m_i, q, k_base, v_base, skn, skd, svn, svd, rows, offs_n, offs_d, d_ok, a, b, NK,
                             dil, gw, BMASK, nbq, nbk, bq, bk, TILES, n_tiles, pid_m, slope2, rb_base, rmax,
                             qk_scale, sig_b2, cap,
                             czeta,
                             gamma, power, logn, lse2, lo, full_lo, full_hi, hi, SCORE, COUNT_PASS, DILATED, GRID2D,
                             BLOCK_SPARSE,
                             HAS_ALIBI, HAS_RELB, PRECISION, FAST_APPROX, BLOCK_N, PAD_D)
        logn = tl.log(tl.maximum(cnt, 1.0))
    elif SCORE == SOFTPLUS:  # a contiguous interval [a, b]: counted without a sweep
        logn = tl.log(tl.maximum(b - a + 1, 1).to(tl.float32))
    if SCORE == CLIPPED:  # the final lse first
        _a, l1, m1 = _sweep(acc, l_i, m_i, q, k_base, v_base, skn, skd, svn, svd, rows, offs_n, offs_d, d_ok, a, b, NK,
                            dil, gw, BMASK, nbq, nbk, bq, bk, TILES, n_tiles, pid_m, slope2, rb_base, rmax,
                            qk_scale, sig_b2, cap,
                            czeta,
                            gamma, power, logn, lse2, lo, full_lo, full_hi, hi, SCORE, STATS_PASS, DILATED, GRID2D,
                            BLOCK_SPARSE, HAS_ALIBI, HAS_RELB, PRECISION, FAST_APPROX, BLOCK_N, PAD_D)
        lse2 = tl.where(l1 == 0.0, float("-inf"), m1 + tl.log2(tl.where(l1 == 0.0, 1.0, l1)))
    acc, l_i, m_i = _sweep(acc, l_i, m_i, q, k_base, v_base, skn, skd, svn, svd, rows, offs_n, offs_d, d_ok, a, b, NK,
                           dil, gw, BMASK, nbq, nbk, bq, bk, TILES, n_tiles, pid_m, slope2, rb_base, rmax,
                           qk_scale, sig_b2, cap,
                           czeta,
                           gamma, power, logn, lse2, lo, full_lo, full_hi, hi, SCORE, WEIGHTED_PASS, DILATED,
                           GRID2D, BLOCK_SPARSE, HAS_ALIBI, HAS_RELB, PRECISION, FAST_APPROX, BLOCK_N, PAD_D)

    stat_ptr = pid_bh * NQ + rows
    if SCORE == SOFTMAX or SCORE == SOFTCAP or SCORE == SOFTPLUS:
        l_safe = tl.where(l_i == 0.0, 1.0, l_i)
        acc = acc / l_safe[:, None]
        lse = tl.where(l_i == 0.0, float("-inf"), (m_i + tl.log2(l_safe)) * 0.6931471805599453)
        tl.store(LSE + stat_ptr, lse, mask=row_ok)
    if SCORE == SOFTPLUS:
        tl.store(AUX + stat_ptr, logn, mask=row_ok)
    if SCORE == CLIPPED:
        tl.store(LSE + stat_ptr, lse2 * 0.6931471805599453, mask=row_ok)
    tl.store(Out + b_idx * sob + h * soh + rows[:, None] * som + offs_d[None, :] * sod,
             acc.to(Out.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])


def check_inputs(q, k, v) -> None:
    """FlashArgumentError unless q (B, H, Nq, D), k = v (B, Hkv, Nk, D) fit the kernels."""
    if q.dim() != 4 or k.dim() != 4 or k.shape != v.shape:
        raise FlashArgumentError(f"flash attention: need q (B, H, Nq, D), k = v (B, Hkv, Nk, D); got "
                                 f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    bsz, h, _, d = q.shape
    if k.shape[0] != bsz or k.shape[3] != d or h % k.shape[1]:
        raise FlashArgumentError(f"flash attention: k/v {tuple(k.shape)} do not match q {tuple(q.shape)} "
                                 "(same batch and head dim; kv heads must divide query heads)")
    if not MIN_HEAD_DIM <= d <= MAX_HEAD_DIM:
        raise FlashArgumentError(f"flash attention: head dim {d} outside {MIN_HEAD_DIM}-{MAX_HEAD_DIM}")
    if q.dtype not in DTYPES or not (q.dtype == k.dtype == v.dtype):
        raise FlashArgumentError(f"flash attention: dtypes {q.dtype}, {k.dtype}, {v.dtype}; need one of {DTYPES}")


def mask_args(spec: Spec, nq: int, nk: int, bm: int, bn: int, device, transpose: bool = False):
    """Runtime mask scalars and tensors the kernels take, plus constexpr flags."""
    dummy = torch.empty(1, device=device, dtype=torch.int32)
    if spec.block_mask is not None:
        idx, cnt = tile_lists(spec, nq, nk, bm, bn, device, transpose)
        tiles = torch.cat([cnt[:, None], idx], 1).flatten().contiguous()  # per row: count, then indices
        bmask = spec.block_mask.to(device=device, dtype=torch.int8).contiguous()
        nbq, nbk = bmask.shape
        bq, bk = spec.block
        n_tiles = idx.shape[1]
    else:
        tiles, bmask, nbq, nbk, bq, bk, n_tiles = dummy, dummy, 1, 1, 1, 1, 1
    args = dict(window=-1 if spec.window is None else int(spec.window), dil=int(spec.dilation),
                nbhd=int(spec.neighborhood or 1), gw=int(spec.grid[1]) if spec.grid else 1, nbq=nbq, nbk=nbk, bq=bq,
                bk=bk, n_tiles=n_tiles)
    flags = dict(CAUSAL=bool(spec.causal), HAS_WINDOW=spec.window is not None, NEIGHBOR=spec.neighborhood is not None,
                 DILATED=spec.dilation > 1, GRID2D=spec.grid is not None, BLOCK_SPARSE=spec.block_mask is not None)
    return bmask, tiles, args, flags


def rel_bias_args(rel_bias, dummy):
    """(table in log2 units, clip distance R) of a (H, 2R + 1) relative bias, or (dummy, 0)."""
    if rel_bias is None:
        return dummy, 0
    return (rel_bias.detach().to(device=dummy.device, dtype=torch.float32) * LOG2E).contiguous(), \
        (rel_bias.shape[1] - 1) // 2


def check_rel_bias(rel_bias, h: int) -> None:
    """FlashArgumentError unless rel_bias is None or an (H, 2R + 1) floating table."""
    if rel_bias is None:
        return
    if rel_bias.dim() != 2 or rel_bias.shape[0] != h or rel_bias.shape[1] % 2 == 0 or \
            not rel_bias.is_floating_point():
        raise FlashArgumentError(f"flash attention: rel_bias must be a float (heads={h}, 2R + 1) table over "
                                 f"clipped offsets -R..R, got {tuple(rel_bias.shape)} {rel_bias.dtype}")


def score_args(spec: Spec, nk: int, d: int) -> dict:
    scale, sig_b = spec.resolved(nk, d)
    return dict(qk_scale=scale * LOG2E, sig_b2=sig_b * LOG2E, cap=float(spec.cap),
                czeta=float(spec.zeta - spec.gamma), gamma=float(spec.gamma), power=float(spec.power))


def forward(q, k, v, spec: Spec, alibi_slopes=None, block=None, rel_bias=None):
    """(out, lse, aux): lse (B, H, Nq) float32 natural log-sum-exp (softmax, softcap,
    clipped) or of log2 softplus ** power (softplus); aux: log N_i (softplus)."""
    bsz, h, nq, d = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    out = torch.empty_like(q)
    lse = torch.empty(bsz, h, nq, device=q.device, dtype=torch.float32)
    aux = torch.empty_like(lse) if spec.score == "softplus" else lse
    slopes = (alibi_slopes.to(device=q.device, dtype=torch.float32) * LOG2E).contiguous() \
        if alibi_slopes is not None else lse
    relb, rmax = rel_bias_args(rel_bias, lse)
    cfg = fwd_config(d, spec.masked)
    if block is not None:
        cfg = (*block, *cfg[2:])

    def run(cfg):
        bm, bn, warps, stages = cfg
        bmask, tiles, margs, flags = mask_args(spec, nq, nk, bm, bn, q.device)
        _flash_fwd[(triton.cdiv(nq, bm), bsz * h)](
            q, k, v, out, lse, aux, slopes, relb, bmask, tiles,
            *q.stride(), *k.stride(), *v.stride(), *out.stride(),
            h, nq, nk, **score_args(spec, nk, d), **margs,
            GROUP=h // hkv, **head_dim_args(d), SCORE=SCORE_IDS[spec.score], HAS_ALIBI=alibi_slopes is not None,
            **flags, HAS_RELB=rel_bias is not None, rmax=rmax,
            BLOCK_M=bm, BLOCK_N=bn, PRECISION=dot_precision(q.dtype), FAST_APPROX=fast_approx(q.dtype),
            num_warps=warps, num_stages=stages,
        )

    launch_fitting(("fwd", d, q.dtype), cfg, smaller, run)
    return out, lse, aux


def flash_forward(q, k, v, *, alibi_slopes: torch.Tensor | None = None, block_tile: tuple[int, int] | None = None,
                  rel_bias: torch.Tensor | None = None, **kw):
    """(out (B, H, Nq, D) in q's dtype, lse (B, H, Nq) float32 or None).

    q (B, H, Nq, D); k, v (B, Hkv, Nk, D), H % Hkv == 0. Keywords as
    ``archgram.kernels.flash.spec.Spec``; semantics as
    ``archgram.kernels.flash.reference.attention``. Inputs on a CUDA device, or
    on the CPU under ``TRITON_INTERPRET=1``. No autograd: see ``flash_attention``."""
    check_inputs(q, k, v)
    check_rel_bias(rel_bias, q.shape[1])
    spec = make_spec(q.shape[2], k.shape[2], **kw)
    out, lse, _ = forward(q, k, v, spec, alibi_slopes, block_tile, rel_bias)
    return out, (lse if spec.score in ("softmax", "softcap", "clipped") else None)
