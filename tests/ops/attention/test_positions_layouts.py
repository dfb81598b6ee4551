"""Positions (GPSA, positional-only, URPE, RoPE+ALiBi, learned relative bias) and head layouts (SQA,
MLA, TPLA, MoH) against explicit formulas and the properties their papers state."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from archgram.errors import ShapeError
from archgram.grammar.model import Grammar
from archgram.ops.registry import get_op

SPEC = get_op("attention")


def build(shape, **args):
    torch.manual_seed(0)
    return SPEC.build(shape, SPEC.bind(args))


# --- S22 GPSA -----------------------------------------------------------------


@pytest.mark.catalog("S22")
def test_gpsa_gate_one_is_pure_positional_attention():
    """ConViT: sigmoid(lambda) = 1 leaves only softmax(v_pos . r_ij)."""
    m = build((2, 7, 16), heads=4, position={"name": "gpsa"})
    with torch.no_grad():
        m.position.gate.fill_(1e4)
    x = torch.randn(2, 7, 16)
    _, _, v = m.layout.qkv(x)
    expected = m.layout.out(m.position.positional() @ v)
    torch.testing.assert_close(m(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.catalog("S22")
def test_gpsa_gate_zero_is_pure_content_attention():
    m = build((2, 7, 16), heads=4, position={"name": "gpsa"})
    with torch.no_grad():
        m.position.gate.fill_(-1e4)
    x = torch.randn(2, 7, 16)
    q, k, v = m.layout.qkv(x)
    torch.testing.assert_close(m(x), m.layout.out(F.scaled_dot_product_attention(q, k, v)), atol=1e-5, rtol=1e-5)


@pytest.mark.catalog("S22")
def test_gpsa_gate_mixes_the_two_maps_convexly():
    m = build((1, 6, 8), heads=2, position={"name": "gpsa"})
    with torch.no_grad():
        m.position.gate.copy_(torch.tensor([0.3, -2.0]))
    w = torch.softmax(torch.randn(1, 2, 6, 6), -1)
    g = torch.sigmoid(torch.tensor([0.3, -2.0])).view(2, 1, 1)
    expected = (1 - g) * w + g * m.position.positional()
    torch.testing.assert_close(m.position.reweight(w, None, None), expected)
    torch.testing.assert_close(expected.sum(-1), torch.ones(1, 2, 6))


@pytest.mark.catalog("S22")
def test_gpsa_locality_init_makes_each_head_attend_at_its_offset_on_a_grid():
    """ConViT's local init: head h peaks at query + Delta_h, a 3x3 kernel for 9 heads."""
    m = build((1, 18, 7, 7), heads=9, position={"name": "gpsa", "locality": 2.0})
    pos = m.position.positional().view(9, 7, 7, 7, 7)  # head, query row/col, key row/col
    seen = set()
    for h in range(9):
        peak = pos[h, 3, 3].flatten().argmax().item()  # the centre query
        dy, dx = peak // 7 - 3, peak % 7 - 3
        seen.add((dx, dy))
    assert seen == {(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)}


@pytest.mark.catalog("S22")
def test_gpsa_locality_on_a_sequence_centres_heads_around_the_query():
    m = build((1, 12, 16), heads=4, position={"name": "gpsa"})
    pos = m.position.positional()
    peaks = [pos[h, 6].argmax().item() - 6 for h in range(4)]
    assert peaks == [-1, 0, 1, 2]


@pytest.mark.catalog("S22")
def test_gpsa_respects_the_causal_mask():
    m = build((1, 8, 16), heads=2, position={"name": "gpsa"}, causal=True)
    x = torch.randn(1, 8, 16)
    y = m(x)
    x2 = x.clone()
    x2[:, 5:] = torch.randn(1, 3, 16)  # the future must not change earlier outputs
    torch.testing.assert_close(m(x2)[:, :5], y[:, :5])


# --- S30 positional attention --------------------------------------------------


