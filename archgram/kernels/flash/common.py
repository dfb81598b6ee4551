"""Pieces shared by the forward and backward flash kernels: the per-row visible
key interval, the element mask, the score's weights and logit gradient, the
block-sparse tile lists, and the tile configurations.

Logits are kept in log2 units (s2 = s * log2(e), log2(e) folded into the scale
and the ALiBi slopes on the host) so every exponential is an ``exp2``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from archgram.kernels.flash.spec import SCORE_IDS
from archgram.kernels.launch import interpreting, pow2

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453

# The SCORE ids by name, numbered by ``spec.KERNEL_SCORES`` so host and kernels
# agree. @triton.jit code reads a global only if it is a ``tl.constexpr``
# instance (Triton rejects a plain int, annotated or not); the comparisons fold
# at compile time, so the names cost nothing.
SOFTMAX = tl.constexpr(SCORE_IDS["softmax"])
SIGMOID = tl.constexpr(SCORE_IDS["sigmoid"])
SOFTCAP = tl.constexpr(SCORE_IDS["softcap"])
SOFTPLUS = tl.constexpr(SCORE_IDS["softplus"])
CLIPPED = tl.constexpr(SCORE_IDS["clipped"])

# The STAGE of a sweep over key tiles.
COUNT_PASS = tl.constexpr(0)  # softplus: count each row's visible keys (mask only, no loads)
STATS_PASS = tl.constexpr(1)  # clipped: the final normaliser (forward) or D' (backward) before the weights
WEIGHTED_PASS = tl.constexpr(2)  # accumulate the output (forward) or dQ (backward)


@triton.jit
def _tanh(x, FAST_APPROX: tl.constexpr):
    if FAST_APPROX:  # one MUFU op; ~2^-11 relative error, used for fp16/bf16 inputs only
        return tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=f,f", [x], dtype=tl.float32,
                                         is_pure=True, pack=1)
    else:
        return 2.0 / (1.0 + tl.exp2(-2.0 * 1.4426950408889634 * x)) - 1.0


@triton.jit
def _log2(x, FAST_APPROX: tl.constexpr):
    """tl.log2 compiles to libdevice's ~20-instruction polynomial; lg2.approx is
    one MUFU op (abs. error ~2^-22), used for fp16/bf16 inputs."""
    if FAST_APPROX:
        return tl.inline_asm_elementwise("lg2.approx.f32 $0, $1;", "=f,f", [x], dtype=tl.float32,
                                         is_pure=True, pack=1)
    else:
        return tl.log2(x)


@triton.jit
def axis_bounds(x, n, size, dil):
    """NATTEN's 1D rule on an axis of n positions: first and last of the ``size``
    members of x's dilation group centred on x, shifted inward at the ends (the
    last clipped to n - 1, so the dilation test must still apply)."""
    g = x % dil
    length = (n - g + dil - 1) // dil
    start = tl.maximum(x // dil - size // 2, 0)
    start = tl.minimum(start, tl.maximum(length - size, 0))
    return g + start * dil, tl.minimum(g + (start + size - 1) * dil, n - 1)


@triton.jit
def row_bounds(rows, NK, window, dil, nbhd, gw,
               CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, NEIGHBOR: tl.constexpr, GRID2D: tl.constexpr):
    """First and last key (a_i, b_i) each row may see; a_i > b_i: none. Both
    nondecreasing in i unless a dilated neighborhood interleaves groups. 2D
    neighborhood on a grid of width gw: a = ar * gw + ac, b = br * gw + bc
    from the per-axis bounds (exact, so ``element_mask`` decodes them back)."""
    a = rows * 0
    b = rows * 0 + (NK - 1)
    if NEIGHBOR:
        if GRID2D:
            ar, br = axis_bounds(rows // gw, NK // gw, nbhd, dil)
            ac, bc = axis_bounds(rows % gw, gw, nbhd, dil)
            a = ar * gw + ac
            b = br * gw + bc
        else:  # NATTEN 1D: `nbhd` members of i's dilation group, shifted inward at the ends
            a, b = axis_bounds(rows, NK, nbhd, dil)
    if HAS_WINDOW:
        a = tl.maximum(a, rows - window)
        b = tl.minimum(b, rows + window)
    if CAUSAL:
        b = tl.minimum(b, rows)
    return a, b


@triton.jit
def rel_index(r, c, rmax):
    """Column of the relative-bias table for (query r, key c): clip(c - r, -R, R) + R."""
    return tl.minimum(tl.maximum(c - r, -rmax), rmax) + rmax


@triton.jit
def element_mask(r, c, a, b, dil, gw, BMASK, nbq, nbk, bq, bk,
                 DILATED: tl.constexpr, GRID2D: tl.constexpr, BLOCK_SPARSE: tl.constexpr):
    """Visible (row r, key c) pairs; r, a, b and c broadcast to the tile (either
    orientation). GRID2D: per axis of the gw-wide grid, inside the decoded
    bounds and in r's dilation group."""
    if GRID2D:
        kr = c // gw
        kc = c % gw
        keep = (kr >= a // gw) & (kr <= b // gw) & (kc >= a % gw) & (kc <= b % gw)
        if DILATED:
            keep = keep & ((r // gw - kr) % dil == 0) & ((r % gw - kc) % dil == 0)
    else:
        keep = (c >= a) & (c <= b)
        if DILATED:
            keep = keep & ((r - c) % dil == 0)
    if BLOCK_SPARSE:
        rb = r // bq
        cb = c // bk
        bm = tl.load(BMASK + rb * nbk + cb, mask=(rb < nbq) & (cb < nbk), other=0)
        keep = keep & (bm != 0)
    return keep


@triton.jit
def _log2_1p(u):
    """log2(1 + u) for u in [0, 1] on the FMA pipes: u * P(u), P a degree-8
    Chebyshev fit of log2(1 + u) / u (relative error <= 1.4e-7 in fp32), which
    spares the transcendental unit a log2 per score."""
    p = 0.007395402127151254 * u - 0.04194500887819246
    p = p * u + 0.11183207383022187
    p = p * u - 0.19623895179384637
    p = p * u + 0.27522121226611657
    p = p * u - 0.35829906956891266
    p = p * u + 0.480678889587252
    p = p * u - 0.7213395131452158
    p = p * u + 1.4426949917298517
    return u * p


@triton.jit
def softplus_parts(s2, logn):
    """(softplus(x), sigmoid(x), x2) for x = log(N_i) * s, from s2 = s * log2(e),
    with one exp2: softplus(x) = max(x, 0) + ln(1 + e^-|x|)."""
    x2 = logn * s2
    u = tl.exp2(-tl.abs(x2))
    sp = 0.6931471805599453 * (tl.maximum(x2, 0.0) + _log2_1p(u))
    r = 1.0 / (1.0 + u)
    return sp, tl.where(x2 >= 0.0, r, u * r), x2


@triton.jit
def softplus_logit2(sp, x2, power, FAST_APPROX: tl.constexpr):
    """log2(softplus(x) ** power), finite for every finite x2 (far below zero
    softplus(x) = 2^x2 to fp32 precision, which would underflow): the softplus
    weights are a softmax over these logits, so they share its online max and
    stay in range when cast to fp16."""
    return power * tl.where(x2 < -20.0, x2, _log2(sp, FAST_APPROX))


@triton.jit
def sigmoid2(x2, FAST_APPROX: tl.constexpr):
    """sigmoid(x) from x2 = x * log2(e): one tanh.approx (1 MUFU op) for half
    precision inputs, exp2 and a division otherwise."""
    if FAST_APPROX:
        return 0.5 + 0.5 * _tanh(x2 * (0.5 * 0.6931471805599453), FAST_APPROX)
    else:
        return 1.0 / (1.0 + tl.exp2(-x2))


@triton.jit
def cap_logits(s2, cap, FAST_APPROX: tl.constexpr):
    """Soft-capped log2-unit logits and tanh(s / cap) (for the gradient)."""
    t = _tanh(s2 * (0.6931471805599453 / cap), FAST_APPROX)
    return (cap * 1.4426950408889634) * t, t


@triton.jit
def weights_and_grad(s2, keep, dp, lse2, delta, logn, sig_b2, cap, czeta, gamma, power,
                     SCORE: tl.constexpr, MASKED: tl.constexpr, FAST_APPROX: tl.constexpr):
    """Backward pieces of one tile: the weights w (for dV) and dL/ds (for dQ, dK),
    s the natural-unit logit after the bias. Row statistics come broadcast to
    the tile: lse2 (log2 units), delta (rowsum(dO * O), or D' for clipped),
    logn (softplus). dp = dO . v."""
    if SCORE == SIGMOID:
        w = sigmoid2(s2 + sig_b2, FAST_APPROX)
        if MASKED:
            w = tl.where(keep, w, 0.0)
        ds = dp * w * (1.0 - w)
    else:  # a softmax over (transformed) logits, normalised by lse2
        if SCORE == SOFTCAP:
            s2, t = cap_logits(s2, cap, FAST_APPROX)
        if SCORE == SOFTPLUS:  # softplus: logits log2(softplus(x) ** power), lse2 = log2 of their sum
            sp, sig, x2 = softplus_parts(s2, logn)
            s2 = softplus_logit2(sp, x2, power, FAST_APPROX)
        p = tl.exp2(s2 - lse2)
        if MASKED:
            p = tl.where(keep, p, 0.0)
        if SCORE == CLIPPED:  # clipped: w = clip(c p + gamma, 0, 1)
            y = czeta * p + gamma
            w = tl.minimum(tl.maximum(y, 0.0), 1.0)
            inside = (y >= 0.0) & (y <= 1.0)
            if MASKED:
                w = tl.where(keep, w, 0.0)
                inside = inside & keep
            ds = p * (tl.where(inside, czeta * dp, 0.0) - delta)
        else:
            w = p
            ds = p * (dp - delta)
        if SCORE == SOFTCAP:
            ds = ds * (1.0 - t * t)
        if SCORE == SOFTPLUS:  # chain rule through the transformed logit
            ds = tl.where(sp > 0.0, ds * power * sig * logn / sp, 0.0)
    return w, ds


def tile_lists(spec, nq: int, nk: int, bm: int, bn: int, device, transpose: bool = False):
    """Block-sparse schedule at kernel tiles (bm, bn): (indices, counts). Row r of
    ``indices`` lists, ascending and first, the key tiles (query tiles when
    ``transpose``) holding any visible pair of a visible token block; counts[r]
    how many. Tiles that causal / window exclude are dropped too."""
    bq, bk = spec.block
    mask = spec.block_mask.to(device=device, dtype=torch.int32)
    ps = torch.nn.functional.pad(mask.cumsum(0).cumsum(1), (1, 0, 1, 0))
    mt, nt = torch.arange(triton.cdiv(nq, bm), device=device), torch.arange(triton.cdiv(nk, bn), device=device)
    r0, r1 = mt * bm, torch.clamp((mt + 1) * bm, max=nq) - 1
    c0, c1 = nt * bn, torch.clamp((nt + 1) * bn, max=nk) - 1
    br0, br1, bc0, bc1 = r0 // bq, r1 // bq + 1, c0 // bk, c1 // bk + 1
    count = ps[br1][:, bc1] - ps[br0][:, bc1] - ps[br1][:, bc0] + ps[br0][:, bc0]
    any_ = count > 0
    if spec.causal:
        any_ &= c0[None, :] <= r1[:, None]
    if spec.window is not None:
        any_ &= (c0[None, :] <= r1[:, None] + spec.window) & (c1[None, :] >= r0[:, None] - spec.window)
    if transpose:
        any_ = any_.t()
    order = torch.argsort((~any_).to(torch.int8), dim=1, stable=True).to(torch.int32).contiguous()
    return order, any_.sum(1).to(torch.int32).contiguous()


#: Head dims the kernels serve: any integer in this range. A dim that is not a
#: power of two runs on a BLOCK_D = next-power-of-two tile whose extra columns
#: are masked on every load and store (zeros in, never written out), so q, k
#: and v are never copied to padded tensors.
MIN_HEAD_DIM, MAX_HEAD_DIM = 16, 256


def head_dim_args(d: int) -> dict:
    """The kernels' head-dim constexprs: HEAD_DIM = d, its power-of-two tile
    BLOCK_D, and PAD_D (whether the loads must mask columns d..BLOCK_D)."""
    block_d = pow2(d)
    return dict(HEAD_DIM=d, BLOCK_D=block_d, PAD_D=block_d != d)


@triton.jit
def load_tile(ptrs, n_ok, d_ok, CHECK_N: tl.constexpr, PAD_D: tl.constexpr):
    """A (tokens x dims) tile, zeros where out of range: ``n_ok`` (tokens) is
    applied when CHECK_N, ``d_ok`` (head-dim columns) when PAD_D; with neither,
    an unmasked load (the interior tiles of a power-of-two head dim)."""
    if CHECK_N:
        if PAD_D:
            x = tl.load(ptrs, mask=n_ok & d_ok, other=0.0)
        else:
            x = tl.load(ptrs, mask=n_ok, other=0.0)
    else:
        if PAD_D:
            x = tl.load(ptrs, mask=d_ok, other=0.0)
        else:
            x = tl.load(ptrs)
    return x


# (BLOCK_M, BLOCK_N, num_warps, num_stages) per (BLOCK_D, masked) for 2-byte
# inputs; "masked": causal, window, neighborhood or block-sparse, whose tiles
# are mostly partly visible or skipped, as opposed to full attention.
# BLOCK_D 64 and 128 were picked on an H100 (experiments/kernels/tune_flash.py);
# BLOCK_D 16 and 32 use the 64 row (smaller tiles of the same shape). BLOCK_D 256
# (head dims 129-256) is register-bound: a 64 x 256 fp32 accumulator alone is
# 128 registers a thread on 4 warps. FlexAttention's H100 default for head dim
# 256, (64, 32, 4, 3), spills ~2 KB a thread in our forward (Triton 3.6, sm_90:
# experiments/kernels/tile_resources.md), yet it is the fastest forward measured
# on an H100 (bench_flash --tiles, experiments/kernels/README.md "Head dims"):
# 5.81 ms full / 3.28 ms causal at 8 x 4096 x 16 heads, against 12.5 / 6.2 ms for
# the spill-free (64, 32, 8, 2) and 5.88 / 3.71 ms for FlexAttention. The backward
# keeps 32 x 32 tiles on 8 warps (28-36 bytes of spills; 64-row tiles spill
# 0.5-1.7 KB); it runs at 0.56-0.60x Flex's forward+backward there, untuned.
FWD_CONFIGS = {(64, False): (128, 128, 4, 3), (64, True): (64, 64, 4, 3),
               (128, False): (128, 128, 8, 3), (128, True): (128, 64, 8, 3),
               (256, False): (64, 32, 4, 3), (256, True): (64, 32, 4, 3)}
#: per (BLOCK_D, masked): (dK/dV kernel config, dQ kernel config)
BWD_CONFIGS = {(64, False): ((64, 64, 4, 3), (64, 64, 4, 2)), (64, True): ((64, 64, 4, 2), (64, 64, 4, 3)),
               (128, False): ((64, 128, 8, 2), (128, 64, 8, 3)), (128, True): ((64, 128, 8, 3), (128, 64, 8, 3)),
               (256, False): ((32, 32, 8, 2), (32, 32, 8, 2)), (256, True): ((32, 32, 8, 2), (32, 32, 8, 2))}

#: Shared memory one program may use on an H100 / H200 (227 KiB opt-in).
SMEM_BYTES = 227 * 1024


def smaller(cfg):
    """The next config to try when the compiler finds ``cfg`` too large for the
    GPU (``launch.launch_fitting``): fewer stages (down to 2), then the larger of
    BLOCK_M / BLOCK_N halved (down to 16), then one stage; None when nothing is
    left to shrink. The tables fit an H100 with 2-byte inputs; fp32 inputs double
    the tiles' bytes, a smaller GPU has less shared memory."""
    bm, bn, warps, stages = cfg
    if stages > 2:
        return bm, bn, warps, stages - 1
    if max(bm, bn) > 16:
        return (bm // 2, bn, warps, stages) if bm >= bn else (bm, bn // 2, warps, stages)
    return (bm, bn, warps, 1) if stages > 1 else None


def _tuned_key(d: int, masked: bool) -> tuple[int, bool]:
    """The table row of head dim d: its BLOCK_D, at least 64."""
    return max(64, pow2(d)), bool(masked)


def fwd_config(d: int, masked: bool = False) -> tuple[int, int, int, int]:
    if interpreting():
        return 16, 16, 1, 1
    return FWD_CONFIGS[_tuned_key(d, masked)]


def bwd_config(d: int, masked: bool = False):
    """((BLOCK_M, BLOCK_N, warps, stages) of the dK/dV kernel, the same of the dQ kernel)."""
    if interpreting():
        return (16, 16, 1, 1), (16, 16, 1, 1)
    return BWD_CONFIGS[_tuned_key(d, masked)]
