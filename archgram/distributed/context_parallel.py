"""Context-parallel attention: one attention over a sequence sharded across the
ranks of a ``torch.distributed`` group (catalog row S14).

Each rank holds q, k, v of its shard, shaped (B, H, n_rank, D) (k/v may have
fewer heads: GQA/MQA). Two strategies:

- ``ring_attention`` (Liu et al., Ring Attention): key/value blocks travel
  around the ring with batched isend/irecv while each rank attends its queries
  to the block in hand; partial outputs are merged by log-sum-exp. Memory per
  rank is O(n_rank), never the full n x n. Differentiable: the backward pass
  rotates the key/value blocks again with their gradient accumulators (float32
  torch math, recomputing each block's weights from the saved lse).
- ``ulysses_attention`` (DeepSpeed-Ulysses): an all-to-all turns sequence
  shards into head shards, every rank runs full attention for H / W heads, and
  a second all-to-all turns them back. Differentiable (the all-to-all's
  gradient is the reverse all-to-all). Needs heads (and kv heads) divisible by
  the world size.

Shards: ``layout="contiguous"`` (rank r holds the r-th slice; lengths may
differ between ranks, e.g. 8 + 7 tokens) or ``"zigzag"`` (the sequence cut into
2W chunks, rank r holds chunks r and 2W-1-r, so causal work is balanced; equal
even lengths). ``shard``/``unshard`` cut and reassemble full tensors.

Blocks run the Triton flash forward kernel on CUDA where it applies, else
float32 torch math (``archgram.distributed.blocks``).
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist

from archgram.distributed.blocks import Segment, attend_segments, grad_segments
from archgram.errors import ArchgramError
from archgram.registry import unknown

LAYOUTS = ("contiguous", "zigzag")


class ContextParallelError(ArchgramError):
    """Inputs a context-parallel attention cannot serve (shapes, layout, group)."""


# ------------------------------------------------------------------ layouts
def shard_lengths(n: int, world: int, layout: str = "contiguous") -> list[int]:
    """Tokens per rank for a sequence of ``n`` (contiguous: as torch.tensor_split)."""
    check_layout(layout)
    if layout == "zigzag":
        if n % (2 * world):
            raise ContextParallelError(f"zigzag layout needs the length ({n}) divisible by 2 x world size ({2 * world})")
        return [n // world] * world
    return [len(r) for r in torch.arange(n).tensor_split(world)]


def segments(lengths: list[int], rank: int, layout: str = "contiguous") -> tuple[Segment, ...]:
    """Global (start, length) segments of rank ``rank``'s shard, in local order."""
    check_layout(layout)
    world = len(lengths)
    if layout == "zigzag":
        if len(set(lengths)) != 1 or lengths[0] % 2:
            raise ContextParallelError(f"zigzag layout needs equal, even lengths on every rank, got {lengths}")
        c = lengths[0] // 2
        return ((rank * c, c), ((2 * world - 1 - rank) * c, c))
    return ((sum(lengths[:rank]), lengths[rank]),)


def shard(x: torch.Tensor, rank: int, world: int, layout: str = "contiguous", dim: int = 2) -> torch.Tensor:
    """Rank ``rank``'s shard of a full sequence tensor (sequence along ``dim``)."""
    lengths = shard_lengths(x.shape[dim], world, layout)
    return torch.cat([x.narrow(dim, s, n) for s, n in segments(lengths, rank, layout)], dim=dim)


def unshard(parts: list[torch.Tensor], layout: str = "contiguous", dim: int = 2) -> torch.Tensor:
    """The full sequence from every rank's shard (inverse of ``shard``)."""
    lengths = [p.shape[dim] for p in parts]
    pieces = []
    for r, p in enumerate(parts):
        off = 0
        for s, n in segments(lengths, r, layout):
            pieces.append((s, p.narrow(dim, off, n)))
            off += n
    return torch.cat([t for _, t in sorted(pieces, key=lambda x: x[0])], dim=dim)


def check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ContextParallelError(unknown("layout", layout, LAYOUTS))


