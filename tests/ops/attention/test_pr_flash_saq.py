"""S67's probabilistic FlashAttention and staircase KV-cache quantization, against
the mechanisms the paper's abstract states (archgram/ops/attention/pr_flash.py
and staircase.py say which details are our choices)."""
from __future__ import annotations

import math

import pytest
import torch

from archgram.errors import ShapeError
from archgram.kernels.flash import reference
from archgram.ops.attention.decode import decode, decoding_support
from archgram.ops.attention.pr_flash import PrFlash, expected_blocks
from archgram.ops.attention.staircase import StaircaseQuantized, stair_bits, stairs, step_size
from archgram.ops.registry import get_op

pytestmark = pytest.mark.catalog("S67")
SPEC = get_op("attention")


def build(shape, **args):
    torch.manual_seed(0)
    return SPEC.build(shape, SPEC.bind(args)).double()


# ------------------------------------------------------------------ PrFlashAttention
@pytest.mark.parametrize("decay", [1.0, 0.5])
def test_pr_flash_block_frequencies_follow_the_block_distance_distribution(decay):
    """Over many rounds, key block j takes part for query block i at rate p(i - j) =
    (i - j + 1)^-decay (within 4 binomial standard errors), the diagonal always, and
    no block above the diagonal ever."""
    torch.manual_seed(0)
    nb, rounds = 10, 3000
    pattern = PrFlash(decay=decay)
    counts = sum(pattern.draw(nb, "cpu").double() for _ in range(rounds))
    rows = torch.arange(nb)
    distance = rows[:, None] - rows[None, :]
    assert counts[distance < 0].sum() == 0
    assert bool((counts.diagonal() == rounds).all())
    for d in range(1, nb):
        cells = counts[distance == d]
        p = (d + 1) ** -decay  # the formula, not the module's function
        trials = rounds * cells.numel()
        sigma = math.sqrt(p * (1 - p) / trials)
        assert abs(float(cells.sum()) / trials - p) < 4 * sigma, (d, float(cells.sum()) / trials, p)


def test_pr_flash_attended_blocks_per_query_block_grow_like_the_harmonic_sum():
    """The mean number of blocks a query block attends to matches sum_{d<=r}
    (d + 1)^-decay; at decay 1 (the harmonic series) it grows like ln(r), so each 4x
    longer sequence adds about ln 4 blocks, where decay 0 (dense causal) grows 4x."""
    torch.manual_seed(1)
    pattern, nb = PrFlash(decay=1.0), 64
    mean_rows = sum(pattern.draw(nb, "cpu").sum(-1).double() for _ in range(400)) / 400
    want = torch.tensor([sum(1 / (d + 1) for d in range(r + 1)) for r in range(nb)], dtype=torch.float64)
    assert [expected_blocks(r, 1.0) for r in (0, 9)] == pytest.approx([want[0], want[9]])
    assert torch.allclose(mean_rows, want, atol=0.35)
    last = [expected_blocks(nb - 1, 1.0) for nb in (16, 64, 256, 1024)]
    steps = [b - a for a, b in zip(last, last[1:])]
    assert all(abs(s - math.log(4)) < 0.05 for s in steps), steps
    assert [expected_blocks(nb - 1, 0.0) for nb in (16, 64)] == [16.0, 64.0]
    # the op's FLOP rule follows: attended keys per query grow logarithmically with n
    keys = [PrFlash(block=16).attended_keys(n) for n in (1024, 4096, 16384)]
    assert keys[1] / keys[0] < 1.5 and keys[2] / keys[1] < 1.5


def test_pr_flash_with_decay_zero_is_exact_causal_attention():
    """decay 0 keeps every lower block: the same outputs as causal softmax attention."""
    shape = (2, 21, 16)
    x = torch.randn(shape, dtype=torch.float64)
    sparse = build(shape, heads=2, pattern={"name": "pr_flash", "block": 4, "decay": 0.0})
    dense = build(shape, heads=2, causal=True)
    torch.testing.assert_close(sparse(x), dense(x))


