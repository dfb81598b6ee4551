"""Deconstructing Attention (S09): queries and keys from an earlier layer, values from the current one."""
from __future__ import annotations

import math

import pytest
import torch

import archgram
from archgram.errors import ShapeError
from archgram.grammar.model import Grammar
from archgram.ops import get_op

pytestmark = pytest.mark.catalog("S09")


def build(shapes, **args):
    torch.manual_seed(0)
    spec = get_op("earlier_qk_attention")
    return spec.build(shapes, spec.bind(args)).double()


def test_earlier_qk_attention_matches_its_formula():
    """out = W_o softmax(W_q e (W_k e)^T / sqrt(d)) W_v h, per head, by an explicit loop."""
    m = build([(2, 5, 4), (2, 5, 6)], heads=2, causal=True)
    h, e = torch.randn(2, 5, 4, dtype=torch.float64), torch.randn(2, 5, 6, dtype=torch.float64)
    wq, wk = m.qk.weight[:4], m.qk.weight[4:]
    bq, bk = m.qk.bias[:4], m.qk.bias[4:]
    heads = []
    for i in range(2):
        s = slice(2 * i, 2 * i + 2)
        q, k = e @ wq[s].T + bq[s], e @ wk[s].T + bk[s]
        v = h @ m.v.weight[s].T + m.v.bias[s]
        logits = q @ k.transpose(-1, -2) / math.sqrt(2) + torch.full((5, 5), float("-inf")).triu(1)
        heads.append(logits.softmax(-1) @ v)
    torch.testing.assert_close(m([h, e]), m.o(torch.cat(heads, -1)))


def test_where_tokens_look_is_set_by_the_earlier_layer_alone():
    """The relaxation's point: attention weights are a function of e; h only supplies the values,
    so the op is linear in h for fixed e, and changing e (not h) moves the weights."""
    m = build([(1, 6, 8), (1, 6, 8)], heads=2)
    h1, h2, e = (torch.randn(1, 6, 8, dtype=torch.float64) for _ in range(3))
    out = lambda h, e: m([h, e]) - m.o.bias  # noqa: E731  (drop the output bias: linear part)
    torch.testing.assert_close(out(2 * h1 - h2, e), 2 * out(h1, e) - out(h2, e))
    torch.testing.assert_close(m.weights(e), m.weights(e.clone()))
    assert (m.weights(e) - m.weights(e + torch.randn_like(e))).abs().max() > 1e-3


def test_the_attention_grammar_builds_the_hybrid_stack():
    text = open(archgram.__path__[0] + "/grammars/attention.pcfg").read()
    assert "earlier_qk_attention" in text
    g = Grammar.from_text("net : clone(2) clone(2) lin identity earlier_qk_attention(heads=2) identity add\n"
                          "lin : linear(out=8) gelu\n")
    d = g.sample((2, 5, 8), seed=0)
    assert archgram.compile(d, (2, 5, 8))(torch.randn(2, 5, 8)).shape == (2, 5, 8)
    with pytest.raises(ShapeError, match="share batch and tokens"):
        get_op("earlier_qk_attention").cls.output_shape([(2, 5, 8), (2, 4, 8)])


def test_static_embedding_stack_takes_every_layers_queries_and_keys_from_the_input():
    """The paper's static-embedding variant: in a stack of three layers built by the
    recursive rule, every layer's attention weights are those of the stack's input
    (hooked e is the input itself), while the values come from the evolving state."""
    g = Grammar.from_text(
        "net    : static\n"
        "static : clone(2) below identity earlier_qk_attention(heads=2, residual=true) ffn\n"
        "below  : identity | static\n"
        "ffn    : clone(2) linear(out=8) identity add\n")
    d = next(d for d in (g.sample((2, 5, 8), seed=s) for s in range(200))
             if d.to_json().count("earlier_qk_attention") == 3)
    model = archgram.compile(d, (2, 5, 8)).double()
    layers = [m for m in model.modules() if type(m).__name__ == "EarlierQKAttention"]
    seen = []
    for m in layers:
        m.register_forward_hook(lambda mod, args, out: seen.append((mod, args[0][0], args[0][1], out)))
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    model(x)
    assert len(seen) == 3
    for mod, h, e, out in seen:
        assert torch.equal(e, x)  # queries and keys: the input embeddings at every depth
        v = mod.v(h).view(2, 5, 2, 4).transpose(1, 2)
        expected = h + mod.o((mod.weights(x) @ v).transpose(1, 2).reshape(2, 5, 8))
        torch.testing.assert_close(out, expected)
    assert not torch.equal(seen[1][1], x) and not torch.equal(seen[2][1], seen[1][1])  # values evolve
