"""Hybrid context parallelism (USP, Fang & Zhao 2024): Ulysses inside groups,
ring across them (catalog row S14).

The W = R x U ranks form a mesh. Rank ``g * U + i`` is member i of Ulysses
group g and member g of ring group i, and holds shard ``g * U + i`` of the
sequence (``context_parallel.shard`` with its global rank). An all-to-all inside
each Ulysses group turns its U sequence shards into H / U heads of the group's
tokens; ring attention then runs across the R groups on those heads, each
group's shard being the union of its members' segments; a second all-to-all
turns heads back into sequence shards. Ulysses alone (R = 1) needs heads
divisible by W and moves every token through one all-to-all; ring alone
(U = 1) passes W blocks around; the hybrid needs heads divisible by U only and
passes R blocks, each U times longer.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from archgram.distributed.context_parallel import (
    ContextParallelError,
    check_heads,
    check_inputs,
    check_layout,
    default_scale,
    gather_lengths,
    heads_to_seq,
    ring_over_segments,
    segments,
    seq_to_heads,
    valid_rows,
)


def usp_groups(ulysses_size: int) -> tuple[object, object]:
    """This rank's (Ulysses group, ring group) of the default world, arranged as
    above. Every rank must call it (``new_group`` is collective)."""
    world, rank = dist.get_world_size(), dist.get_rank()
    if ulysses_size < 1 or world % ulysses_size:
        raise ContextParallelError(f"the Ulysses degree {ulysses_size} must divide the world size {world}")
    rings = world // ulysses_size
    mine: dict[str, object] = {}
    for g in range(rings):  # every rank creates every group, in the same order
        grp = dist.new_group(list(range(g * ulysses_size, (g + 1) * ulysses_size)))
        if rank // ulysses_size == g:
            mine["ulysses"] = grp
    for i in range(ulysses_size):
        grp = dist.new_group(list(range(i, world, ulysses_size)))
        if rank % ulysses_size == i:
            mine["ring"] = grp
    return mine["ulysses"], mine["ring"]


def mesh_lengths(n: int, ulysses_group, ring_group, device) -> list[int]:
    """Every shard's length, indexed by mesh position ``g * U + i``."""
    inner = torch.tensor(gather_lengths(n, ulysses_group, device), dtype=torch.int64, device=device)
    rows = [torch.zeros_like(inner) for _ in range(dist.get_world_size(ring_group))]
    dist.all_gather(rows, inner, group=ring_group)
    return [int(x) for row in rows for x in row.tolist()]


def usp_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ulysses_group, ring_group, *,
                  causal: bool = False, layout: str = "contiguous", scale: float | None = None) -> torch.Tensor:
    """Softmax attention of this rank's shard over the whole sequence, by
    Ulysses all-to-all inside ``ulysses_group`` and ring attention across
    ``ring_group`` (see ``usp_groups``). q (B, H, n_rank, D), k/v (B, Hkv,
    n_rank, D) with H and Hkv divisible by the Ulysses degree; returns
    (B, H, n_rank, D) in q's dtype."""
    member, size = check_inputs(q, k, v, ulysses_group)
    check_layout(layout)
    check_heads(q, k, size, "USP's Ulysses step")
    lengths = mesh_lengths(q.shape[2], ulysses_group, ring_group, q.device)
    shard_segs = [segments(lengths, m, layout) for m in range(len(lengths))]
    group_segs = [tuple(s for m in range(g * size, (g + 1) * size) for s in shard_segs[m])
                  for g in range(len(lengths) // size)]
    g = dist.get_rank(ring_group)
    mine = lengths[g * size:(g + 1) * size]
    if mine[member] != q.shape[2]:
        raise ContextParallelError("the Ulysses and ring groups do not form the USP mesh (see usp_groups)")
    pad, rows = max(mine), valid_rows(mine, q.device)  # the group's tokens, member-major = group_segs[g] order
    heads = [seq_to_heads(t, ulysses_group, pad, rows) for t in (q, k, v)]
    out = ring_over_segments(*heads, ring_group, group_segs, causal, default_scale(q, scale))
    return heads_to_seq(out, ulysses_group, pad, rows, q.shape[2])
