"""Lean Attention (Sanovar et al. 2024, catalog S25): stream-K decode attention.

Flash-decoding (``split.py``) gives every (sequence, KV head) the same number of
KV splits, so ragged batches leave programs idle or overloaded. Lean Attention
instead treats the whole decode step as one iteration space: every output tile
(sequence b, KV head g; all its query rows stacked) needs ``ceil(len_b / N)``
key blocks ("LeanTiles"), the tiles are laid end to end, and each of ``P``
programs takes an equal contiguous share, ``[p T / P, (p + 1) T / P)`` of the
T blocks, whatever tiles it spans. A program that crosses a tile boundary
closes one partial (out, lse) and opens the next. The softmax rescaling is an
associative reduction, so the partials of each tile merge exactly:

  lse = log sum_s exp(lse_s),   out = sum_s exp(lse_s - lse) out_s.

Segment ids are ``p + t`` (program, tile): along the iteration space p and t
never decrease and one of them grows at each new segment, so ids are unique
and a tile's partials are the ids ``p + t`` for the programs p covering it.
Every quantity comes from device tensors (no host sync on the lengths); each
program also records how many key blocks it ran (``work``), which the tests
use to check the balance. Semantics: ``reference``.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from archgram.kernels.decode.split import WARPS, _programs, check_inputs
from archgram.kernels.launch import dot_precision, interpreting, pow2


@triton.jit
def _lean_partial(
    Q, K, V, LENS, TILES, PO, PLSE, WORK,
    sqb, sqh, sqm, sqd,
    skb, skh, skn, skd,
    svb, svh, svn, svd,
    HKV, NQ, NK, D, NTILES, NPROG, scale,
    GROUP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr, HAS_LENGTHS: tl.constexpr, SEARCH: tl.constexpr,
):
    p = tl.program_id(0)
    total = tl.load(TILES + NTILES).to(tl.int64)  # products below stay exact past 2^31
    lo = ((p * total) // NPROG).to(tl.int32)
    hi = (((p + 1) * total) // NPROG).to(tl.int32)
    # the tile holding block lo: the largest t with TILES[t] <= lo (binary search)
    a = lo * 0
    bnd = a + NTILES
    for _ in tl.static_range(SEARCH):
        mid = (a + bnd) // 2
        go = tl.load(TILES + mid) <= lo
        a = tl.where(go, mid, a)
        bnd = tl.where(go, bnd, mid)
    t = a
    rows = tl.arange(0, BLOCK_M)
    tq = rows % NQ
    row_ok = rows < GROUP * NQ
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    offs_n = tl.arange(0, BLOCK_N)
    tl.store(WORK + p, hi - lo)
    if lo == hi:  # an idle program (P > T) still owns segment p + t, read by no tile or as empty
        seg = (p + t) * (GROUP * NQ) + rows
        tl.store(PLSE + seg, tl.full([BLOCK_M], float("-inf"), dtype=tl.float32), mask=row_ok)
        tl.store(PO + seg[:, None] * D + offs_d[None, :], tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32),
                 mask=row_ok[:, None] & d_ok[None, :])
    while lo < hi:
        start = tl.load(TILES + t)
        seg_hi = tl.minimum(hi, tl.load(TILES + t + 1))
        b = t // HKV
        kvh = t % HKV
        if HAS_LENGTHS:
            length = tl.load(LENS + b)
        else:
            length = NK
        h = kvh * GROUP + rows // NQ
        q = tl.load(Q + b * sqb + h[:, None] * sqh + tq[:, None] * sqm + offs_d[None, :] * sqd,
                    mask=row_ok[:, None] & d_ok[None, :], other=0.0)
        qpos = length - NQ + tq
        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
        for blk in range(lo - start, seg_hi - start):
            cols = blk * BLOCK_N + offs_n
            col_ok = cols < length
            k = tl.load(K + b * skb + kvh * skh + cols[None, :] * skn + offs_d[:, None] * skd,
                        mask=col_ok[None, :] & d_ok[:, None], other=0.0)
            s = tl.dot(q, k, input_precision=PRECISION) * scale
            keep = col_ok[None, :] & (cols[None, :] <= qpos[:, None]) & row_ok[:, None]
            s = tl.where(keep, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.exp(m_i - m_safe)
            pr = tl.exp(s - m_safe[:, None])
            l_i = l_i * alpha + tl.sum(pr, 1)
            v = tl.load(V + b * svb + kvh * svh + cols[:, None] * svn + offs_d[None, :] * svd,
                        mask=col_ok[:, None] & d_ok[None, :], other=0.0)
            acc = acc * alpha[:, None] + tl.dot(pr.to(v.dtype), v, input_precision=PRECISION)
            m_i = m_new
        l_safe = tl.where(l_i == 0.0, 1.0, l_i)
        lse = tl.where(l_i == 0.0, float("-inf"), m_i + tl.log(l_safe))
        seg = (p + t) * (GROUP * NQ) + rows  # partials laid out (segment, row, D)
        tl.store(PLSE + seg, lse, mask=row_ok)
        tl.store(PO + seg[:, None] * D + offs_d[None, :], acc / l_safe[:, None], mask=row_ok[:, None] & d_ok[None, :])
        lo = seg_hi
        t += 1


@triton.jit
def _lean_reduce(PO, PLSE, TILES, Out, LSE, HKV, NQ, D, NTILES, NPROG, GROUP: tl.constexpr, BLOCK_D: tl.constexpr):
    pid = tl.program_id(0)  # one (tile, row)
    rows = GROUP * NQ
    t = pid // rows
    r = pid % rows
    total = tl.maximum(tl.load(TILES + NTILES), 1).to(tl.int64)
    s0 = tl.load(TILES + t).to(tl.int64)
    s1 = tl.load(TILES + t + 1).to(tl.int64)
    first = (((s0 + 1) * NPROG - 1) // total).to(tl.int32)  # the program running block s0
    last = ((s1 * NPROG - 1) // total).to(tl.int32)  # ... and block s1 - 1
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    m = tl.full([1], float("-inf"), dtype=tl.float32)
    den = tl.zeros([1], dtype=tl.float32)
    acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    for p in range(first, last + 1):
        seg = (p + t) * rows + r
        lse = tl.load(PLSE + seg + tl.zeros([1], dtype=tl.int32))
        part = tl.load(PO + seg * D + offs_d, mask=d_ok, other=0.0)
        m_new = tl.maximum(m, lse)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        old = tl.exp(m - m_safe)
        new = tl.exp(lse - m_safe)
        den = den * old + new
        acc = acc * tl.sum(old, 0) + part * tl.sum(new, 0)
        m = m_new
    b = t // HKV
    h = (t % HKV) * GROUP + r // NQ
    row = (b * HKV * GROUP + h) * NQ + r % NQ
    den_safe = tl.where(den == 0.0, 1.0, den)
    tl.store(Out + row * D + offs_d, (acc / tl.sum(den_safe, 0)).to(Out.dtype.element_ty), mask=d_ok)
    lse_out = tl.where(den == 0.0, float("-inf"), m + tl.log(den_safe))
    tl.store(LSE + row + tl.zeros([1], dtype=tl.int32), lse_out)


def tile_starts(lengths: torch.Tensor, hkv: int, block_n: int) -> torch.Tensor:
    """(B * Hkv + 1,) int32 prefix sums of the key blocks of each (sequence, KV head) tile."""
    blocks = ((lengths.to(torch.int64) + block_n - 1) // block_n).repeat_interleave(hkv)
    return torch.cat((blocks.new_zeros(1), blocks.cumsum(0))).to(torch.int32)


def stream_k_ranges(total: int, programs: int) -> list[tuple[int, int]]:
    """Program p's key-block range [p T / P, (p + 1) T / P) -- the kernel's rule."""
    return [(p * total // programs, (p + 1) * total // programs) for p in range(programs)]


def key_block() -> int:
    """Keys per block, the unit of work a program is handed (small under the
    CPU interpreter so tests cover many blocks cheaply)."""
    return 16 if interpreting() else 64


def lean_attention(q, k, v, lengths=None, *, scale: float | None = None, programs: int | None = None,
                   return_lse: bool = False, return_work: bool = False):
    """Softmax attention of the newest ``Nq`` tokens over each sequence's KV cache,
    stream-K partitioned (same contract as ``split.decode_attention``).
    ``programs`` forces P (tests); by default two waves of the device's SMs.
    ``return_work`` adds the key blocks each program ran (P,)."""
    check_inputs(q, k, v, lengths)
    bsz, h, nq, d = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    group = h // hkv
    if lengths is None:
        lengths = torch.full((bsz,), nk, device=q.device)
    lengths = lengths.to(device=q.device, dtype=torch.int32).contiguous()
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    block_n = key_block()
    tiles = tile_starts(lengths, hkv, block_n)
    ntiles = bsz * hkv
    nprog = programs or _programs(q.device)
    rows = group * nq
    part_o = torch.empty(nprog + ntiles, rows, d, device=q.device, dtype=torch.float32)
    part_lse = torch.empty(nprog + ntiles, rows, device=q.device, dtype=torch.float32)
    work = torch.empty(nprog, device=q.device, dtype=torch.int32)
    block_d = pow2(d)
    _lean_partial[(nprog,)](
        q, k, v, lengths, tiles, part_o, part_lse, work,
        *q.stride(), *k.stride(), *v.stride(),
        hkv, nq, nk, d, ntiles, nprog, scale,
        GROUP=group, BLOCK_M=pow2(rows), BLOCK_N=block_n, BLOCK_D=block_d,
        PRECISION=dot_precision(q.dtype), HAS_LENGTHS=True, SEARCH=max(1, ntiles.bit_length()),
        num_warps=1 if interpreting() else WARPS.get(block_d, 4), num_stages=1 if interpreting() else 2,
    )
    out = torch.empty(bsz, h, nq, d, device=q.device, dtype=q.dtype)
    lse = torch.empty(bsz, h, nq, device=q.device, dtype=torch.float32)
    _lean_reduce[(ntiles * rows,)](part_o, part_lse, tiles, out, lse, hkv, nq, d, ntiles, nprog,
                                   GROUP=group, BLOCK_D=block_d)
    result = (out, lse) if return_lse else (out,)
    return (*result, work) if return_work else (result[0] if len(result) == 1 else result)