def test_pr_flash_gathered_attention_equals_the_flash_reference_on_the_same_round():
    """The op gathers each query's chosen keys (no n x n logits); its per-head output
    equals the flash kernels' float64 reference given the round's block mask and causal
    order -- the keywords the op hands the GPU kernel."""
    shape = (1, 19, 16)
    attn = build(shape, heads=2, pattern={"name": "pr_flash", "block": 4, "seed": 3})
    assert attn.gathers
    x = torch.randn(shape, dtype=torch.float64)
    q, k, v = attn.layout.qkv(x)
    idx, valid = attn.pattern.select(q, k, None)
    assert idx.shape[-1] < shape[1]  # fewer keys per query than tokens
    from archgram.ops.attention.gathered import gathered_attend

    got = gathered_attend(attn.score, q, k, v, idx, valid, None, attn.scale)
    kw = attn.pattern.flash(shape[1], None, "cpu")
    want, _ = reference.attention(q, k, v, scale=attn.scale, **kw)
    torch.testing.assert_close(got, want)


def test_pr_flash_hands_the_rounds_layout_to_the_flash_kernel(monkeypatch):
    """Where the kernels run, the op gives them the round's block layout (causal, with
    the ALiBi slopes) instead of gathering; the output equals the gathered one. The
    kernel is stood in for by its float64 reference, so this runs on the CPU."""
    from archgram.kernels.flash import dispatch

    shape = (1, 19, 16)
    attn = build(shape, heads=2, pattern={"name": "pr_flash", "block": 4, "seed": 5},
                 position={"name": "rope_alibi"})
    x = torch.randn(shape, dtype=torch.float64)
    gathered = attn(x)
    calls = []

    def kernel(q, k, v, **kw):
        calls.append(kw)
        return reference.attention(q, k, v, **kw)[0]

    monkeypatch.setattr(dispatch, "unavailable", lambda *t: None)
    monkeypatch.setattr(dispatch, "attention", kernel)
    torch.testing.assert_close(attn(x), gathered)
    (kw,) = calls
    assert kw["causal"] and kw["block"] == (4, 4) and "alibi_slopes" in kw
    assert torch.equal(kw["block_mask"], PrFlash(decay=1.0, seed=5).draw(5, "cpu"))


def test_pr_flash_draws_a_new_layout_each_round_unless_seeded():
    torch.manual_seed(0)
    free, fixed = PrFlash(decay=1.0), PrFlash(decay=1.0, seed=7)
    assert not torch.equal(free.draw(16, "cpu"), free.draw(16, "cpu"))
    assert torch.equal(fixed.draw(16, "cpu"), fixed.draw(16, "cpu"))


def test_pr_flash_refuses_bad_parameters():
    with pytest.raises(ShapeError, match="decay"):
        SPEC.cls.output_shape((1, 8, 8), heads=1, pattern={"name": "pr_flash", "block": 2, "decay": -1.0})
    with pytest.raises(ShapeError, match="block"):
        SPEC.cls.output_shape((1, 8, 8), heads=1, pattern={"name": "pr_flash", "block": 0})


# ------------------------------------------------------------------ staircase quantization
def test_saq_older_tokens_keep_fewer_bits_per_the_staircase():
    """Ages 0-3 keep 8 bits, 4-7 4 bits, 8+ 2 bits (stair 4): the bits per cached value
    fall as the cache grows, towards the lowest stair."""
    assert stair_bits(8, 2) == [8, 4, 2] and stair_bits(16, 3) == [16, 8, 4, 3]
    score = StaircaseQuantized(1, stair=4, high=8, low=2)
    row = score.stair_of(1, 12, "cpu")[0].flip(0)  # by age 0..11
    assert [score.bits[s] for s in row.tolist()] == [8] * 4 + [4] * 4 + [2] * 4
    means = [score.mean_bits(n) for n in (4, 8, 16, 64, 1024)]
    assert means[0] == 8 and all(a > b for a, b in zip(means, means[1:])) and means[-1] < 2.05


