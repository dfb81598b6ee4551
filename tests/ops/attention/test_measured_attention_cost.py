"""Measured (not declared) attention cost of the layouts whose papers are about
cost: SQA (S42) cuts the quadratic attention FLOPs by Hq/H, strip self-attention
(S43) by r^2 (spatially reduced keys) and by its thin q/k width. FLOPs are
counted by torch's FlopCounterMode at N and 2N tokens; f(2N) - 2 f(N) cancels
every term linear in N and leaves the quadratic attention core."""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from archgram.ops.registry import get_op

SPEC = get_op("attention")


def measured(shape, **args) -> int:
    m = SPEC.build(shape, SPEC.bind(args)).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        m(torch.randn(shape))
    return counter.get_total_flops()


def quadratic(make_shape, **args) -> int:
    return measured(make_shape(2), **args) - 2 * measured(make_shape(1), **args)


@pytest.mark.catalog("S42")
def test_sqa_measured_quadratic_flops_fall_by_query_heads_over_heads():
    def seq(scale):
        return (1, 64 * scale, 64)

    mha = quadratic(seq, heads=8)
    assert mha > 0
    for hq in (4, 2, 1):
        sqa = quadratic(seq, heads=8, layout={"name": "sqa", "query_heads": hq})
        assert sqa * 8 == mha * hq, (hq, sqa, mha)


@pytest.mark.catalog("S43")
def test_strip_attention_measured_quadratic_flops_shrink_by_reduction_squared_and_strip_width():
    def image(scale):
        return (1, 16, 8, 8 * scale)

    d = 16 // 2  # head dim of 2 heads
    mha = quadratic(image, heads=2)
    for r, width in ((2, 1), (2, 4), (4, 1)):
        ssa = quadratic(image, heads=2, layout={"name": "ssa", "reduction": r, "width": width})
        # logits cost width per pair, values d per pair, over N x N / r^2 pairs (MHA: d + d over N x N)
        assert ssa * r * r * (2 * d) == mha * (width + d), (r, width, ssa, mha)


@pytest.mark.catalog("S48")
@pytest.mark.parametrize("causal", [False, True])
def test_lightning_tiled_linear_attention_measured_flops_grow_linearly_in_length(causal):
    """Lightning Attention-2's point: intra-block masked matmuls plus an inter-block
    KV recurrence cost O(N), so tokens per FLOP stay constant as N grows; softmax
    attention's quadratic term does not vanish."""
    def seq(scale):
        return (1, 64 * scale, 32)

    score = {"name": "lightning", "block": 16}
    assert quadratic(seq, heads=2, causal=causal, score=score) == 0
    assert quadratic(lambda s: (1, 128 * s, 32), heads=2, causal=causal, score=score) == 0
    assert quadratic(seq, heads=2, causal=causal) > 0


@pytest.mark.catalog("S54")
def test_l2vit_measured_flops_grow_linearly_in_the_number_of_pixels():
    """L2ViT's window attention and enhanced linear attention both cost O(N): the
    measured FLOPs of the block pair at 8x16 pixels are exactly twice those at 8x8."""
    spec = get_op("l2vit")

    def count(w):
        m = spec.build((1, 16, 8, w), spec.bind({"heads": 2, "window": 4})).eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            m(torch.randn(1, 16, 8, w))
        return counter.get_total_flops()

    assert count(16) == 2 * count(8) > 0
    assert count(32) == 2 * count(16)
