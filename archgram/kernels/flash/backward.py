"""Flash attention backward in Triton (FlashAttention-2 layout), for every score
and mask the forward serves.

- delta_i = rowsum(dO_i * O_i) (softmax, softcap, softplus: the weights are
  row-normalised, so sum_j w_ij dP_ij = dO_i . O_i);
- dQ kernel: one program per (query tile, batch*head), loops over the key
  tiles its rows see. For clipped softmax it first computes
  D'_i = sum_j p_ij dp_ij (the clip breaks delta = dO . O) and stores it for
  the dK/dV kernel, which therefore runs second;
- dK/dV kernel: one program per (key tile, batch*kv-head), loops over the
  query heads of its group (GQA: dK, dV summed over them, no atomics) and the
  query tiles that see the tile.

Sigmoid keeps no statistics (w = sigmoid(s + b)); softplus keeps its
log-normaliser (as lse: softplus ** power is a softmax over log2 of
itself) and log N_i from the forward.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from archgram.kernels.flash.common import (
    CLIPPED,
    LOG2E,
    SIGMOID,
    SOFTPLUS,
    STATS_PASS,
    WEIGHTED_PASS,
    bwd_config,
    element_mask,
    head_dim_args,
    load_tile,
    rel_index,
    row_bounds,
    smaller,
    weights_and_grad,
)
from archgram.kernels.flash.forward import key_ranges, mask_args, rel_bias_args, score_args
from archgram.kernels.flash.spec import SCORE_IDS, Spec
from archgram.kernels.launch import dot_precision, fast_approx, interpreting, launch_fitting


@triton.jit
def _row_dot(A, B, Out, sab, sah, san, sad, sbb, sbh, sbn, sbd, H, N, D,
             BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    """Out[bh, i] = sum_d A[b, h, i, d] B[b, h, i, d] in fp32, reading each input once."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    ok = (rows < N)[:, None] & (offs_d < D)[None, :]
    a = tl.load(A + b * sab + h * sah + rows[:, None] * san + offs_d[None, :] * sad, mask=ok, other=0.0)
    c = tl.load(B + b * sbb + h * sbh + rows[:, None] * sbn + offs_d[None, :] * sbd, mask=ok, other=0.0)
    tl.store(Out + pid_bh * N + rows, tl.sum(a.to(tl.float32) * c.to(tl.float32), 1), mask=rows < N)


def row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """delta = rowsum(dO * O) as (B, H, N) float32, one fused pass (the torch
    expression materialises two fp32 copies of both tensors first)."""
    bsz, h, n, d = a.shape
    out = torch.empty(bsz, h, n, device=a.device, dtype=torch.float32)
    bm = 16 if interpreting() else 64
    _row_dot[(triton.cdiv(n, bm), bsz * h)](a, b, out, *a.stride(), *b.stride(), h, n, d,
                                           BLOCK_M=bm, BLOCK_D=max(16, triton.next_power_of_2(d)))
    return out


@triton.jit
def _row_stats(LSE, AUX, DELTA, ptr, row_ok, SCORE: tl.constexpr):
    """(lse2, delta, logn) of some rows; unused ones are zeros."""
    lse2 = tl.zeros(ptr.shape, dtype=tl.float32)
    delta = lse2
    logn = lse2
    if SCORE != SIGMOID:  # sigmoid keeps no row statistics
        delta = tl.load(DELTA + ptr, mask=row_ok, other=0.0)
        lse2 = tl.load(LSE + ptr, mask=row_ok, other=0.0) * 1.4426950408889634
        lse2 = tl.where(lse2 == float("-inf"), 0.0, lse2)  # rows seeing nothing: all weights masked anyway
    if SCORE == SOFTPLUS:
        logn = tl.load(AUX + ptr, mask=row_ok, other=0.0)
    return lse2, delta, logn


