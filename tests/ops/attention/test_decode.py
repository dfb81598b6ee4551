"""Incremental decoding equals the causal parallel form, token by token."""
from __future__ import annotations

import pytest
import torch

from archgram.errors import ShapeError
from archgram.ops.attention.decode import decode, decoding_support
from archgram.ops.registry import get_op

SPEC = get_op("attention")


def build(**args):
    torch.manual_seed(0)
    return SPEC.build((2, 7, 16), SPEC.bind(args)).double()


@pytest.mark.parametrize(
    "args",
    [
        {"causal": True},
        {"pattern": {"name": "causal"}, "position": {"name": "rope"}},
        {"causal": True, "layout": {"name": "gqa"}, "kv_heads": 2, "position": {"name": "alibi"}},
        {"causal": True, "pattern": {"name": "window", "_0": 3}, "layout": {"name": "mqa"}},
        {"causal": True, "score": {"name": "softcap", "cap": 2.0}, "position": {"name": "rope_alibi"}},
        {"causal": True, "score": {"name": "linear"}},
        {"causal": True, "score": {"name": "lightning"}, "position": {"name": "rope"}},
        {"causal": True, "score": {"name": "hebbian"}},
    ],
    ids=lambda a: "-".join(str(v["name"]) if isinstance(v, dict) else str(v) for v in a.values()),
)
def test_decoding_token_by_token_equals_the_causal_parallel_form(args):
    attn = build(heads=4, **args)
    assert decoding_support(attn) is None
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    torch.testing.assert_close(decode(attn, x), attn(x), atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize(
    "args,reason",
    [
        ({}, "causal"),
        ({"causal": True, "pattern": {"name": "neighborhood", "size": 3}}, "final length"),
        ({"causal": True, "position": {"name": "urpe"}}, "re-weights"),
    ],
)
def test_configurations_that_cannot_decode_say_why(args, reason):
    attn = build(heads=4, **args)
    assert reason in decoding_support(attn)
    with pytest.raises(ShapeError, match=reason):
        decode(attn, torch.randn(2, 7, 16, dtype=torch.float64))
