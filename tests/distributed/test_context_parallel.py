"""Context-parallel attention (S14) on gloo CPU processes against single-process attention.

One spawn per world size runs every case (spawning costs seconds; the cases
milliseconds): ring, Ulysses and the USP hybrid (Ulysses inside groups, ring
across them) on every mesh the world allows, causal and not, contiguous shards
of unequal length and zig-zag shards, GQA, gradients, and the errors."""
from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from archgram.distributed.blocks import merge
from archgram.distributed.context_parallel import (
    ContextParallelError,
    ring_attention,
    segments,
    shard,
    shard_lengths,
    ulysses_attention,
    unshard,
)
from archgram.distributed.usp import usp_attention, usp_groups

pytestmark = pytest.mark.catalog("S14")


def naive(q, k, v, causal):
    """Float64 attention from the formula (independent of the code under test)."""
    h = q.shape[1]
    k = k.repeat_interleave(h // k.shape[1], dim=1)
    v = v.repeat_interleave(h // v.shape[1], dim=1)
    s = q.double() @ k.double().transpose(-1, -2) / q.shape[-1] ** 0.5
    if causal:
        n = q.shape[2]
        s = s.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
    return torch.softmax(s, -1) @ v.double()


def _case(fn, rank, world, n, heads, kv_heads, causal, layout, grad):
    g = torch.Generator().manual_seed(n * 31 + heads + kv_heads + int(causal))
    q = torch.randn(2, heads, n, 16, generator=g)
    k, v = (torch.randn(2, kv_heads, n, 16, generator=g) for _ in range(2))
    w = torch.randn(2, heads, n, 16, generator=g)
    full = [t.double().requires_grad_(grad) for t in (q, k, v)]
    ref = naive(*full, causal)
    local = [shard(t, rank, world, layout).requires_grad_(grad) for t in (q, k, v)]
    out = fn(*local, causal=causal, layout=layout)
    what = f"{fn.__name__} world={world} n={n} heads={heads}/{kv_heads} causal={causal} layout={layout}"
    torch.testing.assert_close(out.double(), shard(ref, rank, world, layout).detach(), atol=2e-5, rtol=1e-4, msg=what)
    if grad:
        (ref * w.double()).sum().backward()
        (out * shard(w, rank, world, layout)).sum().backward()
        for name, mine, full_t in zip("qkv", local, full, strict=True):
            torch.testing.assert_close(mine.grad.double(), shard(full_t.grad, rank, world, layout), atol=5e-5, rtol=1e-4,
                                       msg=f"d{name} of {what}")


def _usp(ulysses_group, ring_group, ulysses: int):
    def fn(q, k, v, **kw):
        return usp_attention(q, k, v, ulysses_group, ring_group, **kw)

    fn.__name__ = f"usp_attention(ulysses={ulysses})"
    return fn


def _worker(rank, world, init):
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        uneven = 5 * world + 1  # rank 0 holds one token more than the others
        for fn in (ring_attention, ulysses_attention):
            for causal in (False, True):
                _case(fn, rank, world, uneven, 4, 4, causal, "contiguous", grad=True)
                _case(fn, rank, world, 4 * world, 4, 4, causal, "zigzag", grad=True)
        _case(ring_attention, rank, world, uneven, 4, 1, True, "contiguous", grad=True)  # MQA: kv heads travel
        for ulysses in (u for u in (1, 2, 4) if u <= world):  # every R x U mesh: ring-only, hybrid, Ulysses-only
            usp = _usp(*usp_groups(ulysses), ulysses)
            for causal in (False, True):
                _case(usp, rank, world, uneven, 4, 4, causal, "contiguous", grad=True)
                _case(usp, rank, world, 4 * world, 4, 4, causal, "zigzag", grad=True)
        # the hybrid's point: heads need only divide the Ulysses degree, not the world
        if world == 4:
            _case(_usp(*usp_groups(2), 2), rank, world, uneven, 2, 2, True, "contiguous", grad=True)
            with pytest.raises(ContextParallelError, match="not divisible"):
                ulysses_attention(*(torch.randn(1, 2, 3, 16) for _ in range(3)))
        _case(ring_attention, rank, world, 2 * world, 4, 2, True, "zigzag", grad=False)
        with pytest.raises(ContextParallelError, match="not divisible"):
            ulysses_attention(*(torch.randn(1, 5, 3, 16) for _ in range(3)))
        with pytest.raises(ContextParallelError, match="zigzag"):
            ring_attention(*(torch.randn(1, 4, 3, 16) for _ in range(3)), layout="zigzag")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world", [2, 4])
def test_context_parallel_matches_single_process_S14(world, tmp_path):
    """Ring, Ulysses and USP-hybrid attention on ``world`` gloo processes equal
    float64 attention on the whole sequence, outputs and gradients, causal and
    not, on uneven contiguous and zig-zag shards."""
    # fork: the children inherit the imported modules (spawning re-imports torch per rank: ~5 s each)
    mp.start_processes(_worker, args=(world, f"file://{tmp_path / 'store'}"), nprocs=world, join=True, start_method="fork")


def test_layouts_tile_the_sequence():
    x = torch.arange(24).view(1, 1, 24, 1)
    for world, layout in ((2, "contiguous"), (3, "contiguous"), (4, "zigzag"), (3, "zigzag")):
        parts = [shard(x, r, world, layout) for r in range(world)]
        assert torch.equal(unshard(parts, layout), x)
    assert [p.flatten().tolist() for p in (shard(x[..., :8, :], r, 2, "zigzag") for r in range(2))] == [[0, 1, 6, 7], [2, 3, 4, 5]]
    assert shard_lengths(15, 2) == [8, 7]
    assert segments([8, 7], 1) == ((8, 7),)
    with pytest.raises(ContextParallelError, match="divisible"):
        shard_lengths(10, 3, "zigzag")
    with pytest.raises(ContextParallelError, match="unknown layout"):
        segments([4, 4], 0, "spiral")


def test_merge_is_softmax_over_the_union():
    """Merging the (out, lse) of two key halves equals attention over all keys."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 5, 8, generator=g) for _ in range(3))
    from archgram.distributed.blocks import math_block

    full = naive(q, k, v, False).float()
    a, b = math_block(q, k[:, :, :2], v[:, :, :2], None, 8 ** -0.5), math_block(q, k[:, :, 2:], v[:, :, 2:], None, 8 ** -0.5)
    out, lse = merge(*a, *b)
    torch.testing.assert_close(out, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lse, torch.logsumexp(q @ k.transpose(-1, -2) * 8 ** -0.5, -1), atol=1e-5, rtol=1e-5)
    # an empty (fully masked) partial leaves the other unchanged, without NaN
    empty = (torch.zeros_like(a[0]), torch.full_like(a[1], float("-inf")))
    out2, lse2 = merge(*empty, *a)
    assert torch.equal(out2, a[0]) and torch.equal(lse2, a[1])