@triton.jit
def _dq_tile(dq, dsum, q, do, k_base, v_base, skn, skd, svn, svd, start_n, rows, offs_n, offs_d, d_ok, a, b, NK, dil, gw,
             BMASK, nbq, nbk, bq, bk, slope2, rb_base, db_base, rmax, qk_scale, sig_b2, cap, czeta, gamma, power,
             lse2, delta, logn,
             SCORE: tl.constexpr, STAGE: tl.constexpr, MASKED: tl.constexpr, DILATED: tl.constexpr,
             GRID2D: tl.constexpr,
             BLOCK_SPARSE: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_RELB: tl.constexpr, PRECISION: tl.constexpr,
             FAST_APPROX: tl.constexpr, PAD_D: tl.constexpr):
    """STAGE STATS_PASS: accumulate D' (clipped) into dsum; WEIGHTED_PASS: accumulate dQ (unscaled)."""
    cols = start_n + offs_n
    keep = cols[None, :] >= 0
    if MASKED:
        keep = element_mask(rows[:, None], cols[None, :], a[:, None], b[:, None], dil, gw, BMASK, nbq, nbk, bq, bk,
                            DILATED, GRID2D, BLOCK_SPARSE)
    kt = load_tile(k_base + cols[None, :] * skn + offs_d[:, None] * skd, (cols < NK)[None, :], d_ok[:, None], MASKED,
                   PAD_D)
    vt = load_tile(v_base + cols[None, :] * svn + offs_d[:, None] * svd, (cols < NK)[None, :], d_ok[:, None], MASKED,
                   PAD_D)
    s2 = tl.dot(q, kt, input_precision=PRECISION) * qk_scale
    if HAS_ALIBI:
        s2 = s2 - slope2 * tl.abs(rows[:, None] - cols[None, :]).to(tl.float32)
    if HAS_RELB:
        s2 = s2 + tl.load(rb_base + rel_index(rows[:, None], cols[None, :], rmax))
    dp = tl.dot(do, vt, input_precision=PRECISION)
    if STAGE == STATS_PASS:  # clipped: D' = sum_j p c 1[0 <= c p + gamma <= 1] dp
        p = tl.exp2(s2 - lse2[:, None])
        y = czeta * p + gamma
        inside = (y >= 0.0) & (y <= 1.0) & keep
        dsum += tl.sum(tl.where(inside, p * czeta * dp, 0.0), 1)
    else:
        _w, ds = weights_and_grad(s2, keep, dp, lse2[:, None], delta[:, None], logn[:, None], sig_b2,
                                  cap, czeta, gamma, power, SCORE, MASKED, FAST_APPROX)
        dq += tl.dot(ds.to(kt.dtype), tl.trans(kt), input_precision=PRECISION)
        if HAS_RELB:  # dBias[h, t] = sum of ds over the pairs at clipped offset t (atomics: rows of all tiles)
            tl.atomic_add(db_base + rel_index(rows[:, None], cols[None, :], rmax), ds,
                          mask=(rows >= 0)[:, None] & (cols < NK)[None, :])
    return dq, dsum


