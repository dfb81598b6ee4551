"""S2AFormer strip self-attention (layout ``ssa``, S43) and the L2ViT hybrid op
(``l2vit``, S54) against explicit per-token / per-window computations."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from archgram.errors import ShapeError
from archgram.grammar.model import Grammar
from archgram.ops.attention.l2vit import enhanced_linear_attention, window_attention
from archgram.ops.registry import get_op

ATTN = get_op("attention")
L2VIT = get_op("l2vit")


def build(spec, shape, **args):
    torch.manual_seed(0)
    return spec.build(shape, spec.bind(args)).double()


# --- S43 strip self-attention ---------------------------------------------------


def ssa(reduction=2, width=1):
    return {"name": "ssa", "_0": reduction, "_1": width}


@pytest.mark.catalog("S43")
@pytest.mark.parametrize("width", [1, 3])
def test_ssa_matches_an_explicit_per_head_per_token_computation(width):
    """Keys/values from a depth-wise stride-r conv of the image; q and k of ``width``
    channels per head; one softmax over the reduced keys for every query pixel."""
    b, c, h, w, heads, r = 2, 8, 4, 6, 2, 2
    m = build(ATTN, (b, c, h, w), heads=heads, layout=ssa(r, width))
    x = torch.randn(b, c, h, w, dtype=torch.float64)
    lay = m.layout
    reduced = F.conv2d(x, lay.reduce.weight, lay.reduce.bias, stride=r, groups=c)  # (B, C, h/r, w/r)
    assert reduced.shape[-2:] == (h // r, w // r)
    tokens, red = x.flatten(2).transpose(1, 2), reduced.flatten(2).transpose(1, 2)
    d = c // heads
    out = torch.zeros(b, h * w, heads * d, dtype=torch.float64)
    for bi in range(b):
        for head in range(heads):
            wq = lay.q.weight[head * width:(head + 1) * width]
            bq = lay.q.bias[head * width:(head + 1) * width]
            wk = lay.k.weight[head * width:(head + 1) * width]
            bk = lay.k.bias[head * width:(head + 1) * width]
            wv = lay.v.weight[head * d:(head + 1) * d]
            bv = lay.v.bias[head * d:(head + 1) * d]
            keys = [wk @ red[bi, j] + bk for j in range(red.shape[1])]
            values = [wv @ red[bi, j] + bv for j in range(red.shape[1])]
            for i in range(h * w):
                qi = wq @ tokens[bi, i] + bq
                logits = torch.stack([qi @ kj for kj in keys]) / width**0.5
                weights = torch.softmax(logits, 0)
                out[bi, i, head * d:(head + 1) * d] = sum(wj * vj for wj, vj in zip(weights, values))
    expected = lay.o(out).transpose(1, 2).reshape(b, c, h, w)
    torch.testing.assert_close(m(x), expected)


@pytest.mark.catalog("S43")
def test_ssa_shape_rule_refuses_sequences_masks_positions_and_small_grids():
    ATTN.cls.output_shape((2, 8, 4, 4), heads=2, layout=ssa())
    bad = [
        ((2, 16, 8), {}),  # a sequence
        ((2, 8, 4, 4), {"pattern": {"name": "window", "_0": 3}}),
        ((2, 8, 4, 4), {"causal": True}),
        ((2, 8, 4, 4), {"position": {"name": "rope"}}),
        ((2, 8, 4, 4), {"score": {"name": "linear"}}),
        ((2, 8, 1, 4), {}),  # grid smaller than the reduction
    ]
    for shape, extra in bad:
        with pytest.raises(ShapeError):
            ATTN.cls.output_shape(shape, heads=2, layout=ssa(), **extra)


@pytest.mark.catalog("S43")
def test_ssa_flops_count_the_reduced_keys_and_strip_width():
    shape, heads = (1, 8, 8, 8), 2
    n, d = 64, 4
    full = ATTN.cls.flops(shape, shape, 0, heads=heads)
    strip = ATTN.cls.flops(shape, shape, 0, heads=heads, layout=ssa(2, 1))
    assert full == 2 * heads * n * n * (d + d)
    assert strip == 2 * heads * n * (n // 4) * (1 + d)


@pytest.mark.catalog("S43")
def test_sampler_places_ssa_only_on_images():
    g = Grammar.from_text("net : attention(heads=2, layout=mha|ssa(2, 1), pattern=full|window(3))\n")
    image = {(a["layout"]["name"], a["pattern"]["name"]) for a in
             (g.sample((2, 8, 4, 4), seed=s).ops()[0].args for s in range(30))}
    assert ("ssa", "full") in image and ("ssa", "window") not in image
    for s in range(10):
        assert g.sample((2, 8, 16), seed=s).ops()[0].args["layout"]["name"] == "mha"


# --- S54 L2ViT ------------------------------------------------------------------


@pytest.mark.catalog("S54")
def test_window_attention_matches_a_per_query_loop_over_its_window():
    """Non-overlapping windows; the 5 x 7 grid is padded to 6 x 9 and padded keys are masked."""
    torch.manual_seed(1)
    h, w, win, d = 5, 7, 3, 4
    q, k, v = (torch.randn(1, 2, h * w, d, dtype=torch.float64) for _ in range(3))
    out = window_attention(q, k, v, (h, w), win, 0.5)
    expected = torch.zeros_like(out)
    for i in range(h * w):
        same = [j for j in range(h * w) if (j // w) // win == (i // w) // win and (j % w) // win == (i % w) // win]
        logits = q[..., i : i + 1, :] @ k[..., same, :].transpose(-1, -2) * 0.5  # (1, 2, 1, |window|)
        expected[..., i : i + 1, :] = torch.softmax(logits, -1) @ v[..., same, :]
    torch.testing.assert_close(out, expected)


@pytest.mark.catalog("S54")
@pytest.mark.parametrize("floor", [1e-9, 100.0])
def test_enhanced_linear_attention_matches_its_explicit_n_by_n_form(floor):
    """out_i = tau sum_j a_ij v_j / max(sum_j a_ij, floor), a_ij = relu(q_i) . relu(k_j) >= 0."""
    torch.manual_seed(2)
    q, k, v = (torch.randn(2, 3, 10, 4, dtype=torch.float64) * 3 for _ in range(3))
    tau = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    a = F.relu(q) @ F.relu(k).transpose(-1, -2)
    assert (a >= 0).all()
    expected = tau.view(1, 3, 1, 1) * (a @ v) / a.sum(-1, keepdim=True).clamp(min=floor)
    torch.testing.assert_close(enhanced_linear_attention(q, k, v, tau, floor), expected)


@pytest.mark.catalog("S54")
def test_local_concentration_module_is_dwconv_gelu_bn_dwconv():
    m = build(L2VIT, (2, 8, 5, 6), heads=2, window=3, kernel=3).eval()
    with torch.no_grad():
        m.lcm.bn.running_mean.uniform_(-1, 1)
        m.lcm.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 8, 5, 6, dtype=torch.float64)
    lcm = m.lcm
    y = F.conv2d(x, lcm.conv1.weight, lcm.conv1.bias, padding=1, groups=8)
    y = F.gelu(y)
    y = (y - lcm.bn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(lcm.bn.running_var.view(1, -1, 1, 1) + lcm.bn.eps)
    y = y * lcm.bn.weight.view(1, -1, 1, 1) + lcm.bn.bias.view(1, -1, 1, 1)
    y = F.conv2d(y, lcm.conv2.weight, lcm.conv2.bias, padding=1, groups=8)
    torch.testing.assert_close(lcm(x.flatten(2).transpose(1, 2), (5, 6)), y.flatten(2).transpose(1, 2))


@pytest.mark.catalog("S54")
@pytest.mark.parametrize("mlp_ratio", [0.0, 2.0])
def test_l2vit_is_the_composition_lwa_then_lga(mlp_ratio):
    b, c, h, w, heads = 2, 8, 5, 6, 2
    m = build(L2VIT, (b, c, h, w), heads=heads, window=3, kernel=3, mlp_ratio=mlp_ratio).eval()
    x = torch.randn(b, c, h, w, dtype=torch.float64)
    d = c // heads

    def cpe(conv, t):
        img = t.transpose(1, 2).reshape(b, c, h, w)
        return t + F.conv2d(img, conv.weight, conv.bias, padding=1, groups=c).flatten(2).transpose(1, 2)

    def split(lin, t):
        q, k, v = F.linear(t, lin.weight, lin.bias).view(b, h * w, 3, heads, d).permute(2, 0, 3, 1, 4)
        return q, k, v

    def merge(lin, o):
        return F.linear(o.transpose(1, 2).reshape(b, h * w, c), lin.weight, lin.bias)

    t = x.flatten(2).transpose(1, 2)
    t = cpe(m.cpe[0].proj, t)
    q, k, v = split(m.local.qkv, m.local_norm(t))
    t = t + merge(m.local.proj, window_attention(q, k, v, (h, w), 3, d**-0.5))
    t = cpe(m.cpe[1].proj, t)
    if mlp_ratio:
        t = t + m.mlp_local(t)
    t = cpe(m.cpe[2].proj, t)
    q, k, v = split(m.glob.qkv, m.global_norm(t))
    t = t + merge(m.glob.proj, enhanced_linear_attention(q, k, v, m.temperature, 100.0))
    t = t + m.lcm(m.lcm_norm(t), (h, w))
    if mlp_ratio:
        t = t + m.mlp_global(t)
    torch.testing.assert_close(m(x), t.transpose(1, 2).reshape(b, c, h, w))
    assert torch.allclose(m.temperature, torch.full((heads,), d**-0.5, dtype=torch.float64))


@pytest.mark.catalog("S54")
def test_l2vit_refuses_sequences_and_passes_finite_gradients_to_every_parameter():
    with pytest.raises(ShapeError):
        L2VIT.cls.output_shape((2, 16, 8), heads=2)
    with pytest.raises(ShapeError):
        L2VIT.cls.output_shape((2, 8, 4, 4), heads=3)
    m = build(L2VIT, (2, 8, 4, 4), heads=2, window=2)
    x = torch.randn(2, 8, 4, 4, dtype=torch.float64, requires_grad=True)
    m(x).square().mean().backward()
    assert torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in m.parameters())


@pytest.mark.catalog("S43", "S54")
def test_shipped_attention_grammar_offers_ssa_and_l2vit_on_images():
    from importlib import resources

    text = resources.files("archgram.grammars").joinpath("attention.pcfg").read_text()
    g = Grammar.from_text(text)
    names = set()
    for s in range(30):
        for op in g.sample((2, 16, 8, 8), seed=s).ops():
            names.add(op.op)
            if op.op == "attention":
                names.add("layout:" + op.args["layout"]["name"])
    assert {"l2vit", "layout:ssa"} <= names
    for s in range(10):  # sequences never get either
        ops = g.sample((2, 8, 32), seed=s).ops()
        assert not any(op.op == "l2vit" or op.args.get("layout", {}).get("name") == "ssa" for op in ops)