@pytest.mark.catalog("S30")
def test_positional_attention_weights_do_not_depend_on_the_input():
    """Back de Luca et al.: weights depend on positional encodings only."""
    m = build((2, 9, 16), heads=2, position={"name": "positional"})
    a, b = torch.randn(2, 9, 16), 5 * torch.randn(2, 9, 16)

    def weights(x):
        q, k, _ = m.layout.qkv(x)
        q, k = m.position.rotate(q, k, None)
        return torch.softmax(q @ k.transpose(-1, -2) * m.scale, -1)

    torch.testing.assert_close(weights(a), weights(b))
    # values still carry content: out = W_pos v, through the op's own forward
    _, _, v = m.layout.qkv(a)
    torch.testing.assert_close(m(a), m.layout.out(weights(a) @ v), atol=1e-5, rtol=1e-5)


@pytest.mark.catalog("S30")
def test_positional_attention_on_a_grid_routes_by_row_and_column_only():
    """On an image the weights come from row/column encodings only: two different
    images get identical attention maps, and the output is linear in the input
    (values carry content, routing does not)."""
    m = build((1, 8, 3, 4), heads=2, position={"name": "positional"})
    a, b = torch.randn(1, 8, 3, 4), 3 * torch.randn(1, 8, 3, 4)
    enc = m.position.encodings(12, (3, 4), "cpu")
    assert torch.equal(enc[0, : enc.shape[1] // 2], enc[3, : enc.shape[1] // 2])  # same row, same row features
    torch.testing.assert_close(m(a + b) - m(torch.zeros_like(a)), (m(a) - m(torch.zeros_like(a))) + (m(b) - m(torch.zeros_like(a))),
                               atol=1e-5, rtol=1e-5)


# --- S32 URPE ------------------------------------------------------------------


@pytest.mark.catalog("S32")
def test_urpe_is_softmax_with_bias_times_a_toeplitz_matrix():
    """Luo et al. Eq.: Attn = (softmax(QK^T/sqrt(d) + B) * C) V, no renormalisation."""
    n, heads = 6, 2
    m = build((2, n, 16), heads=heads, position={"name": "urpe"})
    torch.manual_seed(1)
    with torch.no_grad():
        m.position.b.normal_()
        m.position.c.normal_()
    b, c = m.position.b.detach(), m.position.c.detach()
    bias, toeplitz = torch.empty(heads, n, n), torch.empty(heads, n, n)
    for h in range(heads):
        for i in range(n):
            for j in range(n):
                bias[h, i, j] = b[h, i - j + n - 1]
                toeplitz[h, i, j] = c[h, i - j + n - 1]
    x = torch.randn(2, n, 16)
    q, k, v = m.layout.qkv(x)
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8) + bias, -1) * toeplitz
    torch.testing.assert_close(m(x), m.layout.out(w @ v), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(w.sum(-1), torch.ones(2, heads, n))  # rows need not sum to 1


@pytest.mark.catalog("S32")
def test_urpe_matrix_is_toeplitz_and_starts_as_plain_attention():
    m = build((1, 5, 16), heads=2, position={"name": "urpe"})
    with torch.no_grad():
        m.position.c.copy_(torch.arange(18.0).view(2, 9))
    t = m.position.toeplitz(m.position.c, 5, 5)
    for h in range(2):
        for off in range(-4, 5):
            d = torch.diagonal(t[h], off)
            assert (d == d[0]).all()
    fresh = build((2, 5, 16), heads=2, position={"name": "urpe"})
    plain = build((2, 5, 16), heads=2)
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(fresh(x), plain(x))


# --- S67 RoPE + ALiBi (harmonic) -------------------------------------------------


@pytest.mark.catalog("S67")
def test_rope_alibi_keeps_relative_shift_invariance_and_a_harmonic_linear_bias():
    m = build((1, 12, 32), heads=4, position={"name": "rope_alibi"})
    q = torch.randn(1, 4, 1, 8).expand(1, 4, 12, 8)
    k = torch.randn(1, 4, 1, 8).expand(1, 4, 12, 8)
    qr, kr = m.position.rotate(q, k, None)
    bias = m.position.bias(12, 12, "cpu")
    logits = (qr @ kr.transpose(-1, -2))[0] + bias
    for h in range(4):  # rotary term + linear bias: still a function of i - j only
        for off in range(-4, 5):
            d = torch.diagonal(logits[h], off)
            torch.testing.assert_close(d, d[0].expand_as(d), atol=1e-4, rtol=1e-4)
    i, j = torch.arange(12)[:, None], torch.arange(12)[None, :]
    for h in range(4):  # the bias is exactly -|i - j| / (h + 1)
        torch.testing.assert_close(bias[h], -(i - j).abs().float() / (h + 1))
    with pytest.raises(ShapeError, match="divisible by 4"):
        SPEC.cls.output_shape((1, 12, 12), **SPEC.bind({"heads": 2, "position": {"name": "rope_alibi"}}))


def test_rel_bias_adds_a_learned_clipped_offset_table_to_the_logits():
    """Logits + table[h, clip(j - i, -R, R) + R]: hand-built for R = 2; zero at
    initialisation (plain attention); the table is a trained parameter."""
    m = build((1, 6, 16), heads=2, position={"name": "rel_bias", "max_distance": 2})
    pos = m.position
    assert torch.equal(pos.bias(6, 6, "cpu"), torch.zeros(2, 6, 6))
    assert any(p is pos.table for p in m.parameters())
    with torch.no_grad():
        pos.table.copy_(torch.arange(10.0).view(2, 5))  # head h, column c: 5h + c
    bias = pos.bias(6, 6, "cpu")
    for i in range(6):
        for j in range(6):
            c = max(-2, min(2, j - i)) + 2
            assert bias[0, i, j] == c and bias[1, i, j] == 5 + c
    with pytest.raises(ShapeError, match="max_distance"):
        build((1, 6, 16), heads=2, position={"name": "rel_bias", "max_distance": 0})


# --- S42 SQA --------------------------------------------------------------------


@pytest.mark.catalog("S42")
def test_sqa_equals_explicit_per_head_sdpa():
    """Filipek: Hq = 2 of H = 8 query heads (head dim dim/H), Hkv = 1 shared, out from Hq*d."""
    m = build((2, 10, 32), heads=8, kv_heads=1, layout={"name": "sqa", "query_heads": 2})
    lay = m.layout
    assert lay.q.out_features == 2 * 4 and lay.k.out_features == 4 and lay.o.in_features == 2 * 4
    x = torch.randn(2, 10, 32)
    q = lay.q(x).view(2, 10, 2, 4)
    k, v = lay.k(x), lay.v(x)
    heads = [F.scaled_dot_product_attention(q[:, :, h], k, v) for h in range(2)]
    expected = lay.o(torch.cat(heads, dim=-1))
    torch.testing.assert_close(m(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.catalog("S42")
def test_sqa_defaults_and_refusals():
    sym = build((1, 4, 32), heads=8, layout={"name": "sqa"})  # Hq = H/2, Hkv = Hq (sSQA)
    assert sym.layout.heads == 4 and sym.layout.kv == 4
    assert sym.position.heads == 4  # the other axes see the computed heads
    for args, reason in [
        ({"layout": {"name": "sqa", "query_heads": 9}}, "query_heads"),
        ({"layout": {"name": "sqa", "query_heads": 2}, "kv_heads": 4}, "exceed"),
        ({"layout": {"name": "sqa", "query_heads": 4}, "kv_heads": 3}, "must divide"),
    ]:
        with pytest.raises(ShapeError, match=reason):
            SPEC.cls.output_shape((1, 4, 32), heads=8, **{k: v for k, v in SPEC.bind(args).items() if k != "heads"})


# --- S68 MLA / TPLA ------------------------------------------------------------------


@pytest.mark.catalog("S68")
def test_mla_equals_explicit_low_rank_matrix_products():
    m = build((2, 7, 16), heads=2, layout={"name": "mla", "latent": 6})
    lay = m.layout
    x = torch.randn(2, 7, 16)
    c = x @ lay.down.weight.T  # (B, N, r)
    k = (c @ lay.up_k.weight.T).view(2, 7, 2, 8).transpose(1, 2)
    v = (c @ lay.up_v.weight.T).view(2, 7, 2, 8).transpose(1, 2)
    q = (x @ lay.q.weight.T + lay.q.bias).view(2, 7, 2, 8).transpose(1, 2)
    o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, 7, 16)
    torch.testing.assert_close(m(x), o @ lay.o.weight.T + lay.o.bias, atol=1e-5, rtol=1e-5)
    assert lay.kv_cache_per_token() == 6
    assert build((1, 7, 16), heads=2).layout.kv_cache_per_token() == 2 * 2 * 8


@pytest.mark.catalog("S68")
def test_tpla_with_one_shard_equals_mla():
    x = torch.randn(2, 7, 16)
    mla = build((2, 7, 16), heads=2, layout={"name": "mla", "latent": 6})
    tpla = build((2, 7, 16), heads=2, layout={"name": "tpla", "latent": 6, "shards": 1})
    tpla.load_state_dict(mla.state_dict())
    torch.testing.assert_close(tpla(x), mla(x), atol=1e-6, rtol=1e-6)


@pytest.mark.catalog("S68")
def test_tpla_shards_attend_with_their_latent_slice_and_sum():
    """Tang et al.: per shard s, softmax over q_h . (W_uk[h,:,s] c_s), outputs all-reduced."""
    m = build((1, 5, 16), heads=2, layout={"name": "tpla", "latent": 6, "shards": 2})
    lay = m.layout
    x = torch.randn(1, 5, 16)
    c = x @ lay.down.weight.T
    q = lay.q(x).view(1, 5, 2, 8).transpose(1, 2)
    total = 0
    for cols in (slice(0, 3), slice(3, 6)):
        k = (c[..., cols] @ lay.up_k.weight[:, cols].T).view(1, 5, 2, 8).transpose(1, 2)
        v = (c[..., cols] @ lay.up_v.weight[:, cols].T).view(1, 5, 2, 8).transpose(1, 2)
        total = total + F.scaled_dot_product_attention(q, k, v)
    expected = lay.o(total.transpose(1, 2).reshape(1, 5, 16))
    torch.testing.assert_close(m(x), expected, atol=1e-5, rtol=1e-5)
    assert lay.kv_cache_per_token() == 6 and lay.kv_cache_per_device() == 3
    with pytest.raises(ShapeError, match="dividing"):
        SPEC.cls.output_shape((1, 5, 16), **SPEC.bind({"heads": 2, "layout": {"name": "tpla", "latent": 6, "shards": 4}}))


# --- S19 MoH ----------------------------------------------------------------------------


@pytest.mark.catalog("S19")
def test_moh_with_a_uniform_router_over_all_heads_equals_mha():
    """A zero router gives every active head gate 1: k = all routed heads is MHA."""
    x = torch.randn(2, 6, 16)
    for shared in (0, 1, 2):
        moh = build((2, 6, 16), heads=4, layout={"name": "moh", "k": 4 - shared, "shared": shared})
        with torch.no_grad():
            for name, p in moh.named_parameters():
                if ".route" in name:
                    p.zero_()
        mha = build((2, 6, 16), heads=4)
        mha.load_state_dict({k: v for k, v in moh.state_dict().items() if ".route" not in k})
        torch.testing.assert_close(moh(x), mha(x), atol=1e-5, rtol=1e-5)


@pytest.mark.catalog("S19")
def test_moh_routes_top_k_heads_and_zeroes_the_rest_exactly():
    m = build((2, 9, 32), heads=8, layout={"name": "moh", "k": 3, "shared": 2})
    x = torch.randn(2, 9, 32)
    g = m.layout.gates(x)
    assert ((g != 0).sum(-1) == 2 + 3).all()  # shared + k active per token
    assert (g[..., :2] > 0).all()  # shared heads always on
    # output = W_o sum_i g_i head_i, head_i by plain SDPA
    q, k, v = m.layout.qkv(x)
    heads = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, d)
    mixed = (heads * g.transpose(1, 2).unsqueeze(-1)).transpose(1, 2).reshape(2, 9, 32)
    torch.testing.assert_close(m(x), m.layout.o(mixed), atol=1e-5, rtol=1e-5)
    with pytest.raises(ShapeError, match="top-k"):
        SPEC.cls.output_shape((1, 4, 32), **SPEC.bind({"heads": 8, "layout": {"name": "moh", "k": 7, "shared": 2}}))


# --- the axes together ---------------------------------------------------------------------


@pytest.mark.catalog("S32")
def test_reweighting_positions_are_refused_for_scores_without_weights():
    from archgram.ops.attention.parts import SCORES
    from archgram.ops.attention.scores import Score

    own = [name for name, cls in SCORES.parts.items() if cls.attend is not Score.attend]
    if not own:
        pytest.skip("no score overrides attend")
    with pytest.raises(ShapeError, match="reweights"):
        SPEC.cls.output_shape((1, 8, 16), **SPEC.bind({"heads": 2, "score": {"name": own[0]}, "position": {"name": "urpe"}}))


@pytest.mark.catalog("S19", "S22", "S30", "S32", "S42", "S67", "S68")
@pytest.mark.parametrize("layout", [{"name": "sqa", "query_heads": 2}, {"name": "tpla", "latent": 8, "shards": 2}, {"name": "moh", "k": 2, "shared": 1}])
@pytest.mark.parametrize("position", ["gpsa", "urpe", "positional", "rope_alibi", "alibi", "rel_bias"])
def test_layouts_and_positions_combine_and_backpropagate_finite_gradients(layout, position):
    m = build((2, 6, 32), heads=4, layout=layout, position={"name": position}, causal=True)
    x = torch.randn(2, 6, 32, requires_grad=True)
    m(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


LAYOUTS = "mha|sqa(2)|mla(16)|tpla(16, 2)|moh(1, 1)"
POSITIONS = "none|rope_alibi|urpe|gpsa|positional|rel_bias"


@pytest.mark.catalog("S19", "S22", "S30", "S32", "S42", "S67", "S68")
def test_the_sampler_picks_the_new_choices_and_the_shipped_grammar_offers_them():
    from pathlib import Path

    import archgram

    g = Grammar.from_text(f"net : attention(heads=2|4, kv_heads=1|2, layout={LAYOUTS}, position={POSITIONS})\n")
    layouts, positions = set(), set()
    for seed in range(40):
        args = g.sample((2, 8, 16), seed=seed).ops()[0].args
        layouts.add(args["layout"]["name"])
        positions.add(args["position"]["name"])
    assert {"sqa", "mla", "tpla", "moh"} <= layouts
    assert {"gpsa", "urpe", "positional", "rope_alibi", "rel_bias"} <= positions
    path = Path(archgram.__file__).parent / "grammars" / "attention.pcfg"
    text = path.read_text()
    Grammar.from_text(text, str(path))  # still parses
    for choice in LAYOUTS.split("|") + POSITIONS.split("|"):
        assert choice in text


@pytest.mark.catalog("S19")
def test_moh_load_balance_loss_is_one_when_heads_share_tokens_and_grows_when_one_head_takes_all():
    """MoH's L_b = E sum_i f_i P_i: every forward leaves it in ``aux_loss``; a router that
    sends every token to one head scores near E, an even spread scores 1."""
    from archgram.ops.attention.layouts import balance_loss

    torch.manual_seed(0)
    m = build((2, 16, 32), heads=4, layout={"name": "moh", "k": 1})
    x = torch.randn(2, 16, 32)
    m(x)
    p = torch.softmax(m.layout.route(x), -1).reshape(-1, 4)
    chosen = torch.zeros_like(p).scatter(-1, p.argmax(-1, keepdim=True), 1.0)
    torch.testing.assert_close(m.layout.aux_loss, 4 * (chosen.mean(0) * p.mean(0)).sum())
    even = torch.full((8, 4), 0.25)
    assert balance_loss(even, torch.eye(4).repeat(2, 1)) == pytest.approx(1.0)
    collapsed = torch.tensor([[0.97, 0.01, 0.01, 0.01]]).repeat(8, 1)
    assert balance_loss(collapsed, torch.eye(4)[[0] * 8]) == pytest.approx(4 * 0.97)
