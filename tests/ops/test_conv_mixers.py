"""Convolution family (archgram/ops/conv) and token mixers / MetaFormer blocks
(archgram/ops/mixers) against independent references: loops or direct formulas on tiny
inputs, and the properties their papers state (causality, shift-invariant kernels,
Plücker coordinates of a hand-picked plane)."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from archgram.errors import ShapeError
from archgram.ops import get_op
from archgram.ops.mixers.dynamic import dynamic_conv, fft_conv
from archgram.ops.mixers.geometric import plucker

torch.manual_seed(0)


def build(name, shape, **args):
    spec = get_op(name)
    module = spec.build(shape, spec.bind(args))
    return module.eval()


def layer_norm(t):
    return (t - t.mean(-1, keepdim=True)) / torch.sqrt(t.var(-1, unbiased=False, keepdim=True) + 1e-5)


def lin(layer, t):
    """A linear layer (or 1x1 conv) applied by hand on the last axis."""
    return t @ layer.weight.flatten(1).T + layer.bias


def tokens(x):
    return x.flatten(2).transpose(1, 2)


# ------------------------------------------------------------ conv family
@pytest.mark.catalog("S57")
@pytest.mark.parametrize("k, d", [(3, 1), (3, 2), (5, 1)])
def test_dwconv2d_filters_each_channel_alone_with_same_padding(k, d):
    x = torch.randn(1, 3, 6, 6)
    m = build("dwconv2d", tuple(x.shape), k=k, d=d)
    w, b = m.conv.weight, m.conv.bias
    pad = k // 2 * d
    xp = F.pad(x, (pad,) * 4)
    ref = torch.empty_like(x)
    for c, i, j in itertools.product(range(3), range(6), range(6)):
        win = xp[0, c, i : i + d * (k - 1) + 1 : d, j : j + d * (k - 1) + 1 : d]
        ref[0, c, i, j] = (win * w[c, 0]).sum() + b[c]
    torch.testing.assert_close(m(x), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.catalog("S57")
def test_dwconv2d_stride_shape_rule_matches_the_module():
    shape = (2, 4, 7, 7)
    out = get_op("dwconv2d").cls.output_shape(shape, k=3, s=2, d=2)
    assert tuple(build("dwconv2d", shape, k=3, s=2, d=2)(torch.randn(shape)).shape) == out == (2, 4, 4, 4)


def conv1d_by_loops(x, w, b, k, d, groups, causal):
    """x (B, N, D), w (out, D/groups, k): y[t, o] = b_o + sum_j sum_c w[o, c, j] x[t + off_j, c]."""
    bsz, n, dim = x.shape
    out = w.shape[0]
    left = d * (k - 1) if causal else k // 2 * d
    y = torch.zeros(bsz, n, out)
    cin, cout = dim // groups, out // groups
    for t, o, j in itertools.product(range(n), range(out), range(k)):
        src = t - left + j * d
        if 0 <= src < n:
            grp = o // cout
            y[:, t, o] += x[:, src, grp * cin : (grp + 1) * cin] @ w[o, :, j]
    return y + b


@pytest.mark.catalog("S57")
@pytest.mark.parametrize("k, d, groups, causal", [(3, 1, 1, False), (3, 2, 2, False), (2, 1, 1, True), (3, 2, 4, True)])
def test_conv1d_convolves_tokens_along_n(k, d, groups, causal):
    x = torch.randn(2, 7, 4)
    m = build("conv1d", tuple(x.shape), out=4, k=k, d=d, groups=groups, causal=causal)
    y = m(x)
    ref = conv1d_by_loops(x, m.conv.weight, m.conv.bias, k, d, groups, causal)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.catalog("S57")
def test_conv1d_out_zero_keeps_the_width():
    assert get_op("conv1d").cls.output_shape((2, 7, 6), **get_op("conv1d").bind({"k": 5, "causal": True})) == (2, 7, 6)
    assert build("conv1d", (2, 7, 6), k=5)(torch.randn(2, 7, 6)).shape == (2, 7, 6)


@pytest.mark.catalog("S57")
def test_causal_conv1d_never_reads_future_tokens():
    x = torch.randn(1, 8, 3)
    m = build("conv1d", (1, 8, 3), out=5, k=4, d=2, causal=True)
    x2 = x.clone()
    x2[:, 5:] = torch.randn(1, 3, 3)
    torch.testing.assert_close(m(x)[:, :5], m(x2)[:, :5])


# ------------------------------------------------------------ MetaFormer blocks
@pytest.mark.catalog("S57")
@pytest.mark.parametrize("shape", [(2, 6, 8), (2, 3, 4, 4)])
def test_mlp_mixer_is_token_mlp_then_channel_mlp_with_residuals(shape):
    x = torch.randn(shape)
    m = build("mlp_mixer", shape, token_ratio=0.5, channel_ratio=2.0)
    layer = m.layer
    t = tokens(x) if len(shape) == 4 else x
    t1, t2 = layer.tokens.mlp[0], layer.tokens.mlp[2]
    u = layer_norm(t).transpose(1, 2)  # (B, D, N): an MLP over the N positions
    t = t + lin(t2, F.gelu(lin(t1, u))).transpose(1, 2)
    c1, c2 = layer.channels[0], layer.channels[2]
    t = t + lin(c2, F.gelu(lin(c1, layer_norm(t))))
    ref = t.transpose(1, 2).reshape(shape) if len(shape) == 4 else t
    torch.testing.assert_close(m(x), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.catalog("S57")
def test_mlp_mixer_token_mixing_is_position_specific_not_permutation_equivariant():
    x = torch.randn(1, 6, 4)
    m = build("mlp_mixer", (1, 6, 4))
    perm = torch.tensor([5, 0, 3, 1, 2, 4])
    assert not torch.allclose(m(x[:, perm]), m(x)[:, perm], atol=1e-4)


def group_norm_1(x):
    """GroupNorm with one group: normalise each example over channels and positions."""
    dims = tuple(range(1, x.dim()))
    mean, var = x.mean(dims, keepdim=True), x.var(dims, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5)


def avg_pool_no_pad(x, k):
    """Stride-1 'same' average pooling that divides by the number of real (unpadded) cells."""
    ones = torch.ones_like(x[:, :1])
    if x.dim() == 4:
        s = F.conv2d(F.pad(x, (k // 2,) * 4), torch.ones(x.shape[1], 1, k, k), groups=x.shape[1])
        cnt = F.conv2d(F.pad(ones, (k // 2,) * 4), torch.ones(1, 1, k, k))
    else:
        s = F.conv1d(F.pad(x, (k // 2,) * 2), torch.ones(x.shape[1], 1, k), groups=x.shape[1])
        cnt = F.conv1d(F.pad(ones, (k // 2,) * 2), torch.ones(1, 1, k))
    return s / cnt


@pytest.mark.catalog("S26")
@pytest.mark.parametrize("shape", [(2, 3, 5, 5), (2, 7, 4)])
def test_poolformer_block_is_pool_minus_input_then_mlp_with_residuals(shape):
    """PoolFormer: x + s1 (AvgPool(GN x) - GN x), then x + s2 MLP(GN x), with the
    paper's per-channel LayerScale s1, s2 (set to distinct values here)."""
    x = torch.randn(shape)
    m = build("poolformer", shape, k=3, channel_ratio=2.0)
    c = shape[1] if len(shape) == 4 else shape[2]
    with torch.no_grad():
        for i, s in enumerate(m.scales):
            s.copy_(torch.linspace(0.5, 1.5, c).view_as(s) * (i + 1))
    s1, s2 = (torch.linspace(0.5, 1.5, c) * (i + 1) for i in range(2))
    shape1 = (1, c) + (1,) * (len(shape) - 2 if len(shape) == 4 else 1)
    y = x if len(shape) == 4 else x.transpose(1, 2)
    n = group_norm_1(y)
    y = y + s1.view(shape1) * (avg_pool_no_pad(n, 3) - n)
    c1, c2 = m.mlp[0], m.mlp[2]
    u = group_norm_1(y).movedim(1, -1)
    y = y + s2.view(shape1) * lin(c2, F.gelu(lin(c1, u))).movedim(-1, 1)
    ref = y if len(shape) == 4 else y.transpose(1, 2)
    torch.testing.assert_close(m(x), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.catalog("S26")
def test_poolformer_layer_scale_starts_each_block_near_identity():
    """LayerScale 1e-5 (the paper's init): a fresh block barely changes its input;
    layer_scale=0 removes the scales (plain residual branches)."""
    x = torch.randn(2, 4, 6, 6)
    m = build("poolformer", (2, 4, 6, 6))
    assert (m(x) - x).abs().max() < 1e-3
    plain = build("poolformer", (2, 4, 6, 6), layer_scale=0.0)
    assert len(plain.scales) == 0 and (plain(x) - x).abs().max() > 0.1


@pytest.mark.catalog("S26")
def test_poolformer_token_mixer_vanishes_on_a_constant_image():
    # pooling a constant map returns it, so AvgPool(x) - x is zero: only the MLP acts
    m = build("poolformer", (1, 2, 4, 4))
    n = torch.full((1, 2, 4, 4), 0.7)
    torch.testing.assert_close(m.pool(n) - n, torch.zeros_like(n))


@pytest.mark.catalog("S49")
@pytest.mark.parametrize("shape, conv_ratio", [((2, 4, 5, 5), 1.0), ((2, 6, 8), 0.5)])
def test_gated_cnn_is_gelu_gate_times_partly_convolved_branch(shape, conv_ratio):
    x = torch.randn(shape)
    m = build("gated_cnn", shape, k=3, ratio=2.0, conv_ratio=conv_ratio)
    t = tokens(x) if len(shape) == 4 else x
    hid, cc = m.hidden, m.conv_channels
    z = lin(m.fc1, layer_norm(t))
    g, i, c = z[..., :hid], z[..., hid : 2 * hid - cc], z[..., 2 * hid - cc :]
    w, b = m.conv.weight, m.conv.bias
    if len(shape) == 4:
        cimg = c.transpose(1, 2).reshape(shape[0], cc, *shape[2:])
        c = tokens(F.conv2d(cimg, w, b, padding=1, groups=cc))
    else:
        c = F.conv1d(c.transpose(1, 2), w, b, padding=1, groups=cc).transpose(1, 2)
    t = t + lin(m.fc2, F.gelu(g) * torch.cat([i, c], -1))
    ref = t.transpose(1, 2).reshape(shape) if len(shape) == 4 else t
    torch.testing.assert_close(m(x), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.catalog("S49")
def test_gated_cnn_is_local_on_sequences():
    # a k=3 depthwise conv is the block's only token mixing: token 0 cannot see token 5
    m = build("gated_cnn", (1, 8, 4), k=3)
    x = torch.randn(1, 8, 4)
    x2 = x.clone()
    x2[:, 5] += 1.0
    torch.testing.assert_close(m(x)[:, :4], m(x2)[:, :4])


def glu(mod, u, act):
    return lin(mod.out, act(lin(mod.gate, u)) * lin(mod.value, u))


@pytest.mark.catalog("S17")
@pytest.mark.parametrize("act, fn", [("gelu", F.gelu), ("silu", F.silu), ("sigmoid", torch.sigmoid)])
def test_glu_block_is_token_glu_then_channel_glu_with_residuals(act, fn):
    x = torch.randn(2, 6, 4)
    m = build("glu_block", (2, 6, 4), act=act)
    t = x + glu(m.tokens, layer_norm(x).transpose(1, 2), fn).transpose(1, 2)
    t = t + glu(m.channels, layer_norm(t), fn)
    torch.testing.assert_close(m(x), t, atol=1e-5, rtol=1e-5)


@pytest.mark.catalog("S17")
def test_glu_block_second_stage_can_be_a_plain_mlp_or_dropped():
    x = torch.randn(2, 6, 4)
    m = build("glu_block", (2, 6, 4), act="relu", second="none")
    torch.testing.assert_close(m(x), x + glu(m.tokens, layer_norm(x).transpose(1, 2), F.relu).transpose(1, 2))
    m = build("glu_block", (2, 6, 4), second="mlp", channel_ratio=2.0)
    t = x + glu(m.tokens, layer_norm(x).transpose(1, 2), F.gelu).transpose(1, 2)
    t = t + lin(m.channels[2], F.gelu(lin(m.channels[0], layer_norm(t))))
    torch.testing.assert_close(m(x), t, atol=1e-5, rtol=1e-5)


@pytest.mark.catalog("S11")
def test_ninformer_gates_a_tokenwise_value_with_a_token_mixed_signal():
    x = torch.randn(2, 3, 4, 4)
    m = build("ninformer", (2, 3, 4, 4), channel_ratio=2.0)
    t = tokens(x)
    u = layer_norm(t)
    g = m.gate  # inner MLP-Mixer layer
    a = u + lin(g.tokens.mlp[2], F.gelu(lin(g.tokens.mlp[0], layer_norm(u).transpose(1, 2)))).transpose(1, 2)
    gate = a + lin(g.channels[2], F.gelu(lin(g.channels[0], layer_norm(a))))
    t = t + lin(m.out, gate * lin(m.value, u))
    t = t + lin(m.mlp[2], F.gelu(lin(m.mlp[0], layer_norm(t))))
    torch.testing.assert_close(m(x), t.transpose(1, 2).reshape(x.shape), atol=1e-5, rtol=1e-5)


@pytest.mark.catalog("S11")
def test_ninformer_gate_makes_the_unit_data_dependent():
    # with the gate replaced by ones the unit would be a static linear map; the real gate
    # varies with the input, so doubling the input does not double the mixed part
    m = build("ninformer", (1, 5, 4))
    x = torch.randn(1, 5, 4)
    u = m.norm1(x)
    assert not torch.allclose(m.gate(u), m.gate(2 * u), atol=1e-3)


# ------------------------------------------------------------ bare token mixers
@pytest.mark.catalog("S13")
def test_focal_modulation_matches_its_formula():
    x = torch.randn(2, 4, 5, 5)
    m = build("focal_modulation", (2, 4, 5, 5), levels=2, window=3)
    t = x.movedim(1, -1)
    z = lin(m.f, t).movedim(-1, 1)
    q, ctx, gates = z[:, :4], z[:, 4:8], z[:, 8:]
    agg = 0
    for level, k in enumerate((3, 5)):
        ctx = F.gelu(F.conv2d(ctx, m.contexts[level].weight, padding=k // 2, groups=4))
        agg = agg + ctx * gates[:, level : level + 1]
    agg = agg + F.gelu(ctx.mean(dim=(2, 3), keepdim=True)) * gates[:, 2:3]
    ref = lin(m.proj, q.movedim(1, -1) * lin(m.h, agg.movedim(1, -1))).movedim(-1, 1)
    torch.testing.assert_close(m(x), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.catalog("S13")
def test_focal_modulation_global_level_reaches_every_position():
    m = build("focal_modulation", (1, 9, 4), levels=1, window=3)
    x = torch.randn(1, 9, 4)
    x2 = x.clone()
    x2[:, 8] += 1.0  # far outside the 3-wide local context of token 0
    assert not torch.allclose(m(x)[:, 0], m(x2)[:, 0])


@pytest.mark.catalog("S15")
@pytest.mark.parametrize("shape", [(2, 3, 6, 6), (2, 7, 4)])
def test_metamixer_is_query_then_key_conv_gelu_then_value_conv(shape):
    x = torch.randn(shape)
    m = build("metamixer", shape, k=5, k_value=3, ratio=2.0)
    conv = F.conv2d if len(shape) == 4 else F.conv1d
    y = x if len(shape) == 4 else x.transpose(1, 2)
    q = lin(m.query, y.movedim(1, -1)).movedim(-1, 1)
    h = q.shape[1]
    a = F.gelu(conv(q, m.key.weight, m.key.bias, padding=2, groups=h))
    v = conv(a, m.value.weight, m.value.bias, padding=1, groups=h)
    out = lin(m.out, v.movedim(1, -1)).movedim(-1, 1)
    ref = out if len(shape) == 4 else out.transpose(1, 2)
    torch.testing.assert_close(m(x), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.catalog("S28")
def test_orchid_fft_conv_equals_direct_causal_and_circular_convolution():
    v, k = torch.randn(2, 3, 7, dtype=torch.float64), torch.randn(2, 3, 7, dtype=torch.float64)
    causal = torch.zeros_like(v)
    circular = torch.zeros_like(v)
    for t, s in itertools.product(range(7), range(7)):
        if s <= t:
            causal[..., t] += k[..., s] * v[..., t - s]
        circular[..., t] += k[..., s] * v[..., (t - s) % 7]
    torch.testing.assert_close(fft_conv(v, k, causal=True), causal)
    torch.testing.assert_close(fft_conv(v, k, causal=False), circular)


@pytest.mark.catalog("S28")
def test_orchid_conditioning_kernel_is_invariant_to_circular_shifts_of_its_input():
    # |FFT| ignores a circular shift, so shifting the input leaves the generated kernel alone
    m = build("orchid", (1, 8, 4), causal=False)
    v = torch.randn(1, 4, 8)
    torch.testing.assert_close(m.kernel(v), m.kernel(torch.roll(v, 3, dims=-1)), atol=1e-5, rtol=1e-5)


@pytest.mark.catalog("S28")
def test_orchid_circular_op_is_shift_equivariant_yet_input_dependent():
    """Orchid's claim: the generated kernel depends on the input but the operator
    stays shift-equivariant. Shifting the input circularly shifts the output, while
    a different input gets a different kernel (not a fixed convolution)."""
    m = build("orchid", (2, 16, 4), causal=False)
    x = torch.randn(2, 16, 4)
    torch.testing.assert_close(m(torch.roll(x, 5, dims=1)), torch.roll(m(x), 5, dims=1), atol=1e-5, rtol=1e-4)
    v = m.inp(x).chunk(2, dim=-1)[1].transpose(1, 2)
    assert (m.kernel(v)[0] - m.kernel(v)[1]).abs().max() > 1e-3  # two inputs, two kernels


@pytest.mark.catalog("S28")
def test_orchid_causal_output_never_reads_future_tokens():
    m = build("orchid", (1, 8, 4), causal=True)
    x = torch.randn(1, 8, 4)
    x2 = x.clone()
    x2[:, 6:] = torch.randn(1, 2, 4)
    # the conditioning kernel reads the whole input (as in the paper); the convolution is causal
    v = lin(m.inp, x)[..., 4:].transpose(1, 2)
    v2 = lin(m.inp, x2)[..., 4:].transpose(1, 2)
    k = m.kernel(v)
    torch.testing.assert_close(fft_conv(v, k)[..., :6], fft_conv(v2, k)[..., :6], atol=1e-5, rtol=1e-5)


@pytest.mark.catalog("S23")
@pytest.mark.parametrize("shape", [(2, 3, 5, 5), (2, 7, 3)])
def test_hyperzzw_is_z_times_hyper_kernel_convolved_with_z(shape):
    x = torch.randn(shape)
    m = build("hyperzzw", shape, k=5, width=8)
    # the slow net evaluated point by point at the kernel's grid coordinates
    steps = [-1 + 2 * i / 4 for i in range(5)]
    coords = list(itertools.product(steps, steps)) if len(shape) == 4 else [(s,) for s in steps]
    w = torch.stack([m.kernel_net.net(torch.tensor(c)) for c in coords], dim=1)  # (C, points)
    z = x if len(shape) == 4 else x.transpose(1, 2)
    if len(shape) == 4:
        context = F.conv2d(z, w.view(3, 1, 5, 5), padding=2, groups=3)
    else:
        context = F.conv1d(z, w.view(3, 1, 5), padding=2, groups=3)
    y = lin(m.proj, (z * context).movedim(1, -1)).movedim(-1, 1)
    ref = y if len(shape) == 4 else y.transpose(1, 2)
    torch.testing.assert_close(m(x), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.catalog("S23")
def test_hyperzzw_parameter_count_does_not_grow_with_the_kernel():
    spec = get_op("hyperzzw")
    small = spec.param_count((1, 3, 9, 9), spec.bind({"k": 3}))
    large = spec.param_count((1, 3, 9, 9), spec.bind({"k": 9}))
    assert small == large


@pytest.mark.catalog("S50")
def test_contmix_dynamic_conv_equals_a_per_position_loop():
    b, g, cg, h, w, k = 1, 2, 2, 4, 4, 3
    v = torch.randn(b, g, cg, h, w)
    kern = torch.randn(b, g, h * w, k * k)
    vp = F.pad(v, (1, 1, 1, 1))
    ref = torch.zeros(b, g * cg, h, w)
    for gi, ci, i, j in itertools.product(range(g), range(cg), range(h), range(w)):
        win = vp[0, gi, ci, i : i + k, j : j + k].reshape(-1)
        ref[0, gi * cg + ci, i, j] = (win * kern[0, gi, i * w + j]).sum()
    torch.testing.assert_close(dynamic_conv(v, kern, k), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.catalog("S50")
def test_contmix_kernels_are_normalised_and_depend_on_global_context():
    m = build("contmix", (1, 4, 6, 6), k=3, regions=2, heads=2)
    x = torch.randn(1, 4, 6, 6)
    kern = m.kernels(x)
    assert kern.shape == (1, 2, 36, 9)
    torch.testing.assert_close(kern.sum(-1), torch.ones(1, 2, 36))
    x2 = x.clone()
    x2[..., 5, 5] += 3.0  # far from position (0, 0), but inside a region centre it compares with
    assert not torch.allclose(m.kernels(x2)[:, :, 0], kern[:, :, 0])


@pytest.mark.catalog("S64")
def test_plucker_coordinates_of_hand_planes():
    e = torch.eye(3)
    # span(e1, e2): only the (0,1) minor is nonzero
    torch.testing.assert_close(plucker(e[0], e[1]), torch.tensor([1.0, 0.0, 0.0]))
    # u = (1, 2, 3), v = (4, 5, 6): minors (1*5-2*4, 1*6-3*4, 2*6-3*5) = (-3, -6, -3)
    u, v = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([4.0, 5.0, 6.0])
    torch.testing.assert_close(plucker(u, v), torch.tensor([-3.0, -6.0, -3.0]))
    # a change of basis (a, b) = (2u + v, u + v) scales them by its determinant 2*1 - 1*1
    a, b = 2 * u + v, u + v
    torch.testing.assert_close(plucker(a, b), (2 * 1 - 1 * 1) * plucker(u, v))
    # parallel vectors span no plane
    torch.testing.assert_close(plucker(u, 3 * u), torch.zeros(3))


@pytest.mark.catalog("S64")
def test_grassmann_layer_is_causal_and_matches_its_formula():
    m = build("grassmann", (1, 6, 4), rank=3, offsets=(1, 2))
    h = torch.randn(1, 6, 4)
    z = lin(m.reduce, h)
    rows = []
    for t in range(6):
        feats = []
        for delta in (1, 2):
            if t >= delta:
                p = plucker(z[0, t - delta], z[0, t])
                feats.append(lin(m.lift, p / p.norm()))
        rows.append(torch.stack(feats).mean(0) if feats else torch.zeros(4))
    g = torch.stack(rows)[None]
    alpha = torch.sigmoid(lin(m.gate, torch.cat([h, g], -1)))
    torch.testing.assert_close(m(h), alpha * h + (1 - alpha) * g, atol=1e-5, rtol=1e-5)
    h2 = h.clone()
    h2[:, 4:] = torch.randn(1, 2, 4)
    torch.testing.assert_close(m(h)[:, :4], m(h2)[:, :4])


# ------------------------------------------------------------ every op trains
TRAINS = [("dwconv2d", (2, 4, 6, 6), {"d": 2}), ("conv1d", (2, 6, 4), {"out": 6, "causal": True}),
          ("mlp_mixer", (2, 4, 6, 6), {}), ("poolformer", (2, 6, 4), {}), ("gated_cnn", (2, 4, 6, 6), {"k": 3}),
          ("glu_block", (2, 6, 4), {}), ("ninformer", (2, 6, 4), {}), ("focal_modulation", (2, 4, 6, 6), {}),
          ("metamixer", (2, 6, 4), {}), ("orchid", (2, 6, 4), {}), ("hyperzzw", (2, 6, 4), {"k": 3}),
          ("contmix", (2, 4, 6, 6), {"k": 3}), ("grassmann", (2, 6, 4), {"rank": 3})]


@pytest.mark.catalog("S57")
@pytest.mark.parametrize("name, shape, args", TRAINS, ids=[t[0] for t in TRAINS])
def test_every_conv_and_mixer_op_passes_finite_gradients_to_all_its_weights(name, shape, args):
    m = build(name, shape, **args).train()
    x = torch.randn(shape, requires_grad=True)
    m(x).square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for pname, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


# ------------------------------------------------------------ shape rules refuse
REFUSALS = [
    ("dwconv2d on a sequence", "dwconv2d", (2, 6, 8), {}),
    ("dwconv2d on a vector", "dwconv2d", (2, 6), {}),
    ("conv1d on an image", "conv1d", (2, 3, 4, 4), {"out": 4}),
    ("conv1d groups", "conv1d", (2, 6, 6), {"out": 4, "groups": 4}),
    ("conv1d out not divisible by groups", "conv1d", (2, 6, 4), {"out": 6, "groups": 4}),
    ("poolformer even k", "poolformer", (2, 3, 4, 4), {"k": 2}),
    ("gated_cnn even k", "gated_cnn", (2, 6, 8), {"k": 4}),
    ("mlp_mixer on a vector", "mlp_mixer", (2, 8), {}),
    ("orchid on an image", "orchid", (2, 3, 4, 4), {}),
    ("hyperzzw even kernel", "hyperzzw", (2, 6, 8), {"k": 4}),
    ("contmix heads", "contmix", (2, 3, 6, 6), {"heads": 2}),
    ("contmix regions", "contmix", (2, 4, 3, 3), {"regions": 4}),
    ("grassmann on an image", "grassmann", (2, 3, 4, 4), {}),
    ("grassmann offsets beyond n", "grassmann", (2, 2, 8), {"offsets": (2, 4)}),
    ("focal even window", "focal_modulation", (2, 3, 4, 4), {"window": 4}),
    ("metamixer even kernel", "metamixer", (2, 6, 8), {"k": 6}),
]


@pytest.mark.catalog("S57")
@pytest.mark.parametrize("what, name, shape, args", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_shape_rules_refuse_with_a_shape_error_naming_the_op(what, name, shape, args):
    spec = get_op(name)
    with pytest.raises(ShapeError, match=name):
        spec.cls.output_shape(shape, **spec.bind(args))


# ------------------------------------------------------------ the shipped grammar
IMAGE_ONLY = {"dwconv2d", "contmix"}
SEQUENCE_ONLY = {"conv1d", "orchid", "grassmann"}
BOTH = {"mlp_mixer", "poolformer", "gated_cnn", "glu_block", "ninformer", "focal_modulation", "metamixer",
        "hyperzzw"}


@pytest.mark.catalog("S26")
@pytest.mark.parametrize("shape, reachable", [((2, 16, 8, 8), IMAGE_ONLY | BOTH), ((2, 16, 16), SEQUENCE_ONLY | BOTH)])
def test_mixers_grammar_searches_every_mixer_that_fits_and_compiles(shape, reachable):
    from importlib import resources

    from archgram.compiler import compile
    from archgram.grammar.model import Grammar

    g = Grammar.from_text(resources.files("archgram.grammars").joinpath("mixers.pcfg").read_text())
    seen = set()
    for seed in range(40):
        d = g.sample(shape, seed=seed)
        seen |= {op.op for op in d.ops()}
        if seed < 4:
            x = torch.randn(shape)
            assert compile(d, shape)(x).shape == x.shape
    assert reachable <= seen
    assert not (seen & ((IMAGE_ONLY | SEQUENCE_ONLY) - reachable))
