"""Token Sparse Attention (S60): per head, compress Q/K/V to the selected tokens,
attend among them, decompress into a zero output; cost independent of N."""
from __future__ import annotations

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from archgram.errors import ShapeError
from archgram.ops.registry import get_op

SPEC = get_op("attention")
pytestmark = pytest.mark.catalog("S60")


def build(shape, **args):
    torch.manual_seed(0)
    return SPEC.build(shape, SPEC.bind(args)).eval()


def token_select(**params):
    return {"name": "token_select", **params}


def heads_out(m, x):
    """The op's per-head outputs (B, H, N, d), before the output projection."""
    seen = []
    real = m.layout.out

    def spy(o, x=None):
        seen.append(o)
        return real(o, x)

    m.layout.out = spy
    with torch.no_grad():
        m(x)
    del m.layout.out
    return seen[0]


@pytest.mark.parametrize("causal", [False, True])
def test_compress_attend_decompress_equals_an_explicit_per_head_computation(causal):
    n, keep, d = 10, 4, 8
    m = build((2, n, 16), heads=2, causal=causal, pattern=token_select(keep=keep, by="norm"))
    x = torch.randn(2, n, 16)
    with torch.no_grad():
        q, k, v = m.layout.qkv(x)
    out = heads_out(m, x)
    for b in range(2):
        for h in range(2):
            s = sorted(sorted(range(n), key=lambda j: -float(k[b, h, j].norm()))[:keep])
            for i in range(n):
                if i not in s:  # decompressed: no attention output
                    assert torch.equal(out[b, h, i], torch.zeros(d))
                    continue
                seen = [j for j in s if j <= i or not causal]
                w = torch.softmax(torch.stack([q[b, h, i] @ k[b, h, j] for j in seen]) / math.sqrt(d), 0)
                torch.testing.assert_close(out[b, h, i], sum(wj * v[b, h, j] for wj, j in zip(w, seen)))


def test_the_dense_masked_form_equals_the_compressed_form():
    x = torch.randn(2, 12, 16)
    m = build((2, 12, 16), heads=2, causal=True, position={"name": "alibi"}, pattern=token_select(keep=5))
    assert m.compresses
    compressed = m(x)
    m.compresses = False  # the masked path other scores take
    torch.testing.assert_close(m(x), compressed)


def test_attention_cost_does_not_grow_with_length_at_fixed_keep():
    """The paper's point: with |S| fixed, the measured attention FLOPs (beyond the
    per-token projections and the norm-based selection) stay constant in N, where
    full attention's quadratic term doubles twice per doubling."""
    def flops(n, **args):
        m = build((1, n, 32), heads=2, **args)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            m(torch.randn(1, n, 32))
        return counter.get_total_flops()

    # keep=16 minus keep=1: the same projections and selection, so only the attention core remains
    core = [flops(n, pattern=token_select(keep=16, by="norm")) - flops(n, pattern=token_select(keep=1, by="norm"))
            for n in (64, 128, 256)]
    assert core[0] == core[1] == core[2] > 0
    full = [flops(n) for n in (64, 128, 256)]
    assert full[2] - 2 * full[1] == 4 * (full[1] - 2 * full[0]) > 0  # quadratic: the N^2 term quadruples


def test_coverage_keeps_the_fewest_tokens_whose_importance_reaches_it():
    m = build((1, 8, 16), heads=2, pattern=token_select(keep=8, by="norm", coverage=0.5))
    x = torch.randn(1, 8, 16)
    with torch.no_grad():
        q, k, _ = m.layout.qkv(x)
    idx, valid = m.pattern.select(q, k)
    norms = k.norm(dim=-1)
    for h in range(2):
        ranked = norms[0, h].sort(descending=True).values
        share = ranked.cumsum(0) / ranked.sum()
        want = int((share < 0.5).sum()) + 1
        assert int(valid[0, h].sum()) == want
        chosen = idx[0, h][valid[0, h]]
        assert set(chosen.tolist()) == set(norms[0, h].topk(want).indices.tolist())
    with pytest.raises(ShapeError, match="coverage"):
        SPEC.cls.output_shape((1, 8, 16), **SPEC.bind({"heads": 2, "pattern": token_select(keep=4, coverage=1.5)}))
