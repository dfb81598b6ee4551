"""Score functions against direct formulas on hand-sized inputs and the properties
their papers state (S05, S09, S31, S38, S45, S63, S66, Gemma-2 soft-capping)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from archgram.errors import ShapeError
from archgram.ops.registry import get_op

SPEC = get_op("attention")
N, DIM, HEADS = 6, 16, 2
D = DIM // HEADS


def build(score, shape=(2, N, DIM), **args):
    torch.manual_seed(0)
    value = {"name": score} if isinstance(score, str) else score
    return SPEC.build(shape, SPEC.bind({"heads": HEADS, "score": value, **args}))


def qkv(m, x):
    q, k, v = m.layout.qkv(x)
    return q, m.layout.expand(k), m.layout.expand(v)


def attend_with(m, x, weights):
    """Layout output of explicit (B, H, N, N) weights: the oracle's last step."""
    _, _, v = qkv(m, x)
    return m.layout.out(weights @ v)


def dot_logits(m, x):
    q, k, _ = qkv(m, x)
    return q @ k.transpose(-1, -2) / math.sqrt(D)


CAUSAL = torch.ones(N, N, dtype=torch.bool).tril()


# ------------------------------------------------------------------ S31
@pytest.mark.catalog("S31")
def test_clipped_softmax_is_the_stretched_and_clipped_softmax():
    m = build({"name": "clipped_softmax", "gamma": -0.1, "zeta": 1.05})
    x = torch.randn(2, N, DIM)
    p = torch.softmax(dot_logits(m, x), -1)
    expected = torch.clamp(1.15 * p - 0.1, 0.0, 1.0)
    torch.testing.assert_close(m(x), attend_with(m, x, expected))


@pytest.mark.catalog("S31")
def test_clipped_softmax_lets_a_head_output_exact_zeros_with_finite_logits():
    m = build({"name": "clipped_softmax", "gamma": -0.3})
    w = m.score.weights(torch.randn(1, 1, 4, N), None)
    assert (w == 0).any() and torch.isfinite(w).all()
    plain = build({"name": "clipped_softmax", "gamma": 0.0, "zeta": 1.0})
    logits = torch.randn(1, 1, 4, N)
    torch.testing.assert_close(plain.score.weights(logits, None), torch.softmax(logits, -1))


@pytest.mark.catalog("S31")
@pytest.mark.parametrize("params", [{"gamma": 0.1}, {"zeta": 0.5}])
def test_clipped_softmax_refuses_stretches_outside_the_paper_range(params):
    with pytest.raises(ShapeError, match="clipped_softmax"):
        SPEC.cls.output_shape((2, N, DIM), **SPEC.bind({"score": {"name": "clipped_softmax", **params}}))


@pytest.mark.catalog("S31")
def test_gated_attention_scales_each_head_by_a_sigmoid_gate_of_the_layer_input():
    """Bondarenko et al.: out_h = sigmoid(W_g x + b_g)_h * softmax(q k^T) v, the gate
    read from the input x itself (not the query), one scalar per token and head."""
    m = build("gated_softmax")
    with torch.no_grad():
        m.gate.proj.weight.normal_()
        m.gate.proj.bias.copy_(torch.tensor([0.5, -1.0]))
    x = torch.randn(2, N, DIM)
    q, k, v = qkv(m, x)
    gate = torch.sigmoid(x @ m.gate.proj.weight.T + m.gate.proj.bias).transpose(1, 2)  # (B, H, N)
    out = torch.softmax(dot_logits(m, x), -1) @ v * gate[..., None]
    torch.testing.assert_close(m(x), m.layout.out(out))
    # the gate reads x, not the query: with W_q = 0 it still varies from token to token
    with torch.no_grad():
        m.layout.q.weight.zero_()
    assert m.gate(x).std() > 0.05


@pytest.mark.catalog("S31")
def test_gated_attention_decodes_token_by_token_with_its_input_gate():
    from archgram.ops.attention.decode import decode

    m = build("gated_softmax", causal=True)
    with torch.no_grad():
        m.gate.proj.weight.normal_()
    x = torch.randn(2, N, DIM)
    with torch.no_grad():
        torch.testing.assert_close(decode(m, x), m(x), atol=1e-5, rtol=1e-5)


