"""The composite attention op against independent references (SDPA, naive loops,
properties from the papers)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from archgram.errors import ShapeError
from archgram.grammar.model import Grammar
from archgram.ops.registry import get_op

SPEC = get_op("attention")


def get_score(name):
    from archgram.ops.attention import SCORES

    return SCORES.parts[name]


def build(shape, **args):
    torch.manual_seed(0)
    return SPEC.build(shape, SPEC.bind(args))


def sdpa_reference(module, x, **kwargs):
    layout = module.layout
    q, k, v = layout.qkv(x)
    return layout.out(F.scaled_dot_product_attention(q, layout.expand(k), layout.expand(v), **kwargs))


@pytest.mark.parametrize("layout,kv", [("mha", 0), ("gqa", 2), ("mqa", 0)])
def test_softmax_full_equals_sdpa(layout, kv):
    m = build((2, 9, 32), heads=4, kv_heads=kv, layout={"name": layout})
    x = torch.randn(2, 9, 32)
    torch.testing.assert_close(m(x), sdpa_reference(m, x), atol=1e-5, rtol=1e-5)


def test_gqa_shares_key_value_heads():
    m = build((1, 5, 32), heads=4, kv_heads=2, layout={"name": "gqa"})
    assert m.layout.k.out_features == 2 * 8 and m.layout.q.out_features == 4 * 8
    mqa = build((1, 5, 32), heads=4, layout={"name": "mqa"})
    assert mqa.layout.k.out_features == 8


def test_causal_equals_sdpa_is_causal():
    m = build((2, 7, 16), heads=2, causal=True)
    x = torch.randn(2, 7, 16)
    torch.testing.assert_close(m(x), sdpa_reference(m, x, is_causal=True), atol=1e-5, rtol=1e-5)
    also = build((2, 7, 16), heads=2, pattern={"name": "causal"})
    torch.testing.assert_close(also(x), m(x))


def test_window_mask_matches_a_naive_loop():
    m = build((1, 9, 8), heads=1, pattern={"name": "window", "_0": 5})
    mask = m.mask(9, "cpu")
    for i in range(9):
        for j in range(9):
            assert bool(mask[i, j]) == (abs(i - j) <= 2)


def test_window_covering_the_sequence_equals_full_attention():
    x = torch.randn(2, 6, 16)
    windowed = build((2, 6, 16), heads=2, pattern={"name": "window", "_0": 13})
    full = build((2, 6, 16), heads=2)
    torch.testing.assert_close(windowed(x), full(x))


@pytest.mark.catalog("S37")
def test_neighborhood_keeps_size_neighbours_at_the_borders():
    """DiNAT (S37): NAT: near an edge the window shifts inward instead of shrinking."""
    m = build((1, 10, 8), heads=1, pattern={"name": "neighborhood", "size": 3})
    mask = m.mask(10, "cpu")
    assert mask.sum(1).tolist() == [3] * 10
    assert mask[0].nonzero().flatten().tolist() == [0, 1, 2]
    assert mask[9].nonzero().flatten().tolist() == [7, 8, 9]


@pytest.mark.catalog("S37")
def test_dilated_neighborhood_stays_in_its_dilation_group():
    """DiNAT (S37):"""
    m = build((1, 12, 8), heads=1, pattern={"name": "neighborhood", "size": 3, "dilation": 2})
    mask = m.mask(12, "cpu")
    assert mask[4].nonzero().flatten().tolist() == [2, 4, 6]
    assert mask[0].nonzero().flatten().tolist() == [0, 2, 4]


@pytest.mark.catalog("S37")
def test_neighborhood2d_covering_the_grid_equals_full_attention():
    """DiNAT (S37):"""
    x = torch.randn(2, 8, 3, 4)
    nat = build((2, 8, 3, 4), heads=2, pattern={"name": "neighborhood2d", "size": 7})
    full = build((2, 8, 3, 4), heads=2)
    torch.testing.assert_close(nat(x), full(x))


@pytest.mark.catalog("S37")
def test_neighborhood2d_is_a_product_of_row_and_column_windows():
    """DiNAT (S37):"""
    m = build((1, 8, 5, 5), heads=1, pattern={"name": "neighborhood2d", "size": 3})
    mask = m.mask(25, "cpu").view(5, 5, 5, 5)
    assert mask[2, 2].sum() == 9 and mask[0, 0].sum() == 9
    assert mask[0, 0, :3, :3].all() and not mask[0, 0, 3:].any()


@pytest.mark.catalog("S06")
def test_sigmoid_attention_matches_its_formula():
    """Sigmoid attention with b = -log n (S06): out = sigmoid(qk^T/sqrt(d) - log n) v."""
    m = build((1, 6, 8), heads=1, score={"name": "sigmoid"})
    x = torch.randn(1, 6, 8)
    q, k, v = m.layout.qkv(x)
    w = torch.sigmoid(q @ k.transpose(-1, -2) / math.sqrt(8) - math.log(6))
    torch.testing.assert_close(m(x), m.layout.out(w @ v))


@pytest.mark.catalog("S06")
def test_sigmoid_bias_minus_log_n_keeps_initial_row_sums_near_one_at_every_length():
    """The paper's reason for b = -log n: at initialisation (logits near 0) a
    sigmoid row sums to n * sigmoid(-log n) = n / (n + 1), about 1 as softmax's
    does, at every length; with b = 0 the row sum is n / 2 and grows with n (the
    large early attention norm the paper must tame)."""
    g = torch.Generator().manual_seed(0)
    for n in (16, 64, 256):
        logits = 0.1 * torch.randn(2, 2, n, n, generator=g)
        for bias, low, high in ((None, 0.85, 1.1), (0.0, 0.45 * n, 0.55 * n)):
            score = get_score("sigmoid")(2, bias=bias)
            sums = score.weights(logits, None).sum(-1)
            assert low < sums.min() and sums.max() < high, (n, bias, sums.min(), sums.max())


@pytest.mark.catalog("S06")
def test_sigmoid_qk_norm_is_a_gained_cosine_that_commutes_with_rope():
    """QK-norm (S06's stabiliser): logits = gain_h * sqrt(d) * cos(q, k), so they do
    not change when a query or key is rescaled, stay within +-gain * sqrt(d), and
    RoPE (a rotation, norm-preserving) gives the same logits before or after."""
    m = build((1, 6, 8), heads=2, score={"name": "sigmoid", "qk_norm": True}, position={"name": "rope"})
    with torch.no_grad():
        m.score.qk_gain.copy_(torch.tensor([1.0, 2.5]).view(2, 1, 1))
    q, k = torch.randn(1, 2, 6, 4), torch.randn(1, 2, 6, 4)
    cos = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-1, -2)
    want = cos * 2.0 * torch.tensor([1.0, 2.5]).view(2, 1, 1)  # sqrt(d) = 2
    torch.testing.assert_close(m.score.logits(q, k, m.scale), want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(m.score.logits(7 * q, 0.5 * k, m.scale), want, atol=1e-4, rtol=1e-4)
    qr, kr = m.position.rotate(q, k, None)
    qn, kn = (t * torch.rsqrt(t.square().mean(-1, keepdim=True)) for t in (q, k))
    qnr, knr = m.position.rotate(qn, kn, None)
    torch.testing.assert_close(m.score.logits(qr, kr, m.scale), m.score.logits(qnr, knr, m.scale), atol=1e-4, rtol=1e-4)
    x = torch.randn(1, 6, 8)
    assert m.pattern_module is None and torch.isfinite(m(x)).all()


@pytest.mark.catalog("S06")
def test_layer_scale_multiplies_each_channel_by_a_learned_scale_that_starts_at_init():
    spec = get_op("layer_scale")
    for shape in ((2, 5, 6), (2, 6, 3, 3)):
        m = spec.build(shape, spec.bind({"init": 1e-4}))
        x = torch.randn(shape)
        torch.testing.assert_close(m(x), 1e-4 * x)
        with torch.no_grad():
            m.gamma.copy_(torch.arange(6.0))
        channel = torch.arange(6.0).view(1, 1, 6) if len(shape) == 3 else torch.arange(6.0).view(1, 6, 1, 1)
        torch.testing.assert_close(m(x), x * channel)
        assert spec.param_count(shape, spec.bind({"init": 1e-4}), ()) == 6


def test_rope_scores_depend_only_on_relative_position():
    m = build((1, 16, 16), heads=1, position={"name": "rope"})
    q = torch.randn(1, 1, 1, 16).expand(1, 1, 16, 16)
    k = torch.randn(1, 1, 1, 16).expand(1, 1, 16, 16)
    qr, kr = m.position.rotate(q, k, None)
    scores = (qr @ kr.transpose(-1, -2))[0, 0]
    # equal along diagonals: score(i, j) depends on i - j only
    for offset in range(-3, 4):
        diag = torch.diagonal(scores, offset)
        torch.testing.assert_close(diag, diag[0].expand_as(diag), atol=1e-4, rtol=1e-4)


def test_alibi_bias_is_minus_slope_times_distance():
    m = build((1, 5, 16), heads=2, position={"name": "alibi"})
    bias = m.position.bias(5, 5, "cpu")
    assert bias.shape == (2, 5, 5)
    torch.testing.assert_close(bias[0, 4, 1], torch.tensor(-3 * 2 ** -4.0))
    torch.testing.assert_close(bias[1, 0, 2], torch.tensor(-2 * 2 ** -8.0))


def test_image_input_attends_over_pixels():
    m = build((2, 16, 4, 4), heads=4)
    x = torch.randn(2, 16, 4, 4)
    tokens = x.flatten(2).transpose(1, 2)
    expected = sdpa_reference(m, tokens).transpose(1, 2).reshape(2, 16, 4, 4)
    torch.testing.assert_close(m(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.catalog("S37")
@pytest.mark.parametrize(
    "args,reason",
    [
        ({"pattern": {"name": "neighborhood2d", "size": 3}}, "2D"),
        ({"heads": 3}, "do not split"),
        ({"layout": {"name": "gqa"}, "kv_heads": 3}, "must divide"),
        ({"score": {"name": "sigmoidd"}}, "did you mean 'sigmoid'"),
        ({"position": {"name": "rope"}, "heads": 8}, "divisible by 4"),
    ],
)
def test_impossible_combinations_are_refused_by_the_shape_rule(args, reason):
    with pytest.raises(ShapeError, match=reason):
        SPEC.cls.output_shape((2, 10, 16), **SPEC.bind(args))


@pytest.mark.catalog("S37")
def test_the_sampler_never_picks_a_2d_pattern_for_a_sequence():
    g = Grammar.from_text("net : attention(heads=2, pattern=full|neighborhood2d(3)) \n")
    for seed in range(20):
        d = g.sample((2, 8, 16), seed=seed)
        assert d.ops()[0].args["pattern"]["name"] == "full"
    image = [g.sample((2, 16, 4, 4), seed=s).ops()[0].args["pattern"]["name"] for s in range(20)]
    assert "neighborhood2d" in image


def test_gradients_flow():
    m = build((2, 6, 16), heads=2, position={"name": "rope"}, pattern={"name": "window", "_0": 3})
    x = torch.randn(2, 6, 16, requires_grad=True)
    m(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_kernel_keywords_come_from_parts_that_declare_them():
    """Each score / pattern / position class says which flash-kernel keywords compute
    it; a subclass that does not declare its own is not served (it may change the
    maths), and a configuration a part cannot serve says why."""
    import torch

    from archgram.ops.attention.parts import kernel_keywords
    from archgram.ops.attention.patterns import Causal, Window
    from archgram.ops.attention.positions import ALiBi
    from archgram.ops.attention.scores import Sigmoid, Softmax
    from archgram.ops.attention.sparse_patterns import BlockSparse

    class Tempered(Softmax):
        def weights(self, logits, mask):
            return super().weights(2 * logits, mask)

    alibi = ALiBi(4, 8)
    kw, why = kernel_keywords({"score": Softmax(4), "pattern": Window(size=5, dilation=2), "position": alibi},
                              16, None, "cpu")
    assert why == "" and kw["score"] == "softmax" and kw["window"] == 4 and kw["dilation"] == 2
    assert torch.equal(kw["alibi_slopes"], alibi.slopes())
    assert kernel_keywords({"score": Tempered(4), "pattern": Causal()}, 16, None, "cpu") == (
        None, "score Tempered has no kernel")
    assert kernel_keywords({"score": Sigmoid(4, qk_norm=True)}, 16, None, "cpu") == (
        None, "score Sigmoid: this configuration has no kernel")
    assert kernel_keywords({"score": Sigmoid(4, bias=-2.0)}, 16, None, "cpu")[0] == {"score": "sigmoid", "sigmoid_bias": -2.0}
    no_diagonal = BlockSparse(block=4)
    no_diagonal.layout = lambda nb, device: torch.zeros(nb, nb, dtype=torch.bool)
    assert kernel_keywords({"pattern": no_diagonal}, 16, None, "cpu")[1] == "pattern BlockSparse: this configuration has no kernel"


def test_agent_value_conv_is_sized_by_the_value_heads_under_a_wide_qk_layout():
    """random_qk (S76) gives q/k the model width while values keep head_dim: agent
    attention's depthwise value conv (S40) must be sized by the values (a sampled
    architecture crashed at its first forward before)."""
    import torch

    from archgram.ops.attention.op import Attention

    op = Attention((2, 16, 32), heads=4, layout={"name": "random_qk"}, score={"name": "agent"})
    assert op.score.dwc.in_channels == 4 * 8
    assert op(torch.randn(2, 16, 32)).shape == (2, 16, 32)
