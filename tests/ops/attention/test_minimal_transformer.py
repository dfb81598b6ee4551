"""Reducing the Transformer Architecture to a Minimum (S45): with the projection-free
``minimal`` layout and the ``symmetric`` score, an attention op is exactly the
paper's reduced layer softmax(x W x^T / sqrt(d)) x per head, W symmetric, with no
W_Q, W_K, W_V or W_O."""
from __future__ import annotations

import math

import pytest
import torch

from archgram.errors import ShapeError
from archgram.ops.registry import get_op

SPEC = get_op("attention")


def build(shape, **args):
    return SPEC.build(shape, SPEC.bind(args)).eval()


@pytest.mark.catalog("S45")
def test_minimal_symmetric_attention_is_the_papers_projection_free_layer():
    heads, d, n = 2, 4, 6
    m = build((2, n, heads * d), heads=heads, layout={"name": "minimal"}, score={"name": "symmetric"})
    with torch.no_grad():
        m.score.upper.normal_()
    x = torch.randn(2, n, heads * d)
    w = m.score.matrix()  # (H, d, d), symmetric
    out = []
    for h in range(heads):
        xh = x[..., h * d:(h + 1) * d]
        a = torch.softmax(xh @ w[h] @ xh.transpose(-1, -2) / math.sqrt(d), -1)
        out.append(a @ xh)  # the value is the token itself: no W_V
    torch.testing.assert_close(m(x), torch.cat(out, -1), atol=1e-5, rtol=1e-5)
    # the only parameters are the d(d+1)/2 entries of each head's symmetric W
    assert sum(p.numel() for p in m.parameters()) == heads * d * (d + 1) // 2
    assert SPEC.param_count((2, n, heads * d), SPEC.bind({"heads": heads, "layout": {"name": "minimal"}, "score": {"name": "symmetric"}})) \
        == heads * d * (d + 1) // 2


def test_minimal_layout_refuses_a_head_split_that_does_not_cover_the_channels():
    with pytest.raises(ShapeError, match="minimal"):
        SPEC.cls.output_shape((2, 6, 8), **SPEC.bind({"heads": 2, "head_dim": 3, "layout": {"name": "minimal"}}))