# ------------------------------------------------------------------ checks
def check_inputs(q, k, v, group) -> tuple[int, int]:
    if not dist.is_available() or not dist.is_initialized():
        raise ContextParallelError("torch.distributed is not initialised: call dist.init_process_group first")
    if q.dim() != 4 or k.dim() != 4 or k.shape != v.shape:
        raise ContextParallelError(f"need q (B, H, n, D) and k, v (B, Hkv, n, D); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2] or q.shape[3] != k.shape[3] or q.shape[1] % k.shape[1]:
        raise ContextParallelError(f"q {tuple(q.shape)} and k {tuple(k.shape)} disagree (batch, length, head dim, or heads not a multiple of kv heads)")
    return dist.get_rank(group), dist.get_world_size(group)


def gather_lengths(n: int, group, device) -> list[int]:
    """Every rank's shard length (one small all-gather)."""
    world = dist.get_world_size(group)
    mine = torch.tensor([n], dtype=torch.int64, device=device)
    out = [torch.zeros_like(mine) for _ in range(world)]
    dist.all_gather(out, mine, group=group)
    return [int(t.item()) for t in out]


def _global(group, rank: int) -> int:
    return rank if group is None else dist.get_global_rank(group, rank)


def _rotate(tensors: list[torch.Tensor], group, rank: int, world: int, recv_len: int) -> tuple[list, list]:
    """Start sending ``tensors`` to the next rank and receiving the previous
    rank's (sequence length ``recv_len``); returns (requests, buffers)."""
    nxt, prv = _global(group, (rank + 1) % world), _global(group, (rank - 1) % world)
    bufs = [t.new_empty(t.shape[:2] + (recv_len,) + t.shape[3:]) for t in tensors]
    ops = [dist.P2POp(dist.isend, t.contiguous(), nxt, group) for t in tensors]
    ops += [dist.P2POp(dist.irecv, b, prv, group) for b in bufs]
    return dist.batch_isend_irecv(ops), bufs


# ------------------------------------------------------------------ ring
class _Ring(torch.autograd.Function):
    """Ring attention over ranks whose shards are given as segments: ``segs[r]``
    are rank r's global (start, length) segments in local order."""

    @staticmethod
    def forward(ctx, q, k, v, group, segs, causal, scale):
        rank, world = dist.get_rank(group), dist.get_world_size(group)
        acc = None
        kv = [k, v]
        for step in range(world):
            src = (rank - step) % world
            reqs = None
            if step < world - 1:  # overlap: the next block travels while this one computes
                reqs, nxt = _rotate(kv, group, rank, world, _length(segs[(src - 1) % world]))
            acc = attend_segments(q, kv[0], kv[1], segs[rank], segs[src], causal, scale, acc)
            if reqs is not None:
                for r in reqs:
                    r.wait()
                kv = nxt
        out, lse = acc
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.meta = (group, segs, causal, scale)
        return out.to(q.dtype)

    @staticmethod
    def backward(ctx, do):
        q, k, v, out, lse = ctx.saved_tensors
        group, segs, causal, scale = ctx.meta
        rank, world = dist.get_rank(group), dist.get_world_size(group)
        dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
        kv = [k, v]
        dkv = [torch.zeros(k.shape, dtype=torch.float32, device=k.device) for _ in range(2)]
        for step in range(world):
            src = (rank - step) % world
            grad_segments(q, kv[0], kv[1], do, out, lse, segs[rank], segs[src], causal, scale, dq, dkv[0], dkv[1])
            if world == 1:
                break
            # the accumulators follow their block; after ``world`` moves each is home
            moving = dkv + (kv if step < world - 1 else [])
            reqs, bufs = _rotate(moving, group, rank, world, _length(segs[(src - 1) % world]))
            for r in reqs:
                r.wait()
            dkv, kv = bufs[:2], bufs[2:]
        return dq.to(q.dtype), dkv[0].to(k.dtype), dkv[1].to(v.dtype), None, None, None, None


def _length(segs: tuple[Segment, ...]) -> int:
    return sum(n for _, n in segs)


def ring_over_segments(q, k, v, group, segs: list[tuple[Segment, ...]], causal: bool, scale: float) -> torch.Tensor:
    """The ring step alone, for shards of any segments (the hybrid in ``usp`` passes
    each Ulysses group's union of shards); ``segs`` is indexed by rank in ``group``."""
    if len(segs) != dist.get_world_size(group) or _length(segs[dist.get_rank(group)]) != q.shape[2]:
        raise ContextParallelError(f"segments {segs} do not describe this group's shards (local length {q.shape[2]})")
    return _Ring.apply(q, k, v, group, tuple(segs), causal, scale)


def ring_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group=None, *, causal: bool = False,
                   layout: str = "contiguous", scale: float | None = None) -> torch.Tensor:
    """Softmax attention of this rank's queries over the whole sharded sequence.

    q (B, H, n_rank, D), k/v (B, Hkv, n_rank, D) on every rank of ``group``
    (default: the world); returns (B, H, n_rank, D) in q's dtype."""
    rank, world = check_inputs(q, k, v, group)
    check_layout(layout)
    lengths = gather_lengths(q.shape[2], group, q.device)
    segs = [segments(lengths, r, layout) for r in range(world)]  # validates the layout against the lengths
    return ring_over_segments(q, k, v, group, segs, causal, default_scale(q, scale))