@pytest.mark.catalog("S31")
def test_a_closed_gate_lets_a_head_do_nothing():
    """The paper's motivation: a no-op head without huge logits."""
    m = build("gated_softmax")
    with torch.no_grad():
        m.gate.proj.bias.fill_(-60.0)
    y = m(torch.randn(2, N, DIM))
    torch.testing.assert_close(y, m.layout.o.bias.expand_as(y))


# -------------------------------------------------------------- soft-cap
def test_softcap_is_softmax_of_cap_times_tanh():
    m = build({"name": "softcap", "cap": 0.5})
    x = torch.randn(2, N, DIM)
    w = torch.softmax(0.5 * torch.tanh(dot_logits(m, x) / 0.5), -1)
    torch.testing.assert_close(m(x), attend_with(m, x, w))
    logits = torch.randn(1, 1, 3, N) * 100
    capped = m.score.weights(logits, None)
    assert capped.max() <= math.exp(0.5) / (math.exp(0.5) + (N - 1) * math.exp(-0.5)) + 1e-6


def test_softcap_far_above_the_logits_is_plain_softmax():
    m = build({"name": "softcap", "cap": 1e4})
    logits = torch.randn(1, 2, 3, N)
    torch.testing.assert_close(m.score.weights(logits, None), torch.softmax(logits, -1))


# ------------------------------------------------------------------ S38
@pytest.mark.catalog("S38")
def test_softplus_reweight_matches_a_row_by_row_formula_under_a_causal_mask():
    m = build({"name": "softplus_reweight", "power": 3.0}, causal=True)
    x = torch.randn(1, N, DIM)
    s = dot_logits(m, x)
    w = torch.zeros_like(s)
    for i in range(N):  # query i sees keys 0..i, so N_i = i + 1
        a = F.softplus(math.log(i + 1) * s[..., i, : i + 1])
        a = a / a.sum(-1, keepdim=True)
        a = a**3
        w[..., i, : i + 1] = a / a.sum(-1, keepdim=True)
    torch.testing.assert_close(m(x), attend_with(m, x, w))


@pytest.mark.catalog("S38")
def test_reweighting_sharpens_the_distribution():
    """Power > 1 moves weight to the strongest keys: lower entropy, larger maximum."""
    logits = torch.randn(2, 2, N, N) * 3
    lssa = build({"name": "softplus_reweight", "power": 1.0}).score.weights(logits, None)
    lssar = build({"name": "softplus_reweight", "power": 4.0}).score.weights(logits, None)
    torch.testing.assert_close(lssa.sum(-1), torch.ones(2, 2, N))
    torch.testing.assert_close(lssar.sum(-1), torch.ones(2, 2, N))

    def entropy(p):
        return -(p * p.clamp_min(1e-30).log()).sum(-1)

    assert (entropy(lssar) < entropy(lssa)).all()
    assert (lssar.amax(-1) >= lssa.amax(-1)).all()


@pytest.mark.catalog("S38")
def test_softplus_length_scale_is_log_of_visible_keys():
    m = build("softplus_reweight")
    logits = torch.randn(1, 1, 1, 8)
    mask = torch.tensor([[True] * 4 + [False] * 4])
    a = F.softplus(math.log(4) * logits[..., :4])
    expected = torch.cat((a**2 / (a**2).sum(), torch.zeros(1, 1, 1, 4)), -1)
    torch.testing.assert_close(m.score.weights(logits, mask), expected)


# ------------------------------------------------------------------ S05
@pytest.mark.catalog("S05")
def test_karat_with_zero_coefficients_and_exp_base_reduces_to_softmax():
    m = build({"name": "karat", "grid": 4})
    with torch.no_grad():
        m.score.cos.zero_()
        m.score.sin.zero_()
    x = torch.randn(2, N, DIM)
    torch.testing.assert_close(m(x), attend_with(m, x, torch.softmax(dot_logits(m, x), -1)))


