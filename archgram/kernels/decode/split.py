"""Split-KV decode attention in Triton (flash-decoding; Lean Attention, S25).

Decoding has one (or a few) query tokens per sequence, so the usual flash
grid (query blocks x heads) leaves most of the GPU idle. Here the cache axis
is split instead: program (s, b * Hkv + g) runs an online softmax over keys
[s * L, (s + 1) * L) of sequence b, for every query head of KV group g and
every query token at once (GQA rows stacked into one tile), and writes a
partial (out, lse). A second kernel merges the partials of each query row:

  lse = log sum_s exp(lse_s),   out = sum_s exp(lse_s - lse) out_s.

Splits past a sequence's length write lse = -inf and cost one launch slot, so
the grid depends only on the cache capacity (no host sync on the lengths).
Semantics: ``reference``.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from archgram.kernels.launch import dot_precision, interpreting, pow2, sm_count

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_HEAD_DIM = 256
MAX_ROWS = 128  # query heads per KV head x query tokens stacked in one tile
#: warps per head-dim tile (BLOCK_D), default 4, for this kernel and lean.py's:
#: at 256 the 16 x 256 fp32 accumulator and the 64-key K, V tiles spill 584 / 688
#: bytes a thread on 4 warps and 0 / 28 on 8 (sm_90, Triton 3.6:
#: experiments/kernels/tile_resources.md)
WARPS = {256: 8}


@triton.jit
def _decode_partial(
    Q, K, V, LENS, PO, PLSE,
    sqb, sqh, sqm, sqd,
    skb, skh, skn, skd,
    svb, svh, svn, svd,
    HKV, NQ, NK, D, SPLIT, NSPLIT, scale,
    GROUP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr, HAS_LENGTHS: tl.constexpr,
):
    pid_s = tl.program_id(0)
    pid_bg = tl.program_id(1)
    b = pid_bg // HKV
    kvh = pid_bg % HKV
    if HAS_LENGTHS:
        length = tl.load(LENS + b)
    else:
        length = NK
    rows = tl.arange(0, BLOCK_M)
    t = rows % NQ
    h = kvh * GROUP + rows // NQ
    row_ok = rows < GROUP * NQ
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    q = tl.load(Q + b * sqb + h[:, None] * sqh + t[:, None] * sqm + offs_d[None, :] * sqd,
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    qpos = length - NQ + t  # the query's own position: it sees keys <= qpos
    k_base = K + b * skb + kvh * skh
    v_base = V + b * svb + kvh * svh
    offs_n = tl.arange(0, BLOCK_N)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    lo = pid_s * SPLIT
    hi = tl.minimum(lo + SPLIT, length)
    for start in range(lo, hi, BLOCK_N):
        cols = start + offs_n
        col_ok = cols < hi
        k = tl.load(k_base + cols[None, :] * skn + offs_d[:, None] * skd, mask=col_ok[None, :] & d_ok[:, None], other=0.0)
        s = tl.dot(q, k, input_precision=PRECISION) * scale
        keep = col_ok[None, :] & (cols[None, :] <= qpos[:, None]) & row_ok[:, None]
        s = tl.where(keep, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m_i - m_safe)
        p = tl.exp(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + cols[:, None] * svn + offs_d[None, :] * svd, mask=col_ok[:, None] & d_ok[None, :], other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    lse = tl.where(l_i == 0.0, float("-inf"), m_i + tl.log(l_safe))
    # partials laid out (B, H, NQ, NSPLIT, D) and (B, H, NQ, NSPLIT)
    H = HKV * GROUP
    idx = ((b * H + h) * NQ + t) * NSPLIT + pid_s
    tl.store(PLSE + idx, lse, mask=row_ok)
    tl.store(PO + idx[:, None] * D + offs_d[None, :], acc / l_safe[:, None], mask=row_ok[:, None] & d_ok[None, :])


@triton.jit
def _decode_reduce(PO, PLSE, Out, LSE, D, NSPLIT, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr):
    row = tl.program_id(0)  # one (b, h, t)
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    s_ok = offs_s < NSPLIT
    d_ok = offs_d < D
    lse = tl.load(PLSE + row * NSPLIT + offs_s, mask=s_ok, other=float("-inf"))
    m = tl.max(lse, 0)
    m_safe = tl.where(m == float("-inf"), 0.0, m)
    w = tl.exp(lse - m_safe)  # empty splits: exp(-inf) = 0
    total = tl.sum(w, 0)
    parts = tl.load(PO + (row * NSPLIT + offs_s)[:, None] * D + offs_d[None, :], mask=s_ok[:, None] & d_ok[None, :], other=0.0)
    total_safe = tl.where(total == 0.0, 1.0, total)
    out = tl.sum(parts * w[:, None], 0) / total_safe
    tl.store(Out + row * D + offs_d, out.to(Out.dtype.element_ty), mask=d_ok)
    tl.store(LSE + row, tl.where(total == 0.0, float("-inf"), m_safe + tl.log(total_safe)))


def _programs(device: torch.device) -> int:
    """How many programs keep the device busy (two waves of its SMs; 4 on the CPU)."""
    return 2 * sm_count(device) if device.type == "cuda" else 4


def plan(nk: int, groups: int, block_n: int, device, splits: int | None = None) -> tuple[int, int]:
    """(split length, number of splits): enough splits to fill the device, each a
    whole number of key blocks."""
    blocks = triton.cdiv(max(nk, 1), block_n)
    want = splits or triton.cdiv(_programs(device), max(groups, 1))
    n_split = max(1, min(want, blocks))
    split = triton.cdiv(blocks, n_split) * block_n
    return split, triton.cdiv(max(nk, 1), split)


def check_inputs(q, k, v, lengths) -> None:
    """ValueError naming the first thing the kernel cannot take."""
    if q.dim() != 4 or k.dim() != 4 or k.shape != v.shape or k.shape[0] != q.shape[0] or k.shape[3] != q.shape[3]:
        raise ValueError(f"decode wants q (B, H, Nq, D), k = v (B, Hkv, Nk, D); got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"{q.shape[1]} query heads do not group over {k.shape[1]} KV heads")
    if q.dtype not in DTYPES or not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"unsupported dtypes {q.dtype}, {k.dtype}, {v.dtype}")
    if q.shape[-1] > MAX_HEAD_DIM or (q.shape[1] // k.shape[1]) * q.shape[2] > MAX_ROWS:
        raise ValueError(f"head dim {q.shape[-1]} > {MAX_HEAD_DIM} or (H / Hkv) * Nq > {MAX_ROWS}")
    if lengths is not None and (lengths.shape != (q.shape[0],) or lengths.dtype.is_floating_point):
        raise ValueError(f"lengths must be an integer tensor (B,) = ({q.shape[0]},), got {tuple(lengths.shape)} {lengths.dtype}")


def decode_attention(q, k, v, lengths=None, *, scale: float | None = None, splits: int | None = None,
                     return_lse: bool = False):
    """Softmax attention of the newest ``Nq`` tokens over each sequence's KV cache.

    q (B, H, Nq, D); k, v (B, Hkv, Nk, D) with the first ``lengths[b]`` slots of
    sequence b filled (None: all Nk). Returns out (B, H, Nq, D) in q's dtype
    (and lse (B, H, Nq) float32 with ``return_lse``). ``splits`` forces the
    number of KV splits (tests); by default enough to fill the device."""
    check_inputs(q, k, v, lengths)
    bsz, h, nq, d = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    group = h // hkv
    has_lengths = lengths is not None
    if has_lengths:
        lengths = lengths.to(device=q.device, dtype=torch.int32).contiguous()
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    block_n = 16 if interpreting() else 64
    split, n_split = plan(nk, bsz * hkv, block_n, q.device, splits)
    part_o = torch.empty(bsz, h, nq, n_split, d, device=q.device, dtype=torch.float32)
    part_lse = torch.empty(bsz, h, nq, n_split, device=q.device, dtype=torch.float32)
    block_d = pow2(d)
    _decode_partial[(n_split, bsz * hkv)](
        q, k, v, lengths if has_lengths else part_lse, part_o, part_lse,
        *q.stride(), *k.stride(), *v.stride(),
        hkv, nq, nk, d, split, n_split, scale,
        GROUP=group, BLOCK_M=pow2(group * nq), BLOCK_N=block_n, BLOCK_D=block_d,
        PRECISION=dot_precision(q.dtype), HAS_LENGTHS=has_lengths,
        num_warps=1 if interpreting() else WARPS.get(block_d, 4), num_stages=1 if interpreting() else 2,
    )
    out = torch.empty(bsz, h, nq, d, device=q.device, dtype=q.dtype)
    lse = torch.empty(bsz, h, nq, device=q.device, dtype=torch.float32)
    _decode_reduce[(bsz * h * nq,)](part_o, part_lse, out, lse, d, n_split,
                                     BLOCK_S=pow2(n_split, 2), BLOCK_D=block_d)
    return (out, lse) if return_lse else out