@triton.jit
def _dq_sweep(dq, dsum, q, do, k_base, v_base, skn, skd, svn, svd, rows, offs_n, offs_d, d_ok, a, b, NK, dil, gw,
              BMASK, nbq, nbk, bq, bk, TILES, n_tiles, pid_m, slope2, rb_base, db_base, rmax, qk_scale, sig_b2, cap,
              czeta, gamma, power,
              lse2, delta, logn, lo, full_lo, full_hi, hi,
              SCORE: tl.constexpr, STAGE: tl.constexpr, DILATED: tl.constexpr, GRID2D: tl.constexpr,
              BLOCK_SPARSE: tl.constexpr,
              HAS_ALIBI: tl.constexpr, HAS_RELB: tl.constexpr, PRECISION: tl.constexpr, FAST_APPROX: tl.constexpr,
              BLOCK_N: tl.constexpr, PAD_D: tl.constexpr):
    if BLOCK_SPARSE:
        row = TILES + pid_m * (n_tiles + 1)
        for t in range(0, tl.load(row)):
            start_n = tl.load(row + 1 + t) * BLOCK_N
            dq, dsum = _dq_tile(dq, dsum, q, do, k_base, v_base, skn, skd, svn, svd, start_n, rows, offs_n, offs_d,
                                d_ok, a, b, NK, dil, gw, BMASK, nbq, nbk, bq, bk, slope2, rb_base, db_base, rmax, qk_scale,
                                sig_b2, cap, czeta, gamma,
                                power, lse2, delta, logn, SCORE, STAGE, True, DILATED, GRID2D, BLOCK_SPARSE,
                                HAS_ALIBI, HAS_RELB,
                                PRECISION, FAST_APPROX, PAD_D)
    else:
        for start_n in range(lo, full_lo, BLOCK_N):
            dq, dsum = _dq_tile(dq, dsum, q, do, k_base, v_base, skn, skd, svn, svd, start_n, rows, offs_n, offs_d,
                                d_ok, a, b, NK, dil, gw, BMASK, nbq, nbk, bq, bk, slope2, rb_base, db_base, rmax, qk_scale,
                                sig_b2, cap, czeta, gamma,
                                power, lse2, delta, logn, SCORE, STAGE, True, DILATED, GRID2D, BLOCK_SPARSE,
                                HAS_ALIBI, HAS_RELB,
                                PRECISION, FAST_APPROX, PAD_D)
        for start_n in range(full_lo, full_hi, BLOCK_N):
            dq, dsum = _dq_tile(dq, dsum, q, do, k_base, v_base, skn, skd, svn, svd, start_n, rows, offs_n, offs_d,
                                d_ok, a, b, NK, dil, gw, BMASK, nbq, nbk, bq, bk, slope2, rb_base, db_base, rmax, qk_scale,
                                sig_b2, cap, czeta, gamma,
                                power, lse2, delta, logn, SCORE, STAGE, False, DILATED, GRID2D, BLOCK_SPARSE,
                                HAS_ALIBI, HAS_RELB,
                                PRECISION, FAST_APPROX, PAD_D)
        for start_n in range(full_hi, hi, BLOCK_N):
            dq, dsum = _dq_tile(dq, dsum, q, do, k_base, v_base, skn, skd, svn, svd, start_n, rows, offs_n, offs_d,
                                d_ok, a, b, NK, dil, gw, BMASK, nbq, nbk, bq, bk, slope2, rb_base, db_base, rmax, qk_scale,
                                sig_b2, cap, czeta, gamma,
                                power, lse2, delta, logn, SCORE, STAGE, True, DILATED, GRID2D, BLOCK_SPARSE,
                                HAS_ALIBI, HAS_RELB,
                                PRECISION, FAST_APPROX, PAD_D)
    return dq, dsum


