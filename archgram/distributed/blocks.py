"""Block attention with log-sum-exp outputs, and merging of partial results.

Context parallelism splits one attention into blocks of queries x keys held on
different ranks. Each block returns (out, lse) in float32; ``merge`` combines
partial results exactly: o = sum_i exp(lse_i - lse) o_i, lse = logaddexp(lse_i).

A shard of the sequence is a tuple of *segments* (start, length) in global token
positions, in local order: one segment for a contiguous shard, two for zig-zag.
Causal masking between two segments is decided from their positions: wholly
visible, wholly hidden (skipped), same origin (the kernel's causal mask), or a
partial overlap (explicit mask, uneven shards only).

On CUDA a block runs the Triton flash forward kernel where it applies
(archgram.kernels.flash.forward.flash_forward returns (out, lse)); elsewhere,
and for explicit masks, float32 torch math.
"""
from __future__ import annotations

import torch

Segment = tuple[int, int]  # (global start, length)

FULL, HIDDEN, DIAGONAL, PARTIAL = "full", "hidden", "diagonal", "partial"


def relation(q_seg: Segment, k_seg: Segment, causal: bool) -> str:
    """How the queries of ``q_seg`` see the keys of ``k_seg``."""
    (qs, ql), (ks, kl) = q_seg, k_seg
    if not causal or ks + kl - 1 <= qs:
        return FULL
    if ks > qs + ql - 1:
        return HIDDEN
    return DIAGONAL if qs == ks else PARTIAL


def _flash_ok(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether the flash forward kernel serves this block (the kernels' own rule:
    CUDA, kernels enabled, dtype, any head dim from 16 to 256)."""
    from archgram.kernels.flash import dispatch

    return dispatch.supported(q, k, v)


def expand_kv(kv: torch.Tensor, heads: int) -> torch.Tensor:
    """Repeat key/value heads for the query heads sharing them (GQA/MQA)."""
    return kv if kv.shape[1] == heads else kv.repeat_interleave(heads // kv.shape[1], dim=1)


def visible_mask(q_seg: Segment, k_seg: Segment, causal: bool, device) -> torch.Tensor | None:
    """(nq, nk) bool of visible keys for a partial block; None when all are visible."""
    rel = relation(q_seg, k_seg, causal)
    if rel == FULL:
        return None
    qp = torch.arange(q_seg[0], q_seg[0] + q_seg[1], device=device)
    kp = torch.arange(k_seg[0], k_seg[0] + k_seg[1], device=device)
    return qp[:, None] >= kp[None, :]


def math_block(q, k, v, mask: torch.Tensor | None, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, lse) in float32 by materialising the logits; fully hidden rows give 0, -inf."""
    h = q.shape[1]
    s = torch.matmul(q.float(), expand_kv(k, h).float().transpose(-1, -2)) * scale
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - lse[..., None]).nan_to_num(0.0)
    return torch.matmul(p, expand_kv(v, h).float()), lse


def block(q, k, v, q_seg: Segment, k_seg: Segment, causal: bool, scale: float):
    """(out float32, lse float32) of queries ``q`` (segment q_seg) on keys ``k``/``v``
    (segment k_seg), or None when causality hides every key."""
    rel = relation(q_seg, k_seg, causal)
    if rel == HIDDEN:
        return None
    if rel != PARTIAL and _flash_ok(q, k, v):
        from archgram.kernels.flash.forward import flash_forward

        out, lse = flash_forward(q.contiguous(), k.contiguous(), v.contiguous(), causal=rel == DIAGONAL, scale=scale)
        return out.float(), lse
    mask = visible_mask(q_seg, k_seg, causal, q.device) if rel != FULL else None
    return math_block(q, k, v, mask, scale)


def merge(out: torch.Tensor, lse: torch.Tensor, o: torch.Tensor, l: torch.Tensor):  # noqa: E741
    """Combine two partial softmax results over disjoint key sets (float32)."""
    new = torch.logaddexp(lse, l)
    safe = torch.where(torch.isinf(new), torch.zeros_like(new), new)
    return out * torch.exp(lse - safe)[..., None] + o * torch.exp(l - safe)[..., None], new


def attend_segments(q, k, v, q_segs, k_segs, causal: bool, scale: float, acc=None):
    """Accumulate the attention of local queries (segments ``q_segs``) on one key
    block (segments ``k_segs``) into ``acc`` = (out, lse), float32; returns it."""
    b, h, nq, d = q.shape
    if acc is None:
        acc = (torch.zeros(b, h, nq, v.shape[-1], dtype=torch.float32, device=q.device),
               torch.full((b, h, nq), float("-inf"), dtype=torch.float32, device=q.device))
    out, lse = acc
    qo = 0
    for qseg in q_segs:
        ko = 0
        for kseg in k_segs:
            r = block(q[:, :, qo:qo + qseg[1]], k[:, :, ko:ko + kseg[1]], v[:, :, ko:ko + kseg[1]], qseg, kseg, causal, scale)
            if r is not None:
                rows = slice(qo, qo + qseg[1])
                out[:, :, rows], lse[:, :, rows] = merge(out[:, :, rows], lse[:, :, rows], *r)
            ko += kseg[1]
        qo += qseg[1]
    return out, lse


def grad_segments(q, k, v, do, out, lse, q_segs, k_segs, causal: bool, scale: float, dq, dk, dv) -> None:
    """Flash-attention backward of one key block in float32 torch math, given the
    final (out, lse) of the local queries; adds into dq, dk, dv (float32)."""
    h, hkv = q.shape[1], k.shape[1]
    delta = (do.float() * out).sum(-1)  # (B, H, nq)
    qo = 0
    for qseg in q_segs:
        rows = slice(qo, qo + qseg[1])
        ko = 0
        for kseg in k_segs:
            cols = slice(ko, ko + kseg[1])
            ko += kseg[1]
            rel = relation(qseg, kseg, causal)
            if rel == HIDDEN:
                continue
            qb, dob = q[:, :, rows].float(), do[:, :, rows].float()
            kb, vb = expand_kv(k[:, :, cols], h).float(), expand_kv(v[:, :, cols], h).float()
            s = torch.matmul(qb, kb.transpose(-1, -2)) * scale
            mask = visible_mask(qseg, kseg, causal, q.device) if rel != FULL else None
            if mask is not None:
                s = s.masked_fill(~mask, float("-inf"))
            p = torch.exp(s - lse[:, :, rows, None]).nan_to_num(0.0)
            ds = p * (torch.matmul(dob, vb.transpose(-1, -2)) - delta[:, :, rows, None])
            dq[:, :, rows] += torch.matmul(ds, kb) * scale
            dkb = torch.matmul(ds.transpose(-1, -2), qb) * scale
            dvb = torch.matmul(p.transpose(-1, -2), dob)
            if hkv != h:  # fold query heads back onto the key/value head they share
                dkb = dkb.unflatten(1, (hkv, h // hkv)).sum(2)
                dvb = dvb.unflatten(1, (hkv, h // hkv)).sum(2)
            dk[:, :, cols] += dkb
            dv[:, :, cols] += dvb
        qo += qseg[1]