def default_scale(q: torch.Tensor, scale: float | None) -> float:
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)


# ------------------------------------------------------------------ Ulysses
class _AllToAll(torch.autograd.Function):
    """Rank r's block j goes to rank j, where it arrives as block r: stacked
    equal blocks (W, ...) in and out. Its gradient is the same exchange of the
    output's gradient. (``torch.distributed.nn``'s all-to-all falls back to
    scatters addressed by group rank on gloo, which fails in a subgroup.)"""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        out = torch.empty_like(x)
        dist.all_to_all_single(out, x.contiguous(), group=group)
        return out

    @staticmethod
    def backward(ctx, grad):
        out = torch.empty_like(grad)
        dist.all_to_all_single(out, grad.contiguous(), group=ctx.group)
        return out, None


def _all_to_all(chunks: list[torch.Tensor], group) -> list[torch.Tensor]:
    return list(_AllToAll.apply(torch.stack(chunks), group).unbind(0))


def _local_attention(q, k, v, causal: bool, scale: float) -> torch.Tensor:
    """Full attention on one rank: the flash kernel (CUDA, no grad), else SDPA."""
    from archgram.distributed.blocks import _flash_ok, expand_kv

    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    if not needs_grad and _flash_ok(q, k, v):
        from archgram.kernels.flash.forward import flash_forward

        return flash_forward(q.contiguous(), k.contiguous(), v.contiguous(), causal=causal, scale=scale)[0]
    h = q.shape[1]
    return torch.nn.functional.scaled_dot_product_attention(q, expand_kv(k, h), expand_kv(v, h), is_causal=causal, scale=scale)


def seq_to_heads(x: torch.Tensor, group, pad: int, rows: torch.Tensor) -> torch.Tensor:
    """All-to-all from this rank's sequence shard (B, H, n, D), padded to ``pad``
    tokens, to H / W heads of every rank's tokens; returns the gathered
    (rank-major, padded) rows ``rows``, in that order."""
    world = dist.get_world_size(group)
    x = torch.nn.functional.pad(x, (0, 0, 0, pad - x.shape[2]))
    gathered = torch.cat(_all_to_all(list(x.chunk(world, dim=1)), group), dim=2)  # (B, H/W, W*pad, D)
    return gathered.index_select(2, rows)


def heads_to_seq(out: torch.Tensor, group, pad: int, rows: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of ``seq_to_heads``: this rank's ``n`` tokens of every head."""
    world = dist.get_world_size(group)
    b, hl, _, d = out.shape
    back = out.new_zeros(b, hl, world * pad, d).index_copy(2, rows, out)
    parts = _all_to_all(list(back.chunk(world, dim=2)), group)  # my rows of every head group
    return torch.cat(parts, dim=1)[:, :, :n]


def valid_rows(lengths: list[int], device=None) -> torch.Tensor:
    """Rows of the gathered (rank-major, each rank padded to the longest) tensor
    that hold tokens, in rank order."""
    pad = max(lengths)
    return torch.cat([torch.arange(r * pad, r * pad + m) for r, m in enumerate(lengths)]).to(device)


def check_heads(q, k, world: int, strategy: str = "Ulysses") -> None:
    h, hkv = q.shape[1], k.shape[1]
    if h % world or hkv % world:
        raise ContextParallelError(f"{strategy} splits heads over ranks: {h} query / {hkv} key-value heads are not divisible "
                                   f"by the world size {world} (use ring_attention)")


def ulysses_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group=None, *, causal: bool = False,
                      layout: str = "contiguous", scale: float | None = None) -> torch.Tensor:
    """As ``ring_attention``, by all-to-all: sequence shards -> head shards, full
    attention on H / W heads, and back. Shorter shards are padded for the
    all-to-all and the padding dropped before attention."""
    rank, world = check_inputs(q, k, v, group)
    check_layout(layout)
    check_heads(q, k, world)
    lengths = gather_lengths(q.shape[2], group, q.device)
    segments(lengths, rank, layout)
    scale = default_scale(q, scale)
    pad = max(lengths)
    # positions of the gathered (rank-major, padded) rows in the natural order
    natural = torch.cat([torch.arange(s, s + m) for r in range(world) for s, m in segments(lengths, r, layout)])
    order = valid_rows(lengths)[torch.argsort(natural)].to(q.device)  # gathered row of natural position i
    out = _local_attention(*(seq_to_heads(t, group, pad, order) for t in (q, k, v)), causal, scale)  # natural order
    return heads_to_seq(out, group, pad, order, q.shape[2])