@pytest.mark.catalog("S05")
def test_karat_is_a_fourier_series_per_head_then_l1_rows():
    m = build({"name": "karat", "grid": 2, "base": "none"})
    with torch.no_grad():
        m.score.cos.copy_(torch.tensor([[0.3, -0.2], [1.0, 0.1]]))
        m.score.sin.copy_(torch.tensor([[0.5, 0.4], [-0.7, 0.0]]))
    x = torch.randn(1, N, DIM)
    s = dot_logits(m, x)
    f = torch.zeros_like(s)
    for h in range(HEADS):
        for k in (1, 2):
            f[:, h] += m.score.cos[h, k - 1] * torch.cos(k * s[:, h]) + m.score.sin[h, k - 1] * torch.sin(k * s[:, h])
    torch.testing.assert_close(m(x), attend_with(m, x, f / f.abs().sum(-1, keepdim=True)))


@pytest.mark.catalog("S05")
def test_karat_starts_near_softmax_and_its_coefficients_get_gradients():
    m = build({"name": "karat", "grid": 3})
    assert m.score.cos.shape == (HEADS, 3)
    x = torch.randn(2, N, DIM)
    softmax_out = attend_with(m, x, torch.softmax(dot_logits(m, x), -1))
    y = m(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y, softmax_out, atol=0.05, rtol=0.05)
    y.square().sum().backward()
    for p in (m.score.cos, m.score.sin):
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


# ------------------------------------------------------------------ S09
@pytest.mark.catalog("S09")
def test_fixed_mixing_weights_do_not_depend_on_the_input():
    m = build({"name": "fixed_mixing", "max_len": 8})
    with torch.no_grad():
        m.score.table.normal_()
    x = torch.randn(2, N, DIM)
    w = torch.softmax(m.score.table[:, :N, :N], -1)[None].expand(2, -1, -1, -1)
    torch.testing.assert_close(m(x), attend_with(m, x, w))
    with torch.no_grad():  # q and k projections play no part
        m.layout.q.weight.normal_()
        m.layout.k.weight.normal_()
    torch.testing.assert_close(m(x), attend_with(m, x, w))


@pytest.mark.catalog("S09")
def test_fixed_mixing_refuses_sequences_longer_than_its_table():
    with pytest.raises(ShapeError, match="raise max_len"):
        SPEC.cls.output_shape((2, 9, DIM), **SPEC.bind({"score": {"name": "fixed_mixing", "max_len": 8}}))
    SPEC.cls.output_shape((2, 8, DIM), **SPEC.bind({"score": {"name": "fixed_mixing", "max_len": 8}}))


@pytest.mark.catalog("S09")
def test_l2_scores_are_negative_squared_distances():
    m = build("l2")
    x = torch.randn(2, N, DIM)
    q, k, _ = qkv(m, x)
    logits = -torch.cdist(q, k).square() / math.sqrt(D)
    torch.testing.assert_close(m.score.logits(q, k, 1 / math.sqrt(D)), logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m(x), attend_with(m, x, torch.softmax(logits, -1)), atol=1e-5, rtol=1e-5)
    # unlike the dot product, an identical key is always the most similar one
    same = m.score.logits(q, q, 1.0)
    assert (same.argmax(-1) == torch.arange(N)).all()