def test_saq_dequantization_error_is_bounded_by_each_stairs_step():
    """Each stair's stored value is within that stair's step (max - min) / (2^bits - 1)
    of the original -- half a step on the first stair, where it is quantized once --
    and the error grows down the stairs."""
    torch.manual_seed(0)
    x = torch.randn(64, 32, dtype=torch.float64) * torch.rand(64, 1, dtype=torch.float64) * 5
    bits = stair_bits(8, 2)
    errors = []
    for s, stored in enumerate(stairs(x, bits)):
        err = (stored - x).abs()
        step = (x.amax(-1, keepdim=True) - x.amin(-1, keepdim=True)) / (2 ** bits[s] - 1)
        assert torch.equal(step, step_size(x, bits[s]))
        bound = step / 2 if s == 0 else step
        assert bool((err <= bound + 1e-12).all()), s
        errors.append(float(err.mean()))
    assert errors[0] < errors[1] < errors[2]


def test_saq_attention_error_grows_as_bits_shrink():
    """Against unquantized causal softmax attention, the output error grows as the
    stairs keep fewer bits (8 -> 4 -> 2) and as the stairs get shorter (more tokens
    on the low stairs)."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 48, 16, dtype=torch.float64) for _ in range(3))
    mask = torch.ones(48, 48, dtype=torch.bool).tril()
    exact = torch.softmax((q @ k.transpose(-1, -2) / 4).masked_fill(~mask, -1e300), -1) @ v

    def error(**params):
        out = StaircaseQuantized(2, **params).attend(q, k, v, mask, None, 0.25, causal=True)
        return float((out - exact).abs().mean())

    by_bits = [error(stair=64, high=b, low=b) for b in (8, 4, 2)]
    assert by_bits[0] < by_bits[1] < by_bits[2]
    by_stair = [error(stair=s, high=8, low=2) for s in (48, 16, 4)]
    assert by_stair[0] < by_stair[1] < by_stair[2]


def test_saq_decoding_over_the_quantized_cache_equals_the_parallel_form():
    """Query i sees key j at the stair of age i - j in the parallel form, as decoding
    token by token over the staircase cache does (multi-query layout, as in the paper)."""
    shape = (2, 11, 16)
    attn = build(shape, heads=4, layout={"name": "mqa"}, causal=True, position={"name": "rope_alibi"},
                 score={"name": "saq", "stair": 3, "high": 8, "low": 2})
    assert decoding_support(attn) is None
    x = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(decode(attn, x), attn(x), atol=1e-9, rtol=1e-7)


def test_saq_needs_causal_attention_and_sane_bits():
    with pytest.raises(ShapeError, match="causal"):
        SPEC.cls.output_shape((1, 8, 8), heads=1, score={"name": "saq"})
    with pytest.raises(ShapeError, match="low <= high"):
        SPEC.cls.output_shape((1, 8, 8), heads=1, causal=True, score={"name": "saq", "high": 2, "low": 4})
    SPEC.cls.output_shape((1, 8, 8), heads=1, score={"name": "saq"}, pattern={"name": "pr_flash", "block": 2})


def test_saq_trains_through_the_rounding():
    """Gradients pass straight through the quantizer, so the op trains."""
    shape = (1, 9, 8)
    attn = build(shape, heads=2, causal=True, score={"name": "saq", "stair": 2})
    attn(torch.randn(shape, dtype=torch.float64)).square().sum().backward()
    grads = [p.grad for p in attn.parameters()]
    assert all(g is not None and bool(g.abs().sum() > 0) for g in grads)


def test_seeded_pr_flash_with_saq_exports_to_the_same_outputs():
    """torch.export needs shapes that do not depend on the draw: while exporting, the
    pattern attends over every key with the round's mask as validity, and SAQ's stairs
    follow from the length; a seeded layout exports to the eager outputs."""
    shape = (1, 16, 8)
    attn = build(shape, heads=2, layout={"name": "mqa"}, pattern={"name": "pr_flash", "block": 4, "seed": 2},
                 score={"name": "saq", "stair": 4}, position={"name": "rope_alibi"}).float().eval()
    x = torch.randn(shape)
    program = torch.export.export(attn, (x,))
    torch.testing.assert_close(program.module()(x), attn(x))