@triton.jit
def _flash_bwd_dq(
    Q, K, V, DO, DQ, LSE, AUX, DELTA, SLOPES, RELB, DRELB, BMASK, TILES,
    sqb, sqh, sqm, sqd, skb, skh, skn, skd, svb, svh, svn, svd, sdb, sdh, sdm, sdd, sgb, sgh, sgm, sgd,
    H, NQ, NK, scale, qk_scale, sig_b2, cap, czeta, gamma, power, window, dil, nbhd, gw, nbq, nbk, bq, bk, n_tiles,
    rmax,
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
    io_ok = row_ok[:, None] & d_ok[None, :]
    q = tl.load(Q + b_idx * sqb + h * sqh + rows[:, None] * sqm + offs_d[None, :] * sqd, mask=io_ok, other=0.0)
    do = tl.load(DO + b_idx * sdb + h * sdh + rows[:, None] * sdm + offs_d[None, :] * sdd, mask=io_ok, other=0.0)
    k_base = K + b_idx * skb + kvh * skh
    v_base = V + b_idx * svb + kvh * svh
    slope2 = 0.0
    rb_base = RELB + h * (2 * rmax + 1)  # this head\'s bias table and its gradient
    db_base = DRELB + h * (2 * rmax + 1)
    if HAS_ALIBI:
        slope2 = tl.load(SLOPES + h)
    a, b = row_bounds(rows, NK, window, dil, nbhd, gw, CAUSAL, HAS_WINDOW, NEIGHBOR, GRID2D)
    lo, full_lo, full_hi, hi = key_ranges(a, b, row_ok, NK, BLOCK_N, not DILATED and not BLOCK_SPARSE and not GRID2D)
    stat = pid_bh * NQ + rows
    lse2, delta, logn = _row_stats(LSE, AUX, DELTA, stat, row_ok, SCORE)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    if SCORE == CLIPPED:
        _dq, delta = _dq_sweep(dq, delta * 0.0, q, do, k_base, v_base, skn, skd, svn, svd, rows, offs_n, offs_d, d_ok, a,
                               b, NK, dil, gw, BMASK, nbq, nbk, bq, bk, TILES, n_tiles, pid_m, slope2, rb_base, db_base,
                               rmax, qk_scale, sig_b2,
                               cap,
                               czeta, gamma, power, lse2, delta, logn, lo, full_lo, full_hi, hi, SCORE, STATS_PASS,
                               DILATED, GRID2D,
                               BLOCK_SPARSE, HAS_ALIBI, HAS_RELB, PRECISION, FAST_APPROX, BLOCK_N, PAD_D)
        tl.store(DELTA + stat, delta, mask=row_ok)
    dq, _d = _dq_sweep(dq, delta, q, do, k_base, v_base, skn, skd, svn, svd, rows, offs_n, offs_d, d_ok, a,
                       b, NK, dil, gw, BMASK, nbq, nbk, bq, bk, TILES, n_tiles, pid_m, slope2, rb_base, db_base, rmax,
                       qk_scale, sig_b2, cap,
                       czeta, gamma, power, lse2, delta, logn, lo, full_lo, full_hi, hi, SCORE, WEIGHTED_PASS,
                       DILATED, GRID2D, BLOCK_SPARSE, HAS_ALIBI, HAS_RELB, PRECISION, FAST_APPROX, BLOCK_N, PAD_D)
    tl.store(DQ + b_idx * sgb + h * sgh + rows[:, None] * sgm + offs_d[None, :] * sgd,
             (dq * scale).to(DQ.dtype.element_ty), mask=io_ok)


@triton.jit
def _dkdv_tile(dk, dv, k, v, q_base, do_base, sqm, sqd, sdm, sdd, stat_base, LSE, AUX, DELTA, start_m, offs_m, offs_d,
               d_ok, cols, NQ, NK, window, dil, nbhd, gw, BMASK, nbq, nbk, bq, bk, slope2, rb_base, rmax,
               qk_scale, sig_b2, cap, czeta,
               gamma,
               power, SCORE: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
               NEIGHBOR: tl.constexpr, DILATED: tl.constexpr, GRID2D: tl.constexpr, BLOCK_SPARSE: tl.constexpr,
               HAS_ALIBI: tl.constexpr, HAS_RELB: tl.constexpr,
               PRECISION: tl.constexpr, FAST_APPROX: tl.constexpr, PAD_D: tl.constexpr):
    """One query tile against this program's key tile, transposed: (keys, queries)."""
    rows = start_m + offs_m
    row_ok = rows < NQ
    q = load_tile(q_base + rows[:, None] * sqm + offs_d[None, :] * sqd, row_ok[:, None], d_ok[None, :], MASKED, PAD_D)
    do = load_tile(do_base + rows[:, None] * sdm + offs_d[None, :] * sdd, row_ok[:, None], d_ok[None, :], MASKED,
                   PAD_D)
    keep = cols[:, None] >= 0
    if MASKED:
        a, b = row_bounds(rows, NK, window, dil, nbhd, gw, CAUSAL, HAS_WINDOW, NEIGHBOR, GRID2D)
        keep = element_mask(rows[None, :], cols[:, None], a[None, :], b[None, :], dil, gw, BMASK, nbq, nbk, bq, bk,
                            DILATED, GRID2D, BLOCK_SPARSE) & row_ok[None, :]
    lse2, delta, logn = _row_stats(LSE, AUX, DELTA, stat_base + rows, row_ok, SCORE)
    s2 = tl.dot(k, tl.trans(q), input_precision=PRECISION) * qk_scale
    if HAS_ALIBI:
        s2 = s2 - slope2 * tl.abs(rows[None, :] - cols[:, None]).to(tl.float32)
    if HAS_RELB:
        s2 = s2 + tl.load(rb_base + rel_index(rows[None, :], cols[:, None], rmax))
    dp = tl.dot(v, tl.trans(do), input_precision=PRECISION)
    w, ds = weights_and_grad(s2, keep, dp, lse2[None, :], delta[None, :], logn[None, :], sig_b2, cap,
                             czeta, gamma, power, SCORE, MASKED, FAST_APPROX)
    dv += tl.dot(w.to(do.dtype), do, input_precision=PRECISION)
    dk += tl.dot(ds.to(q.dtype), q, input_precision=PRECISION)
    return dk, dv


@triton.jit
def query_ranges(c0, c1, NQ, NK, window, dil, nbhd, gw, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
                 NEIGHBOR: tl.constexpr, GRID2D: tl.constexpr, BLOCK_M: tl.constexpr, SPLIT: tl.constexpr):
    """(lo, full_lo, full_hi, hi) over query rows for keys [c0, c1]: rows in
    [lo, hi) may see them, rows in [full_lo, full_hi) see all of them."""
    lo = c0 * 0
    hi = c0 * 0 + NQ
    if CAUSAL:
        lo = tl.maximum(lo, c0)
    if HAS_WINDOW:
        lo = tl.maximum(lo, c0 - window)
        hi = tl.minimum(hi, c1 + window + 1)
    if NEIGHBOR:  # a query's neighbours lie within (nbhd - 1) * dil of it (Nq == Nk), per axis in 2D
        if GRID2D:  # the image rows within that many rows of the keys' rows
            lo = tl.maximum(lo, (c0 // gw - (nbhd - 1) * dil) * gw)
            hi = tl.minimum(hi, (c1 // gw + (nbhd - 1) * dil + 1) * gw)
        else:
            lo = tl.maximum(lo, c0 - (nbhd - 1) * dil)
            hi = tl.minimum(hi, c1 + (nbhd - 1) * dil + 1)
    lo = (lo // BLOCK_M) * BLOCK_M
    full_lo = hi
    full_hi = hi
    if SPLIT:  # monotone bands only: rows with b_i >= c1 and a_i <= c0, all in range
        f_lo = c0 * 0
        f_hi = c0 * 0 + NQ
        if CAUSAL:
            f_lo = tl.maximum(f_lo, c1)
        if HAS_WINDOW:
            f_lo = tl.maximum(f_lo, c1 - window)
            f_hi = tl.minimum(f_hi, c0 + window + 1)
        f_lo = tl.maximum(((f_lo + BLOCK_M - 1) // BLOCK_M) * BLOCK_M, lo)
        f_hi = tl.minimum((f_hi // BLOCK_M) * BLOCK_M, hi)
        ok = (f_hi > f_lo) & (c1 < NK)
        full_lo = tl.where(ok, f_lo, hi)
        full_hi = tl.where(ok, f_hi, hi)
    return lo, full_lo, full_hi, hi


@triton.jit
def _flash_bwd_dkdv(
    Q, K, V, DO, DK, DV, LSE, AUX, DELTA, SLOPES, RELB, BMASK, TILES,
    sqb, sqh, sqm, sqd, skb, skh, skn, skd, svb, svh, svn, svd, sdb, sdh, sdm, sdd,
    skgb, skgh, skgn, skgd, svgb, svgh, svgn, svgd,
    H, HKV, NQ, NK, scale, qk_scale, sig_b2, cap, czeta, gamma, power, window, dil, nbhd, gw, nbq, nbk, bq, bk,
    n_tiles, rmax,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, PAD_D: tl.constexpr, SCORE: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, NEIGHBOR: tl.constexpr, DILATED: tl.constexpr, GRID2D: tl.constexpr,
    BLOCK_SPARSE: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_RELB: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr, FAST_APPROX: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b_idx = pid_bh // HKV
    kvh = pid_bh % HKV
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM  # BLOCK_D pads a head dim that is not a power of two
    col_ok = cols < NK
    io_ok = col_ok[:, None] & d_ok[None, :]
    k = tl.load(K + b_idx * skb + kvh * skh + cols[:, None] * skn + offs_d[None, :] * skd, mask=io_ok, other=0.0)
    v = tl.load(V + b_idx * svb + kvh * svh + cols[:, None] * svn + offs_d[None, :] * svd, mask=io_ok, other=0.0)
    c0 = pid_n * BLOCK_N
    c1 = c0 + BLOCK_N - 1
    lo, full_lo, full_hi, hi = query_ranges(c0, c1, NQ, NK, window, dil, nbhd, gw, CAUSAL, HAS_WINDOW, NEIGHBOR,
                                            GRID2D, BLOCK_M,
                                            not DILATED and not BLOCK_SPARSE and not NEIGHBOR)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    for g in range(0, GROUP):
        h = kvh * GROUP + g
        q_base = Q + b_idx * sqb + h * sqh
        do_base = DO + b_idx * sdb + h * sdh
        stat_base = (b_idx * H + h) * NQ
        slope2 = 0.0
        rb_base = RELB + h * (2 * rmax + 1)  # this head's bias table (dBias is the dQ kernel's)
        if HAS_ALIBI:
            slope2 = tl.load(SLOPES + h)
        if BLOCK_SPARSE:
            row = TILES + pid_n * (n_tiles + 1)
            for t in range(0, tl.load(row)):
                start_m = tl.load(row + 1 + t) * BLOCK_M
                dk, dv = _dkdv_tile(dk, dv, k, v, q_base, do_base, sqm, sqd, sdm, sdd, stat_base, LSE, AUX, DELTA,
                                    start_m, offs_m, offs_d, d_ok, cols, NQ, NK, window, dil, nbhd, gw, BMASK, nbq, nbk,
                                    bq, bk,
                                    slope2, rb_base, rmax, qk_scale, sig_b2, cap, czeta, gamma, power,
                                    SCORE, True, CAUSAL,
                                    HAS_WINDOW, NEIGHBOR, DILATED, GRID2D, BLOCK_SPARSE, HAS_ALIBI, HAS_RELB, PRECISION,
                                    FAST_APPROX, PAD_D)
        else:
            for start_m in range(lo, full_lo, BLOCK_M):
                dk, dv = _dkdv_tile(dk, dv, k, v, q_base, do_base, sqm, sqd, sdm, sdd, stat_base, LSE, AUX, DELTA,
                                    start_m, offs_m, offs_d, d_ok, cols, NQ, NK, window, dil, nbhd, gw, BMASK, nbq, nbk,
                                    bq, bk,
                                    slope2, rb_base, rmax, qk_scale, sig_b2, cap, czeta, gamma, power,
                                    SCORE, True, CAUSAL,
                                    HAS_WINDOW, NEIGHBOR, DILATED, GRID2D, BLOCK_SPARSE, HAS_ALIBI, HAS_RELB, PRECISION,
                                    FAST_APPROX, PAD_D)
            for start_m in range(full_lo, full_hi, BLOCK_M):
                dk, dv = _dkdv_tile(dk, dv, k, v, q_base, do_base, sqm, sqd, sdm, sdd, stat_base, LSE, AUX, DELTA,
                                    start_m, offs_m, offs_d, d_ok, cols, NQ, NK, window, dil, nbhd, gw, BMASK, nbq, nbk,
                                    bq, bk,
                                    slope2, rb_base, rmax, qk_scale, sig_b2, cap, czeta, gamma, power,
                                    SCORE, False, CAUSAL,
                                    HAS_WINDOW, NEIGHBOR, DILATED, GRID2D, BLOCK_SPARSE, HAS_ALIBI, HAS_RELB, PRECISION,
                                    FAST_APPROX, PAD_D)
            for start_m in range(full_hi, hi, BLOCK_M):
                dk, dv = _dkdv_tile(dk, dv, k, v, q_base, do_base, sqm, sqd, sdm, sdd, stat_base, LSE, AUX, DELTA,
                                    start_m, offs_m, offs_d, d_ok, cols, NQ, NK, window, dil, nbhd, gw, BMASK, nbq, nbk,
                                    bq, bk,
                                    slope2, rb_base, rmax, qk_scale, sig_b2, cap, czeta, gamma, power,
                                    SCORE, True, CAUSAL,
                                    HAS_WINDOW, NEIGHBOR, DILATED, GRID2D, BLOCK_SPARSE, HAS_ALIBI, HAS_RELB, PRECISION,
                                    FAST_APPROX, PAD_D)
    tl.store(DK + b_idx * skgb + kvh * skgh + cols[:, None] * skgn + offs_d[None, :] * skgd,
             (dk * scale).to(DK.dtype.element_ty), mask=io_ok)
    tl.store(DV + b_idx * svgb + kvh * svgh + cols[:, None] * svgn + offs_d[None, :] * svgd,
             dv.to(DV.dtype.element_ty), mask=io_ok)


def backward(do, q, k, v, out, lse, aux, spec: Spec, alibi_slopes=None, block=None, rel_bias=None):
    """(dq, dk, dv, d rel_bias or None) in the inputs' dtypes, from the forward's out, lse, aux."""
    bsz, h, nq, d = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    score = SCORE_IDS[spec.score]
    if spec.score in ("sigmoid", "clipped"):  # none / computed by the dQ kernel
        delta = torch.zeros(bsz, h, nq, device=q.device, dtype=torch.float32)
    else:
        delta = row_dot(do, out)
    dq, dk, dv = (torch.empty(t.shape, device=t.device, dtype=t.dtype) for t in (q, k, v))
    slopes = (alibi_slopes.to(device=q.device, dtype=torch.float32) * LOG2E).contiguous() \
        if alibi_slopes is not None else delta
    scale, _ = spec.resolved(nk, d)
    sargs = score_args(spec, nk, d)
    kv_cfg, q_cfg = bwd_config(d, spec.masked)
    if block is not None:
        kv_cfg, q_cfg = (*block, *kv_cfg[2:]), (*block, *q_cfg[2:])
    relb, rmax = rel_bias_args(rel_bias, delta)
    drelb = torch.zeros(relb.shape, device=q.device, dtype=torch.float32) if rel_bias is not None else delta
    common = dict(GROUP=h // hkv, **head_dim_args(d), SCORE=score, HAS_ALIBI=alibi_slopes is not None,
                  HAS_RELB=rel_bias is not None, rmax=rmax,
                  PRECISION=dot_precision(q.dtype), FAST_APPROX=fast_approx(q.dtype))
    strides = (*q.stride(), *k.stride(), *v.stride(), *do.stride())

    def run_dq(cfg):
        bm, bn, warps, stages = cfg
        bmask, tiles, margs, flags = mask_args(spec, nq, nk, bm, bn, q.device)
        _flash_bwd_dq[(triton.cdiv(nq, bm), bsz * h)](
            q, k, v, do, dq, lse, aux, delta, slopes, relb, drelb, bmask, tiles, *strides, *dq.stride(),
            h, nq, nk, scale, **sargs, **margs, **flags, **common, BLOCK_M=bm, BLOCK_N=bn,
            num_warps=warps, num_stages=stages)

    def run_dkdv(cfg):
        bm, bn, warps, stages = cfg
        bmask, tiles, margs, flags = mask_args(spec, nq, nk, bm, bn, q.device, transpose=True)
        _flash_bwd_dkdv[(triton.cdiv(nk, bn), bsz * hkv)](
            q, k, v, do, dk, dv, lse, aux, delta, slopes, relb, bmask, tiles, *strides, *dk.stride(), *dv.stride(),
            h, hkv, nq, nk, scale, **sargs, **margs, **flags, **common, BLOCK_M=bm, BLOCK_N=bn,
            num_warps=warps, num_stages=stages)

    launch_fitting(("dq", d, q.dtype), q_cfg, smaller, run_dq)  # first: clipped's D' is written here
    launch_fitting(("kv", d, q.dtype), kv_cfg, smaller, run_dkdv)
    return dq, dk, dv, (drelb.to(rel_bias.dtype) if rel_bias is not None else None)
