"""einspace's fundamental ops (catalog S57) against independent references on hand-sized
inputs, and every registered op's declared shape rule and parameter count
against the module it builds."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from archgram.errors import ShapeError
from archgram.ops import all_ops, get_op
from archgram.ops.primitives.routing import GRID, SEQ_GRID

pytestmark = pytest.mark.catalog("S57")

torch.manual_seed(0)


def build(name, shape, ctx=(), **args):
    spec = get_op(name)
    return spec.build(shape, spec.bind(args), ctx)


# ------------------------------------------------------------ computation
def test_linear_is_x_times_w_transposed_plus_b_on_the_channel_axis_of_images():
    x = torch.randn(2, 3, 4, 5)
    m = build("linear", tuple(x.shape), out=6)
    w, b = m.proj.weight, m.proj.bias
    ref = torch.empty(2, 6, 4, 5)
    for i in range(4):
        for j in range(5):
            ref[:, :, i, j] = x[:, :, i, j] @ w.T + b
    torch.testing.assert_close(m(x), ref)


def test_linear_is_x_times_w_transposed_plus_b_on_the_last_axis_of_sequences():
    x = torch.randn(2, 7, 3)
    m = build("linear", tuple(x.shape), out=4, bias=False)
    assert m.proj.bias is None
    torch.testing.assert_close(m(x), x @ m.proj.weight.T)


def test_norm_is_batchnorm2d_on_images_and_layernorm_on_sequences():
    x = torch.randn(4, 3, 5, 5) * 3 + 1
    torch.testing.assert_close(build("norm", tuple(x.shape))(x), nn.BatchNorm2d(3)(x))
    s = torch.randn(2, 6, 8) * 2 - 1
    ref = (s - s.mean(-1, keepdim=True)) / torch.sqrt(s.var(-1, unbiased=False, keepdim=True) + 1e-5)
    torch.testing.assert_close(build("norm", tuple(s.shape))(s), ref, atol=1e-5, rtol=1e-5)


def test_layernorm_normalises_the_channel_axis_in_either_layout():
    x = torch.randn(2, 3, 4, 4)
    ref = F.layer_norm(x.permute(0, 2, 3, 1), (3,)).permute(0, 3, 1, 2)
    torch.testing.assert_close(build("layernorm", tuple(x.shape))(x), ref)


def test_batchnorm_on_sequences_normalises_each_feature_over_batch_and_tokens():
    s = torch.randn(3, 5, 4) * 2 + 1
    y = build("batchnorm", tuple(s.shape))(s)
    torch.testing.assert_close(y.mean(dim=(0, 1)), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(dim=(0, 1), unbiased=False), torch.ones(4), atol=1e-3, rtol=0)


@pytest.mark.parametrize(
    "name, fn",
    [("relu", torch.relu), ("gelu", F.gelu), ("silu", F.silu), ("sigmoid", torch.sigmoid), ("tanh", torch.tanh),
     ("leakyrelu", lambda x: torch.where(x > 0, x, 0.01 * x))],
)
def test_activation_matches_its_formula(name, fn):
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(build(name, tuple(x.shape))(x), fn(x))


def test_softmax_normalises_the_last_axis():
    x = torch.randn(2, 5, 7)
    y = build("softmax", tuple(x.shape))(x)
    torch.testing.assert_close(y, torch.exp(x) / torch.exp(x).sum(-1, keepdim=True))


def test_scale_multiplies_by_a_constant():
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(build("scale", tuple(x.shape), value=0.25)(x), x / 4)


def test_posenc_adds_one_learned_parameter_per_position_and_channel():
    x = torch.randn(3, 5, 4)
    m = build("posenc", tuple(x.shape))
    (p,) = list(m.parameters())
    assert p.shape == (1, 5, 4)
    torch.testing.assert_close(m(x), x + p)
    with torch.no_grad():
        p.fill_(1.5)
    torch.testing.assert_close(m(x), x + 1.5)


def test_conv2d_same_padding_keeps_the_spatial_size_and_matches_f_conv2d():
    x = torch.randn(2, 3, 7, 7)
    for k, d in [(1, 1), (3, 1), (5, 1), (3, 2)]:
        m = build("conv2d", tuple(x.shape), out=4, k=k, d=d)
        y = m(x)
        assert y.shape == (2, 4, 7, 7)
        torch.testing.assert_close(y, F.conv2d(x, m.conv.weight, m.conv.bias, padding=k // 2 * d, dilation=d))


def test_conv2d_explicit_padding_stride_and_groups():
    x = torch.randn(2, 4, 9, 9)
    m = build("conv2d", tuple(x.shape), out=6, k=3, s=2, p=0, groups=2)
    ref = F.conv2d(x, m.conv.weight, m.conv.bias, stride=2, groups=2)
    torch.testing.assert_close(m(x), ref)
    assert ref.shape == (2, 6, 4, 4)


def test_maxpool_and_avgpool_match_hand_windows():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    mx = build("maxpool", (1, 1, 4, 4), k=2, s=2, p=0)(x)
    av = build("avgpool", (1, 1, 4, 4), k=2, s=2, p=0)(x)
    torch.testing.assert_close(mx, torch.tensor([[[[5.0, 7.0], [13.0, 15.0]]]]))
    torch.testing.assert_close(av, torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))


def test_avgpool_ignores_padding_in_the_mean():
    x = torch.ones(1, 1, 4, 4)
    y = build("avgpool", (1, 1, 4, 4), k=3, s=2, p=1)(x)
    torch.testing.assert_close(y, torch.ones(1, 1, 2, 2))


def test_global_pool_means_positions_and_returns_one_token():
    x = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(build("global_pool", tuple(x.shape))(x), x.mean(dim=(2, 3))[:, None, :])
    s = torch.randn(2, 6, 3)
    torch.testing.assert_close(build("global_pool", tuple(s.shape))(s), s.mean(dim=1, keepdim=True))


# ------------------------------------------------------------ routing
def patches_by_loops(x: torch.Tensor, k: int, s: int, p: int) -> torch.Tensor:
    """(B,C,H,W) -> (B, L, C*k*k): patches in row-major grid order, features in
    (channel, kernel row, kernel col) order: the F.unfold convention."""
    b, c, h, w = x.shape
    xp = F.pad(x, (p, p, p, p))
    gh, gw = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    out = torch.empty(b, gh * gw, c * k * k)
    for i in range(gh):
        for j in range(gw):
            feats = []
            for ch in range(c):
                for ki in range(k):
                    for kj in range(k):
                        feats.append(xp[:, ch, i * s + ki, j * s + kj])
            out[:, i * gw + j] = torch.stack(feats, dim=1)
    return out


@pytest.mark.parametrize("k, s, p", [(1, 1, 0), (2, 2, 0), (3, 1, 1), (3, 2, 1)])
def test_im2col_equals_manual_patch_extraction(k, s, p):
    x = torch.randn(2, 3, 5, 6)
    y = build("im2col", tuple(x.shape), k=k, s=s, p=p)(x)
    torch.testing.assert_close(y, patches_by_loops(x, k, s, p))
    out, ctx = get_op("im2col").cls.transfer(tuple(x.shape), (), k=k, s=s, p=p)
    assert out == tuple(y.shape)
    gh, gw = (5 + 2 * p - k) // s + 1, (6 + 2 * p - k) // s + 1
    assert ctx == ((GRID, gh, gw),)


def test_col2im_after_im2col_with_k1_returns_the_image():
    x = torch.randn(2, 3, 4, 5)
    im = build("im2col", tuple(x.shape), k=1)
    seq, ctx = get_op("im2col").cls.transfer(tuple(x.shape), (), k=1, s=1, p=0)
    col = build("col2im", seq, ctx)
    y = col(im(x))
    assert y.shape == (2, 3, 4, 5)
    torch.testing.assert_close(y, x)
    shape, rest = get_op("col2im").cls.transfer(seq, ctx)
    assert shape == (2, 3, 4, 5) and rest == ()


def test_col2im_folds_tokens_onto_the_grid_row_major():
    tokens = torch.arange(12.0).reshape(1, 6, 2)  # 6 tokens on a 2x3 grid, 2 features
    y = build("col2im", (1, 6, 2), ((GRID, 2, 3),))(tokens)
    torch.testing.assert_close(y[0, 0], torch.tensor([[0.0, 2, 4], [6, 8, 10]]))
    torch.testing.assert_close(y[0, 1], torch.tensor([[1.0, 3, 5], [7, 9, 11]]))


def windows_by_loops(x, k, s, p):
    """(B,L,D) -> (B, L', D k): every window of k positions, features in
    (channel, kernel position) order, as F.conv1d's weight (out, D, k) flattens."""
    b, n, d = x.shape
    xp = F.pad(x.transpose(1, 2), (p, p))  # (B, D, L + 2p)
    length = (n + 2 * p - k) // s + 1
    out = torch.empty(b, length, d * k)
    for i in range(length):
        out[:, i] = torch.stack([xp[:, ch, i * s + j] for ch in range(d) for j in range(k)], dim=1)
    return out


@pytest.mark.parametrize("k, s, p", [(1, 1, 0), (2, 2, 0), (3, 1, 1), (3, 2, 1), (4, 3, 0), (5, 1, 2)])
def test_im2col_on_a_sequence_equals_manual_windows(k, s, p):
    x = torch.randn(2, 9, 3)
    y = build("im2col", tuple(x.shape), k=k, s=s, p=p)(x)
    torch.testing.assert_close(y, windows_by_loops(x, k, s, p))
    out, ctx = get_op("im2col").cls.transfer(tuple(x.shape), (), k=k, s=s, p=p)
    length = (9 + 2 * p - k) // s + 1
    assert out == tuple(y.shape) == (2, length, 3 * k) and ctx == ((SEQ_GRID, length),)


def conv_by_routing(x, k, s, p, out):
    """im2col -> linear -> col2im on ``x`` (image or sequence): (y, linear weight, bias)."""
    seq, ctx = get_op("im2col").cls.transfer(tuple(x.shape), (), k=k, s=s, p=p)
    lin = build("linear", seq, out=out)
    y = build("col2im", (seq[0], seq[1], out), ctx)(lin(build("im2col", tuple(x.shape), k=k, s=s, p=p)(x)))
    assert get_op("col2im").cls.transfer((seq[0], seq[1], out), ctx) == (tuple(y.shape), ())
    return y, lin.proj.weight, lin.proj.bias


@pytest.mark.parametrize("k, s, p", [(1, 1, 0), (3, 1, 1), (3, 2, 1), (4, 4, 0), (5, 2, 2), (2, 3, 0)])
def test_im2col_linear_col2im_on_a_sequence_is_a_conv1d(k, s, p):
    x = torch.randn(2, 11, 3)  # (B, L, D)
    y, w, b = conv_by_routing(x, k, s, p, out=5)
    ref = F.conv1d(x.transpose(1, 2), w.reshape(5, 3, k), b, stride=s, padding=p)  # (B, out, L')
    assert y.shape == (2, ref.shape[2], 5)  # the sequence layout (B, L', out)
    torch.testing.assert_close(y, ref.transpose(1, 2))


@pytest.mark.parametrize("k, s, p", [(1, 1, 0), (3, 1, 1), (3, 2, 1), (2, 2, 0)])
def test_im2col_linear_col2im_on_an_image_is_a_conv2d(k, s, p):
    x = torch.randn(2, 3, 6, 7)
    y, w, b = conv_by_routing(x, k, s, p, out=4)
    torch.testing.assert_close(y, F.conv2d(x, w.reshape(4, 3, k, k), b, stride=s, padding=p))


def test_col2im_on_a_1d_grid_keeps_the_sequence_and_pops_the_grid():
    x = torch.randn(2, 5, 4)
    ctx = (("other",), (SEQ_GRID, 5))
    assert get_op("col2im").cls.transfer((2, 5, 4), ctx) == ((2, 5, 4), (("other",),))
    col = build("col2im", (2, 5, 4), ctx)
    assert col(x) is x and "grid=5" in repr(col)


def test_im2col_refusals_on_a_sequence_name_the_length():
    im2col = get_op("im2col").cls.transfer
    with pytest.raises(ShapeError, match="sequence of length 4"):
        im2col((2, 4, 3), (), k=8, s=8, p=0)
    with pytest.raises(ShapeError, match="padding 2 must be below the kernel size 3"):
        im2col((2, 9, 3), (), k=3, s=1, p=2)
    with pytest.raises(ShapeError, match="sequence length 5"):
        get_op("col2im").cls.transfer((2, 4, 3), ((SEQ_GRID, 5),))


def test_to_sequence_lists_positions_row_major_and_pushes_the_grid():
    x = torch.randn(2, 3, 2, 4)
    y = build("to_sequence", tuple(x.shape))(x)
    torch.testing.assert_close(y[:, 1 * 4 + 2], x[:, :, 1, 2])
    out, ctx = get_op("to_sequence").cls.transfer(tuple(x.shape), ())
    assert out == (2, 8, 3) and ctx == ((GRID, 2, 4),)
    back = build("col2im", out, ctx)(y)
    torch.testing.assert_close(back, x)


def test_permute_reorders_axes():
    x = torch.randn(2, 3, 4, 5)
    m = build("permute", tuple(x.shape), order=(0, 3, 1, 2))
    torch.testing.assert_close(m(x), x.permute(0, 3, 1, 2))
    assert get_op("permute").cls.output_shape((2, 3, 4, 5), order=(0, 3, 1, 2)) == (2, 5, 3, 4)


# ------------------------------------------------------------ branching
def test_clone_gives_n_references_to_the_input():
    x = torch.randn(2, 3, 4)
    parts = build("clone", tuple(x.shape), n=3)(x)
    assert len(parts) == 3 and all(p is x for p in parts)


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_group_splits_into_equal_chunks_along_dim(dim):
    x = torch.randn(2, 4, 6, 8)
    parts = build("group", tuple(x.shape), n=2, dim=dim)(x)
    size = x.shape[dim] // 2
    torch.testing.assert_close(parts[0], x.narrow(dim, 0, size))
    torch.testing.assert_close(parts[1], x.narrow(dim, size, size))
    assert get_op("group").cls.output_shapes(tuple(x.shape), n=2, dim=dim) == [tuple(parts[0].shape)] * 2


def test_add_multiply_concat_merge_as_their_torch_counterparts():
    a, b, c = torch.randn(3, 2, 3, 4).unbind(0)
    shapes = [tuple(a.shape)] * 3
    torch.testing.assert_close(build("add", shapes)([a, b, c]), a + b + c)
    torch.testing.assert_close(build("multiply", shapes)([a, b, c]), a * b * c)
    for dim in (1, 2):
        torch.testing.assert_close(build("concat", shapes, dim=dim)([a, b, c]), torch.cat([a, b, c], dim=dim))


def test_matmul_is_a_at_b_optionally_scaled_by_one_over_sqrt_d():
    a, b = torch.randn(2, 5, 3), torch.randn(2, 3, 4)
    shapes = [tuple(a.shape), tuple(b.shape)]
    torch.testing.assert_close(build("matmul", shapes)([a, b]), torch.bmm(a, b))
    torch.testing.assert_close(build("matmul", shapes, scaled=True)([a, b]), torch.bmm(a, b) / math.sqrt(3))
    assert get_op("matmul").cls.output_shape(shapes) == (2, 5, 4)


def test_matmul_then_softmax_reaches_dot_product_attention():
    q, k = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    scores = build("matmul", [(2, 5, 8), (2, 8, 5)], scaled=True)([q, k.transpose(1, 2)])
    attn = build("softmax", (2, 5, 5))(scores)
    torch.testing.assert_close(attn, torch.softmax(q @ k.transpose(1, 2) / math.sqrt(8), dim=-1))


def test_merge_branch_targets_say_what_the_next_branch_must_produce():
    assert get_op("add").cls.branch_target([(2, 3, 4)]) == (2, 3, 4)
    assert get_op("concat").cls.branch_target([(2, 3, 4)], dim=2) == (2, 3, None)
    assert get_op("matmul").cls.branch_target([(2, 3, 4)]) == (2, 4, None)


# ------------------------------------------------------------ shape rules refuse
REFUSALS = [
    ("im2col on a vector", lambda: get_op("im2col").cls.transfer((2, 9), (), k=3, s=1, p=0)),
    ("im2col on an image's tokens", lambda: get_op("im2col").cls.transfer((2, 9, 4), ((GRID, 3, 3),), k=3, s=1, p=0)),
    ("im2col too long", lambda: get_op("im2col").cls.transfer((2, 2, 4), (), k=3, s=1, p=0)),
    ("im2col too large", lambda: get_op("im2col").cls.transfer((2, 3, 2, 2), (), k=3, s=1, p=0)),
    ("col2im without grid", lambda: get_op("col2im").cls.transfer((2, 9, 4), ())),
    ("col2im wrong token count", lambda: get_op("col2im").cls.transfer((2, 8, 4), ((GRID, 3, 3),))),
    ("col2im on an image", lambda: get_op("col2im").cls.transfer((2, 3, 3, 3), ((GRID, 3, 3),))),
    ("col2im wrong length", lambda: get_op("col2im").cls.transfer((2, 8, 4), ((SEQ_GRID, 9),))),
    ("col2im on an image, 1D grid", lambda: get_op("col2im").cls.transfer((2, 3, 3, 3), ((SEQ_GRID, 3),))),
    ("group indivisible", lambda: get_op("group").cls.output_shapes((2, 5, 4, 4), n=2, dim=1)),
    ("group dim beyond rank", lambda: get_op("group").cls.output_shapes((2, 4, 4), n=2, dim=3)),
    ("add unequal", lambda: get_op("add").cls.output_shape([(2, 3, 4), (2, 3, 5)])),
    ("multiply unequal", lambda: get_op("multiply").cls.output_shape([(2, 3, 4), (2, 4, 4)])),
    ("concat off-axis mismatch", lambda: get_op("concat").cls.output_shape([(2, 3, 4), (2, 3, 5)], dim=1)),
    ("concat mixed layouts", lambda: get_op("concat").cls.output_shape([(2, 3, 4), (2, 3, 4, 4)], dim=1)),
    ("matmul not chaining", lambda: get_op("matmul").cls.output_shape([(2, 3, 4), (2, 5, 6)])),
    ("matmul three branches", lambda: get_op("matmul").cls.output_shape([(2, 3, 3)] * 3)),
    ("linear on a vector", lambda: get_op("linear").cls.output_shape((2, 3), out=4)),
    ("conv2d on a sequence", lambda: get_op("conv2d").cls.output_shape((2, 3, 4), out=4)),
    ("conv2d groups", lambda: get_op("conv2d").cls.output_shape((2, 3, 8, 8), out=4, groups=2)),
    ("maxpool too large", lambda: get_op("maxpool").cls.output_shape((2, 3, 2, 2), k=5, s=1, p=0)),
    ("maxpool on a sequence", lambda: get_op("maxpool").cls.output_shape((2, 3, 4))),
    ("permute not a permutation", lambda: get_op("permute").cls.output_shape((2, 3, 4), order=(0, 1, 1))),
    ("permute moves the batch", lambda: get_op("permute").cls.output_shape((2, 3, 4), order=(1, 0, 2))),
    ("to_sequence on a sequence", lambda: get_op("to_sequence").cls.transfer((2, 3, 4), ())),
    ("norm on a vector", lambda: get_op("norm").cls.output_shape((2, 3))),
]


@pytest.mark.parametrize("what, call", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_shape_rules_refuse_bad_inputs_with_shape_error(what, call):
    with pytest.raises(ShapeError):
        call()


# ------------------------------------------------------------ every registered op
IMG, SEQ = (2, 4, 6, 6), (2, 6, 8)
#: Representative valid inputs: (input shape or list of shapes, context, args).
EXAMPLES = {
    "im2col": [(IMG, (), {"k": 3, "s": 1, "p": 1}), (IMG, (), {"k": 2, "s": 2}), (SEQ, (), {"k": 3, "s": 2, "p": 1})],
    "col2im": [((2, 9, 5), ((GRID, 3, 3),), {}), ((2, 9, 5), ((SEQ_GRID, 9),), {})],
    "linear": [(IMG, (), {"out": 5}), (SEQ, (), {"out": 3, "bias": False})],
    "conv2d": [(IMG, (), {"out": 6, "k": 3, "groups": 2}), (IMG, (), {"out": 3, "k": 5, "s": 2, "d": 1, "p": 0})],
    "permute": [(IMG, (), {"order": (0, 2, 3, 1)}), (SEQ, (), {"order": (0, 2, 1)})],
    "clone": [(IMG, (), {"n": 3})],
    "group": [(IMG, (), {"n": 2, "dim": 1}), (SEQ, (), {"n": 3, "dim": 1})],
    "matmul": [([(2, 5, 3), (2, 3, 4)], (), {"scaled": True})],
    "concat": [([(2, 3, 4), (2, 5, 4)], (), {"dim": 1}), ([IMG, IMG], (), {"dim": 3})],
    "maxpool": [(IMG, (), {"k": 3, "s": 2, "p": 1})],
    "avgpool": [(IMG, (), {"k": 2, "s": 1, "p": 0})],
    "spectral_conv": [(IMG, (), {"modes": 3, "out": 5}), (SEQ, (), {"modes": 2})],
    "mgno": [(IMG, (), {"levels": 2, "smooth": 2}), (SEQ, (), {"levels": 3})],
    "local_integral_kernel": [(IMG, (), {"radius": 0.3, "basis": 2}), (SEQ, (), {"radius": 0.25})],
    "differential_kernel": [(IMG, (), {"k": 3}), (SEQ, (), {"k": 5})],
    "moe": [(IMG, (), {"experts": 3, "k": 2}), (SEQ, (), {})],
    "dwconv2d": [(IMG, (), {"k": 3}), (IMG, (), {"k": 5, "s": 2, "d": 2, "bias": False})],
    "conv1d": [(SEQ, (), {"out": 4, "k": 3, "d": 2, "groups": 2}), (SEQ, (), {"out": 8, "k": 4, "s": 2, "causal": True})],
    "gated_cnn": [(IMG, (), {"k": 3}), (SEQ, (), {"k": 3, "conv_ratio": 0.5})],
    "grassmann": [(SEQ, (), {"rank": 4, "offsets": (1, 3)})],
    # vision (no required args; these exercise the non-default paths)
    "outlook_attention": [(IMG, (), {"heads": 2, "kernel": 3, "stride": 2}), (IMG, (), {"kernel": 5})],
    "i2correlation": [(IMG, (), {"fuse": "add", "references": 3}), (SEQ, (), {"heads": 4})],
}


def examples_for(spec):
    if spec.name in EXAMPLES:
        return EXAMPLES[spec.name]
    if any(a.required for a in spec.args.values()):
        return []
    if spec.kind == "merge":
        return [([IMG, IMG], (), {}), ([SEQ, SEQ], (), {})]
    return [(IMG, (), {}), (SEQ, (), {})]


def run_op(spec, shape, ctx, args):
    """(declared params, real params, declared output shape(s), real output shape(s))."""
    args = spec.bind(args)
    module = spec.build(shape, args, ctx)
    real_params = sum(p.numel() for p in module.parameters())
    declared_params = spec.cls.count_params(shape, **args)
    if spec.kind == "merge":
        declared = spec.cls.output_shape(shape, **args)
        real = tuple(module([torch.randn(s) for s in shape]).shape)
    elif spec.kind == "split":
        declared = [tuple(s) for s in spec.cls.output_shapes(shape, **args)]
        real = [tuple(t.shape) for t in module(torch.randn(shape))]
    else:
        declared, _ = spec.cls.transfer(shape, ctx, **args)
        real = tuple(module(torch.randn(shape)).shape)
    return declared_params, real_params, declared, real


@pytest.mark.parametrize("spec", all_ops(), ids=lambda s: s.name)
def test_declared_shape_and_param_count_match_the_built_module(spec):
    cases = examples_for(spec)
    assert cases, f"op '{spec.name}' has required arguments: add a representative input to EXAMPLES"
    ran = 0
    for shape, ctx, args in cases:
        try:
            declared_params, real_params, declared, real = run_op(spec, shape, ctx, args)
        except ShapeError:
            if spec.name in EXAMPLES:
                raise
            continue  # a generic example this op does not accept (e.g. images only)
        ran += 1
        assert declared == real, f"{spec.name}{args} on {shape}"
        if declared_params is not None:
            assert declared_params == real_params, f"{spec.name}{args} on {shape}"
        assert spec.param_count(shape, spec.bind(args), ctx) == real_params
    assert ran, f"no example input of op '{spec.name}' type-checks"


def test_every_op_declares_a_doc_line_and_a_kind():
    for spec in all_ops():
        assert spec.doc, spec.name
        assert spec.kind in ("unary", "split", "merge")