# ------------------------------------------------------------------ S45
@pytest.mark.catalog("S45")
def test_symmetric_similarity_gives_symmetric_logits_from_half_the_parameters():
    m = build("symmetric")
    assert m.score.upper.shape == (HEADS, D * (D + 1) // 2)
    with torch.no_grad():
        m.score.upper.normal_()
    x = torch.randn(2, N, DIM)
    q, k, _ = qkv(m, x)
    logits = m.score.logits(q, k, 1 / math.sqrt(D))
    torch.testing.assert_close(logits, logits.transpose(-1, -2))
    # W from the stored upper triangle, entry by entry
    w = torch.zeros(HEADS, D, D)
    i = 0
    for r in range(D):
        for c in range(r, D):
            w[:, r, c] = w[:, c, r] = m.score.upper[:, i]
            i += 1
    torch.testing.assert_close(logits, q @ w @ q.transpose(-1, -2) / math.sqrt(D))
    expected = attend_with(m, x, torch.softmax(logits, -1))
    with torch.no_grad():  # the k projection is unused
        m.layout.k.weight.normal_()
    torch.testing.assert_close(m(x), expected)


# ------------------------------------------------------------------ S66
def power_law_reference(score, q, k, v):
    """PLGA by its equations, one head at a time."""
    out = torch.empty_like(q)
    for h in range(q.shape[1]):
        for b in range(q.shape[0]):
            qh, kh = q[b, h], k[b, h]
            a = F.layer_norm(qh.T @ qh, (D,), score.norm.weight, score.norm.bias)
            for unit in score.learner:
                a = unit.norm(unit.down(F.silu(unit.gate(a)) * unit.up(a)) + a)
            z = score.weight[h] @ a + score.bias[h]
            a_lm = z * torch.sigmoid(z) * z + 1e-9
            g = score.coupling[h] @ a_lm ** score.power[h] + score.coupling_bias[h]
            w = torch.softmax(qh @ g @ kh.T / math.sqrt(D), -1)
            out[b, h] = w @ v[b, h]
    return out


@pytest.mark.catalog("S66")
def test_power_law_g_cache_replaces_the_metric_network_with_the_once_inferred_g():
    """G-cache: the arming call is unchanged and stores G_LM of its first sample;
    later calls attend with q G_cached k^T without running the metric or its
    deep learner (a different input still uses the cached G); clearing the
    cache restores the full computation."""
    m = build({"name": "power_law", "layers": 1}, shape=(1, N, DIM))
    x, y = torch.randn(1, N, DIM), torch.randn(1, N, DIM)
    plain_x, plain_y = m(x), m(y)
    m.score.g_cache(True)
    torch.testing.assert_close(m(x), plain_x)
    q, _, _ = qkv(m, x)
    cached = m.score.curvature(q, False)
    torch.testing.assert_close(m.score._g_cache, cached)
    real = m.score.curvature
    m.score.curvature = lambda q, prefix: pytest.fail("the G-cache must skip the metric network")
    qy, ky, _ = qkv(m, y)
    want = attend_with(m, y, torch.softmax(qy @ cached @ ky.transpose(-1, -2) / math.sqrt(D), -1))
    torch.testing.assert_close(m(y), want)
    assert not torch.allclose(m(y), plain_y)  # y's own G differs from x's (untrained)
    m.score.curvature = real
    m.score.g_cache(False)
    torch.testing.assert_close(m(y), plain_y)


@pytest.mark.catalog("S66")
def test_power_law_attention_matches_its_equations():
    m = build({"name": "power_law", "layers": 2})
    x = torch.randn(2, N, DIM)
    q, k, v = qkv(m, x)
    torch.testing.assert_close(m(x), m.layout.out(power_law_reference(m.score, q, k, v)), atol=1e-5, rtol=1e-4)


@pytest.mark.catalog("S66")
def test_power_law_with_identity_curvature_is_dot_product_attention():
    """The paper's special case: G_LM = I gives scaled dot-product attention."""
    m = build("power_law")
    m.score.curvature = lambda q, prefix: torch.eye(D)
    x = torch.randn(2, N, DIM)
    torch.testing.assert_close(m(x), attend_with(m, x, torch.softmax(dot_logits(m, x), -1)))


@pytest.mark.catalog("S66")
def test_power_law_causal_last_token_sees_the_whole_sequence_metric():
    causal, full = build("power_law", causal=True), build("power_law")
    x = torch.randn(2, N, DIM)
    torch.testing.assert_close(causal(x)[:, -1], full(x)[:, -1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(causal(x)[:, 0], full(x)[:, 0])


# ------------------------------------------------------------------ S63
@pytest.mark.catalog("S63")
def test_triplewise_attention_matches_a_naive_loop_over_key_pairs():
    n = 4
    m = build("triplewise", shape=(1, n, DIM), causal=True)
    with torch.no_grad():
        m.score.key_map.add_(0.3 * torch.randn_like(m.score.key_map))
        m.score.value_map.add_(0.3 * torch.randn_like(m.score.value_map))
    x = torch.randn(1, n, DIM)
    q, k, v = qkv(m, x)
    k2, v2 = k @ m.score.key_map, v @ m.score.value_map
    out = torch.zeros_like(q)
    for h in range(HEADS):
        for i in range(n):
            num, den = torch.zeros(D), 0.0
            for j in range(i + 1):
                for l in range(i + 1):  # noqa: E741
                    e = torch.exp((q[0, h, i] * k[0, h, j] * k2[0, h, l]).sum() / math.sqrt(D))
                    num, den = num + e * v[0, h, j] * v2[0, h, l], den + e
            out[0, h, i] = num / den
    torch.testing.assert_close(m(x), m.layout.out(out), atol=1e-5, rtol=1e-5)


@pytest.mark.catalog("S63")
def test_triplewise_refuses_sequences_over_its_cubic_limit():
    with pytest.raises(ShapeError, match="O\\(N\\^3\\)"):
        SPEC.cls.output_shape((2, 33, DIM), **SPEC.bind({"score": {"name": "triplewise"}}))


# ------------------------------------------------- every new score, shared properties
NEW = [
    {"name": "clipped_softmax"}, {"name": "gated_softmax"}, {"name": "softcap", "cap": 1.0},
    {"name": "softplus_reweight"}, {"name": "karat"}, {"name": "fixed_mixing", "max_len": 8},
    {"name": "l2"}, {"name": "symmetric"}, {"name": "power_law"}, {"name": "triplewise", "max_len": 8},
    {"name": "karat_lowrank", "max_len": 8},
]
IDS = [s["name"] for s in NEW]


@pytest.mark.catalog("S05", "S09", "S31", "S38", "S45", "S63", "S66")
@pytest.mark.parametrize("score", NEW, ids=IDS)
def test_causal_outputs_do_not_depend_on_future_tokens(score):
    m = build(score, causal=True)
    x = torch.randn(2, N, DIM)
    y = x.clone()
    y[:, -2:] += torch.randn(2, 2, DIM)
    torch.testing.assert_close(m(x)[:, :-2], m(y)[:, :-2])
    also = build(score, pattern={"name": "causal"})
    torch.testing.assert_close(also(x), m(x))


@pytest.mark.catalog("S05", "S09", "S31", "S38", "S45", "S63", "S66")
@pytest.mark.parametrize("score", [s for s in NEW if s["name"] != "power_law"], ids=[i for i in IDS if i != "power_law"])
def test_keys_outside_a_window_contribute_nothing(score):
    """(power_law is left out: its metric reads every token; see its docstring.)"""
    m = build(score, pattern={"name": "window", "_0": 3})
    x = torch.randn(2, N, DIM)
    y = x.clone()
    y[:, 3:] += torch.randn(2, N - 3, DIM)  # query 0 sees keys 0 and 1 only
    torch.testing.assert_close(m(x)[:, 0], m(y)[:, 0])


@pytest.mark.catalog("S05", "S09", "S31", "S38", "S45", "S63", "S66")
@pytest.mark.parametrize("score", NEW, ids=IDS)
def test_gradients_are_finite_and_reach_the_score_parameters(score):
    m = build(score, causal=True, position={"name": "alibi"})
    x = torch.randn(2, N, DIM, requires_grad=True)
    m(x).square().sum().backward()
    assert torch.isfinite(x.grad).all()
    for name, p in m.score.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.catalog("S05", "S09", "S31", "S38", "S45", "S63", "S66")
@pytest.mark.parametrize("score", NEW, ids=IDS)
def test_declared_parameter_count_matches_the_built_module(score):
    args = SPEC.bind({"heads": HEADS, "score": score})
    real = sum(p.numel() for p in build(score).parameters())
    assert SPEC.param_count((2, N, DIM), args, ()) == real


@pytest.mark.catalog("S05", "S09", "S31", "S38", "S45")
def test_new_scores_are_searchable_choices_of_attention_pcfg():
    from importlib.resources import files

    text = (files("archgram") / "grammars" / "attention.pcfg").read_text()
    for name in ("clipped_softmax", "gated_softmax", "softcap", "softplus_reweight", "karat", "l2", "symmetric"):
        assert name in text
