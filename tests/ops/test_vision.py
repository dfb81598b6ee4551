"""Vision attention modules (archgram/ops/vision) against independent references:
each paper's formula written out with explicit loops or einsums on tiny inputs,
using the weights of the built module, plus the properties the papers state."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from archgram.errors import ShapeError
from archgram.ops import get_op

torch.manual_seed(0)


def build(name, shape, **args):
    spec = get_op(name)
    return spec.build(shape, spec.bind(args)).eval()


def conv1x1(conv, z):
    """Apply a 1x1 conv's weights to z (..., C_in) on the last axis."""
    return z @ conv.weight[:, :, 0, 0].T + conv.bias


# ------------------------------------------------------------ S65 coordinate attention
@pytest.mark.catalog("S65")
def test_coord_attention_gates_each_pixel_by_a_row_map_times_a_column_map():
    x = torch.randn(2, 6, 3, 4)
    m = build("coord_attention", tuple(x.shape), reduction=2, min_mid=2)
    bn = m.bn
    ref = torch.empty_like(x)
    for b in range(2):
        zh = [x[b, :, i, :].mean(dim=1) for i in range(3)]  # rows: mean over W
        zw = [x[b, :, :, j].mean(dim=1) for j in range(4)]  # columns: mean over H

        def transform(z):
            f = conv1x1(m.shared, z)
            f = (f - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
            return F.hardswish(f)

        gh = [torch.sigmoid(conv1x1(m.to_h, transform(z))) for z in zh]
        gw = [torch.sigmoid(conv1x1(m.to_w, transform(z))) for z in zw]
        for i in range(3):
            for j in range(4):
                ref[b, :, i, j] = x[b, :, i, j] * gh[i] * gw[j]
    torch.testing.assert_close(m(x), ref)


@pytest.mark.catalog("S65")
def test_coord_attention_uses_the_papers_reduced_width_and_refuses_sequences():
    m = build("coord_attention", (1, 64, 4, 4))
    assert m.shared.out_channels == 8  # max(8, 64 // 32)
    assert build("coord_attention", (1, 512, 2, 2)).shared.out_channels == 16
    with pytest.raises(ShapeError, match="coord_attention"):
        get_op("coord_attention").cls.output_shape((2, 6, 8))


# ------------------------------------------------------------ S62 polarized self-attention
def psa_reference(m, x, mode):
    ch, sp = m.channel, m.spatial

    def a_ch(x):
        t = x.flatten(2).transpose(1, 2)  # (B, HW, C)
        v = conv1x1(ch.wv, t)  # (B, HW, C/2)
        q = torch.softmax(conv1x1(ch.wq, t)[..., 0], dim=1)  # (B, HW)
        z = conv1x1(ch.wz, torch.einsum("bnc,bn->bc", v, q))
        return torch.sigmoid(F.layer_norm(z, (z.shape[-1],), ch.ln.weight, ch.ln.bias))[:, :, None, None]

    def a_sp(x):
        t = x.flatten(2).transpose(1, 2)
        q = torch.softmax(conv1x1(sp.wq, t).mean(dim=1), dim=-1)  # (B, C/2)
        v = conv1x1(sp.wv, t)  # (B, HW, C/2)
        return torch.sigmoid(torch.einsum("bc,bnc->bn", q, v)).view(x.shape[0], 1, *x.shape[2:])

    if mode == "parallel":
        return a_ch(x) * x + a_sp(x) * x
    x1 = a_ch(x) * x
    return a_sp(x1) * x1


@pytest.mark.catalog("S62")
@pytest.mark.parametrize("mode", ["parallel", "sequential"])
def test_polarized_attention_matches_the_papers_branch_formulas(mode):
    x = torch.randn(2, 6, 3, 5)
    m = build("polarized_attention", tuple(x.shape), mode=mode)
    torch.testing.assert_close(m(x), psa_reference(m, x, mode))


@pytest.mark.catalog("S62")
def test_polarized_channel_branch_ignores_pixel_order_and_spatial_branch_follows_it():
    """Each branch collapses one axis completely: the channel-only weights (a
    softmax-pooled summary over all H*W positions) do not change when the pixels
    are shuffled, while the spatial-only map is shuffled with them (a per-pixel
    weight from globally pooled channels); both keep C/2 internal channels."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 4, 4, generator=g)
    m = build("polarized_attention", tuple(x.shape))
    perm = torch.randperm(16, generator=g)
    shuffled = x.flatten(2)[..., perm].view_as(x)
    torch.testing.assert_close(m.channel(shuffled), m.channel(x))
    torch.testing.assert_close(m.spatial(shuffled).flatten(2), m.spatial(x).flatten(2)[..., perm])
    assert not torch.allclose(m.channel(x)[0], m.channel(x)[1])  # it does read the input
    assert m.channel.wv.out_channels == 4 and m.spatial.wq.out_channels == 4  # internal resolution C/2
    with pytest.raises(ShapeError, match="polarized_attention"):
        get_op("polarized_attention").cls.output_shape((2, 1, 4, 4))


# ------------------------------------------------------------ S58 outlook attention
def outlook_loop(m, x):
    """Explicit per-anchor loop: weights from the anchor's feature, mix its KxK window, add back."""
    b, c, h, w = x.shape
    k, s, nh = m.kernel, m.stride, m.heads
    d, p = c // nh, k // 2
    v = x.permute(0, 2, 3, 1) @ m.v.weight.T  # (B, H, W, C)
    pooled = F.avg_pool2d(x, s, s, ceil_mode=True).permute(0, 2, 3, 1)
    out = torch.zeros(b, h, w, c)
    for bi in range(b):
        for ai in range(pooled.shape[1]):
            for aj in range(pooled.shape[2]):
                logits = (pooled[bi, ai, aj] @ m.attn.weight.T + m.attn.bias).view(nh, k * k, k * k)
                a = torch.softmax(logits * m.scale, dim=-1)
                cells = [(ai * s + di - p, aj * s + dj - p) for di in range(k) for dj in range(k)]
                for head in range(nh):
                    sl = slice(head * d, (head + 1) * d)
                    win = torch.stack([v[bi, i, j, sl] if 0 <= i < h and 0 <= j < w else torch.zeros(d)
                                       for i, j in cells])
                    mixed = a[head] @ win  # (K^2, d)
                    for (i, j), row in zip(cells, mixed):
                        if 0 <= i < h and 0 <= j < w:
                            out[bi, i, j, sl] += row
    return (out @ m.proj.weight.T + m.proj.bias).permute(0, 3, 1, 2)


@pytest.mark.catalog("S58")
@pytest.mark.parametrize("heads, kernel, stride", [(1, 3, 1), (2, 3, 2), (2, 5, 1)])
def test_outlook_attention_equals_an_explicit_per_anchor_window_loop(heads, kernel, stride):
    x = torch.randn(1, 4, 4, 5)
    m = build("outlook_attention", tuple(x.shape), heads=heads, kernel=kernel, stride=stride)
    torch.testing.assert_close(m(x), outlook_loop(m, x), atol=1e-5, rtol=1e-5)


@pytest.mark.catalog("S58")
def test_outlook_attention_is_local_a_far_pixel_does_not_change_the_output():
    x = torch.randn(1, 4, 9, 9)
    m = build("outlook_attention", tuple(x.shape), kernel=3)
    y = m(x)
    x2 = x.clone()
    x2[..., 8, 8] += 5.0
    # with K = 3 an anchor reaches 1 pixel away and writes 1 pixel further: a 2-pixel reach
    torch.testing.assert_close(m(x2)[..., :6, :6], y[..., :6, :6])
    assert not torch.allclose(m(x2)[..., 7, 7], y[..., 7, 7])
    with pytest.raises(ShapeError, match="outlook_attention"):
        get_op("outlook_attention").cls.output_shape((1, 4, 9, 9), kernel=4)
    with pytest.raises(ShapeError, match="outlook_attention"):
        get_op("outlook_attention").cls.output_shape((1, 6, 9, 9), heads=4)


# ------------------------------------------------------------ S12 DaViT channel group attention
@pytest.mark.catalog("S12")
def test_channel_attention_matches_softmax_of_q_transpose_k_per_group():
    t = torch.randn(2, 5, 6)
    m = build("channel_attention", tuple(t.shape), groups=3)
    q, k, v = (t @ m.qkv.weight.T + m.qkv.bias).chunk(3, dim=-1)
    out = torch.empty_like(t)
    g = 2
    for gi in range(3):
        sl = slice(gi * g, (gi + 1) * g)
        for b in range(2):
            a = torch.softmax(q[b, :, sl].T @ k[b, :, sl] / g**0.5, dim=-1)  # (Cg, Cg)
            out[b, :, sl] = (a @ v[b, :, sl].T).T
    torch.testing.assert_close(m(t), out @ m.proj.weight.T + m.proj.bias)


@pytest.mark.catalog("S12")
def test_channel_attention_is_global_and_token_permutation_equivariant():
    x = torch.randn(1, 4, 3, 3)
    m = build("channel_attention", tuple(x.shape), groups=2)
    perm = torch.randperm(9)
    y = m(x).flatten(2)
    y_perm = m(x.flatten(2)[..., perm].view_as(x)).flatten(2)
    torch.testing.assert_close(y_perm, y[..., perm])
    x2 = x.clone()
    x2[..., 0, 0] += 3.0  # one corner token changes every token's output (global receptive field)
    assert (m(x2) - m(x))[..., 2, 2].abs().max() > 1e-4
    with pytest.raises(ShapeError, match="channel_attention"):
        get_op("channel_attention").cls.output_shape((1, 5, 3, 3), groups=2)


# ------------------------------------------------------------ S51 class-semantics attention
@pytest.mark.catalog("S51")
def test_csa_scores_from_r_gate_f_on_channels_and_time_points_and_sum():
    r, f = torch.randn(2, 7, 6), torch.randn(2, 7, 8)  # R and F share time points, not channels
    m = build("csa", [tuple(r.shape), tuple(f.shape)], reduction=2, kernel=3)
    ref = torch.empty_like(f)
    w = m.temporal.weight[0]  # (2, 3)
    for b in range(2):
        a_c = torch.sigmoid(m.fc2(torch.relu(m.fc1(r[b].mean(0)))))  # (C_F,) from R
        stats = torch.stack([r[b].mean(1), r[b].max(1).values])  # (2, T) from R
        padded = F.pad(stats, (1, 1))
        for i in range(7):
            a_t = torch.sigmoid((padded[:, i:i + 3] * w).sum() + m.temporal.bias[0])
            ref[b, i] = a_c * f[b, i] + a_t * f[b, i]
    torch.testing.assert_close(m([r, f]), ref)


@pytest.mark.catalog("S51")
def test_csa_importance_comes_from_the_class_semantics_input_not_from_f():
    """The paper's defining choice: scores are learned from R, not from the encoded F.
    So for a fixed R the op is linear in F (a self-gate of F is not), and changing R
    alone re-weights F."""
    r, f1, f2 = torch.randn(2, 4, 3, 5), torch.randn(2, 6, 3, 5), torch.randn(2, 6, 3, 5)
    m = build("csa", [tuple(r.shape), tuple(f1.shape)])
    torch.testing.assert_close(m([r, 2.0 * f1 - 3.0 * f2]), 2.0 * m([r, f1]) - 3.0 * m([r, f2]))
    assert (m([r + torch.randn_like(r), f1]) - m([r, f1])).abs().max() > 1e-3
    a_c, a_t = m.scores(r.flatten(2).transpose(1, 2))
    assert a_c.shape == (2, 1, 6) and a_t.shape == (2, 15, 1)


def _fit_csa_selection(scores_from_r: bool, seed: int = 0, steps: int = 100) -> float:
    """Train csa + a linear readout to sum F's first channel over the time points
    flagged in R; return the held-out MSE over the target's variance."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    b, t = 64, 8
    m = build("csa", [(b, t, 2), (b, t, 4)], reduction=1, kernel=1).train()
    head = torch.nn.Linear(4, 1)
    opt = torch.optim.Adam([*m.parameters(), *head.parameters()], lr=0.05)

    def batch():
        f = torch.randn(b, t, 4, generator=g)
        flag = (torch.rand(b, t, generator=g) < 0.5).float()  # which time points hold the "action"
        r = torch.stack([3 * flag, torch.randn(b, t, generator=g)], -1)
        return r if scores_from_r else f[..., :2], f, (flag * f[..., 0]).mean(1)

    def loss_of(r, f, y):
        return (head(m([r, f]).mean(1)).squeeze(-1) - y).square().mean()

    for _ in range(steps):
        loss = loss_of(*batch())
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        r, f, y = batch()
        return (loss_of(r, f, y) / y.var()).item()


@pytest.mark.catalog("S51")
def test_csa_reproduction_scores_from_r_select_the_time_points_r_flags():
    """Small reproduction of the paper's claim: importance learned from the
    class-semantics features R picks the useful time points of F; the same op
    gated by F itself (R = F, the old unary form) cannot."""
    assert _fit_csa_selection(scores_from_r=True) < 0.15
    assert _fit_csa_selection(scores_from_r=False) > 0.3


def test_csa_shape_rule_needs_two_branches_with_the_same_time_points():
    rule = get_op("csa").cls.output_shape
    assert rule([(2, 7, 4), (2, 7, 8)]) == (2, 7, 8)
    assert get_op("csa").cls.branch_target([(2, 4, 3, 5)]) == (2, None, 3, 5)
    for bad in ([(2, 7, 8)], [(2, 7, 8), (2, 6, 8)], [(2, 4, 3, 5), (2, 4, 5, 3)], [(2, 7, 8), (2, 8, 2, 2)]):
        with pytest.raises(ShapeError, match="csa"):
            rule(bad)
    with pytest.raises(ShapeError, match="csa"):
        rule([(2, 7, 8), (2, 7, 8)], kernel=2)


# ------------------------------------------------------------ S07 FOD I2Correlation
def attend(q, k, v):
    return torch.softmax(q @ k.T / q.shape[-1] ** 0.5, dim=-1) @ v


@pytest.mark.catalog("S07")
@pytest.mark.parametrize("fuse", ["concat", "add"])
def test_i2correlation_fuses_self_attention_and_attention_to_the_reference(fuse):
    t = torch.randn(2, 5, 4)
    m = build("i2correlation", tuple(t.shape), heads=2, references=3, fuse=fuse)
    wq, wk, wv = m.qkv.weight.chunk(3)
    bq, bk, bv = m.qkv.bias.chunk(3)
    wkr, wvr = m.kv_ref.weight.chunk(2)
    bkr, bvr = m.kv_ref.bias.chunk(2)
    r = m.reference
    out = []
    for b in range(2):
        x = t[b]
        q, k, v = x @ wq.T + bq, x @ wk.T + bk, x @ wv.T + bv
        qi, kr, vr = m.q_inter(x), r @ wkr.T + bkr, r @ wvr.T + bvr
        intra = torch.cat([attend(q[:, h:h + 2], k[:, h:h + 2], v[:, h:h + 2]) for h in (0, 2)], dim=1)
        inter = torch.cat([attend(qi[:, h:h + 2], kr[:, h:h + 2], vr[:, h:h + 2]) for h in (0, 2)], dim=1)
        fused = torch.cat([intra, inter], dim=1) if fuse == "concat" else intra + inter
        out.append(m.out(fused))
    torch.testing.assert_close(m(t), torch.stack(out))


@pytest.mark.catalog("S07")
def test_i2correlation_intra_target_is_an_rbf_kernel_over_token_positions():
    """T_ij = softmax_j(-|p_i - p_j|^2 / 2 sigma^2) on grid coordinates; sigma = 1 at init."""
    m = build("i2correlation", (1, 4, 2, 2))
    from archgram.ops.vision.i2correlation import token_positions

    t = m.target(token_positions(torch.zeros(1, 4, 2, 2)))  # tokens (0,0) (0,1) (1,0) (1,1)
    row = torch.tensor([1.0, math.exp(-0.5), math.exp(-0.5), math.exp(-1.0)])
    torch.testing.assert_close(t[0, 0], row / row.sum())
    m.train()(torch.randn(1, 4, 2, 2))
    assert m.aux_loss.requires_grad  # the learning targets ride along with each training forward


@pytest.mark.catalog("S07")
def test_i2correlation_learning_targets_make_an_anomalous_token_stand_out():
    """A small reproduction of FOD's premise: trained on normal data with its learning targets
    alone (RBF intra target + inter entropy constraint), the layer scores a token unlike the
    normal patterns with a larger discrepancy than the normal tokens; untrained, it does not."""
    torch.manual_seed(0)
    protos = torch.randn(3, 8) * 2  # the normal patterns

    def normal(b):
        return protos[torch.randint(0, 3, (b, 6))] + 0.1 * torch.randn(b, 6, 8)

    x = normal(64)
    x[:, 3] = torch.randn(64, 8) * 2  # one anomalous token per sequence

    def ratio(m):
        with torch.no_grad():
            d = m.discrepancy(x)
        return float(d[:, 3].mean() / d[:, [0, 1, 2, 4, 5]].mean())

    m = build("i2correlation", (16, 6, 8), heads=2, references=4)
    before = ratio(m.eval())
    opt = torch.optim.Adam(m.parameters(), lr=0.03)
    m.train()
    for _ in range(80):
        opt.zero_grad()
        m(normal(16))
        m.aux_loss.backward()
        opt.step()
    assert before < 1.2 and ratio(m.eval()) > 2.0


@pytest.mark.catalog("S07")
def test_i2correlation_inter_branch_depends_only_on_each_token_and_the_reference():
    t = torch.randn(1, 6, 4)
    m = build("i2correlation", tuple(t.shape))
    _, inter = m.branches(t)
    t2 = t.clone()
    t2[0, 5] += 2.0  # change another token: the inter-image correlation of token 0 is unchanged
    _, inter2 = m.branches(t2)
    torch.testing.assert_close(inter2[0, :5], inter[0, :5])
    with pytest.raises(ShapeError, match="i2correlation"):
        get_op("i2correlation").cls.output_shape((1, 6, 5), heads=2)


# ------------------------------------------------------------ S20 TCPA
@pytest.mark.catalog("S20")
def test_tcpa_each_token_attends_to_tokens_plus_its_own_prompts():
    t = torch.randn(2, 5, 4)
    m = build("tcpa", tuple(t.shape), heads=1, cls_prompts=2, image_prompts=4, topk=2)
    pc, pi, keys = m.cls_prompts, m.image_prompts, m.prompt_keys
    ref = torch.empty_like(t)
    for b in range(2):
        for j in range(5):
            if j == 0:
                prompts = pc
            else:
                cos = torch.stack([F.cosine_similarity(t[b, j], keys[mi], dim=0) for mi in range(4)])
                prompts = pi[cos.argsort(descending=True)[:2]]
            seen = torch.cat([t[b], prompts])
            q, _, _ = m.qkv(t[b, j]).chunk(3)
            _, k, v = m.qkv(seen).chunk(3, dim=-1)
            ref[b, j] = m.proj(attend(q[None], k, v)[0])
    torch.testing.assert_close(m(t), ref)


@pytest.mark.catalog("S20")
def test_tcpa_cls_and_image_tokens_see_disjoint_prompts():
    t = torch.randn(1, 6, 8)
    m = build("tcpa", tuple(t.shape), cls_prompts=3, image_prompts=5, topk=2)
    mask = m.key_mask(t)[0]  # (N, N + 3 + 5)
    assert mask[0, 6:9].all() and not mask[0, 9:].any()  # CLS: its prompts only
    assert not mask[1:, 6:9].any()  # image tokens never see CLS prompts
    assert (mask[1:, 9:].sum(-1) == 2).all()  # each image token: its top-k pool prompts
    for bad in [(1, 1, 8), (1, 6, 8, 2)]:
        with pytest.raises(ShapeError, match="tcpa"):
            get_op("tcpa").cls.output_shape(bad)
    with pytest.raises(ShapeError, match="tcpa"):
        get_op("tcpa").cls.output_shape((1, 6, 8), image_prompts=2, topk=3)


# ------------------------------------------------------------ S39 RelationNet++ BVR
@pytest.mark.catalog("S39")
def test_bvr_each_pixel_attends_to_the_top_k_heatmap_points_with_geometry():
    from archgram.ops.vision.bvr import offset_embedding

    x = torch.randn(1, 4, 3, 4)
    m = build("bvr", tuple(x.shape), heads=2, keys=3, embed=2)
    heat = (x[0].permute(1, 2, 0) @ m.heat.weight[0, :, 0, 0] + m.heat.bias[0]).flatten()  # (12,)
    order = heat.argsort(descending=True)[:3].tolist()
    keys = [(i // 4, i % 4) for i in order]
    feats = torch.stack([x[0, :, i, j] * torch.sigmoid(heat[i * 4 + j]) for i, j in keys])  # (3, C)
    ref = x.clone()
    for qi in range(3):
        for qj in range(4):
            xq = x[0, :, qi, qj]
            dec = m.decoders[0]
            q, kk, vv = dec.q(xq), dec.k(feats), dec.v(feats)
            heads = []
            for hd in range(2):
                sl = slice(2 * hd, 2 * hd + 2)
                logits = torch.stack([
                    q[sl] @ kk[n, sl] / 2**0.5
                    + dec.geometry(offset_embedding(torch.tensor([(qi - ki) / 3, (qj - kj) / 4]), 2))[hd]
                    for n, (ki, kj) in enumerate(keys)])
                heads.append(torch.softmax(logits, 0) @ vv[:, sl])
            ref[0, :, qi, qj] += dec.out(torch.cat(heads))
    torch.testing.assert_close(m(x), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.catalog("S39")
def test_bvr_key_sets_each_pick_their_own_points_and_their_decoders_add():
    """Several key sets (the paper's centre and corner points): each has its own
    heatmap channel, so its own top-k points, and its own decoder; the op adds the
    decoders' outputs to the input."""
    x = torch.randn(1, 4, 4, 4)
    m = build("bvr", tuple(x.shape), keys=2, kinds=2)
    with torch.no_grad():
        m.heat.weight[1].copy_(-m.heat.weight[0])  # opposite heatmaps: disjoint top points
        m.heat.bias.zero_()
    (_, pos0), (_, pos1) = m.sample_keys(x, 0), m.sample_keys(x, 1)
    assert not {tuple(p) for p in pos0[0].tolist()} & {tuple(p) for p in pos1[0].tolist()}
    t = x.flatten(2).transpose(1, 2)
    parts = [dec(t, *m.sample_keys(x, i), (4, 4)) for i, dec in enumerate(m.decoders)]
    torch.testing.assert_close(m(x), x + (parts[0] + parts[1]).transpose(1, 2).reshape(1, 4, 4, 4))
    assert get_op("bvr").param_count((1, 4, 4, 4), get_op("bvr").bind({"kinds": 2})) == sum(p.numel() for p in m.parameters())


@pytest.mark.catalog("S39")
def test_bvr_output_ignores_pixels_outside_the_sampled_keys():
    x = torch.randn(1, 4, 4, 4)
    m = build("bvr", tuple(x.shape), keys=2)
    _, pos = m.sample_keys(x)
    chosen = {tuple(p) for p in pos[0].tolist()}
    i, j = next((i, j) for i in range(4) for j in range(4) if (i, j) not in chosen)
    x2 = x.clone()
    x2[0, :, i, j] += 1e-3 * torch.randn(4)  # a small change keeps the top-k set
    _, pos2 = m.sample_keys(x2)
    assert {tuple(p) for p in pos2[0].tolist()} == chosen
    diff = (m(x2) - m(x))[0]
    diff[:, i, j] -= x2[0, :, i, j] - x[0, :, i, j]  # the pixel's own residual and query change aside
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[i, j] = False
    torch.testing.assert_close(diff[:, mask], torch.zeros(4, 15))
    with pytest.raises(ShapeError, match="bvr"):
        get_op("bvr").cls.output_shape((1, 4, 2, 2), keys=5)


# ------------------------------------------------------------ S08 progressive masking
@pytest.mark.catalog("S08")
def test_mask_ratio_curriculum_is_zero_then_rises_linearly_to_the_maximum():
    from archgram.ops.vision.progressive_mask import mask_ratio

    assert mask_ratio(0, 100) == 0.0 and mask_ratio(10, 100) == 0.0
    assert mask_ratio(55, 100, max_ratio=0.6) == pytest.approx(0.3)
    assert mask_ratio(100, 100, max_ratio=0.6) == pytest.approx(0.6)
    assert mask_ratio(500, 100, max_ratio=0.6) == pytest.approx(0.6)
    values = [mask_ratio(s, 50) for s in range(51)]
    assert values == sorted(values)
    with pytest.raises(ValueError):
        mask_ratio(1, 0)


@pytest.mark.catalog("S08")
def test_progressive_mask_attention_hides_patches_only_in_training():
    from archgram.ops.vision.progressive_mask import patch_mask

    x = torch.randn(2, 3, 6, 6)
    m = build("progressive_mask_attention", tuple(x.shape), ratio=0.5, patch=2, hidden=4)
    a = torch.sigmoid(F.conv2d(F.relu(F.conv2d(F.conv2d(x, m.reduce.weight, m.reduce.bias),
                                               m.local.weight, m.local.bias, padding=1, groups=4)),
                               m.score.weight, m.score.bias))
    torch.testing.assert_close(m(x), x * a)  # eval: no mask
    assert m.set_progress(100, 100) == pytest.approx(0.5)
    m.train()
    torch.manual_seed(3)
    y = m(x)
    torch.manual_seed(3)
    keep = patch_mask(2, 6, 6, 2, 0.5)
    assert keep.shape == (2, 1, 6, 6) and (keep == 0).sum() == 2 * 4 * 4  # 4 of 9 cells, 2x2 each
    torch.testing.assert_close(y, x * m.attention(x * keep))
    m.set_progress(0, 100)
    torch.testing.assert_close(m(x), x * a)  # curriculum start: nothing hidden
    with pytest.raises(ShapeError, match="progressive_mask_attention"):
        get_op("progressive_mask_attention").cls.output_shape((1, 3, 2, 2), patch=3)


def _smooth_features(n: int, gen: torch.Generator) -> torch.Tensor:
    """(n, 4, 8, 8) features with blob structure (3x3-averaged noise), so a hidden cell's neighbours say something about it."""
    return F.conv2d(torch.randn(n, 4, 8, 8, generator=gen), torch.ones(4, 1, 3, 3) / 3, padding=1, groups=4)


def _train_focus_map(ratio: float, steps: int = 120):
    """The op trained on a focus task (reweight features by sigmoid(2 x_0)) under the
    curriculum up to ``ratio``, adding its aux_loss as the evaluator does."""
    torch.manual_seed(0)
    m = build("progressive_mask_attention", (16, 4, 8, 8), ratio=ratio, patch=2, hidden=8)
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    gen = torch.Generator().manual_seed(1)
    m.train()
    for step in range(steps):
        m.set_progress(step, steps)
        x = _smooth_features(16, gen)
        loss = (m(x) - x * torch.sigmoid(2 * x[:, :1])).square().mean()
        if m.aux_loss is not None:
            loss = loss + m.aux_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval()


@pytest.mark.catalog("S08")
def test_progressive_masking_makes_the_attention_map_robust_to_hidden_patches():
    """The abstract's claim: trained under the progressive masking curriculum (with its
    match loss), the map computed with half the patches hidden agrees with the full-input
    map better than after the same training without masking (correlation over held-out
    maps; about 0.80 against 0.70 here)."""
    from archgram.ops.vision.progressive_mask import patch_mask

    x = _smooth_features(64, torch.Generator().manual_seed(9))
    keep = patch_mask(64, 8, 8, 2, 0.5, generator=torch.Generator().manual_seed(5))

    def agreement(m) -> float:
        with torch.no_grad():
            full, masked = m.attention(x), m.attention(x * keep)
        return float(torch.corrcoef(torch.stack([full.flatten(), masked.flatten()]))[0, 1])

    plain, curriculum = agreement(_train_focus_map(0.0)), agreement(_train_focus_map(0.5))
    assert curriculum > plain + 0.05, (plain, curriculum)


@pytest.mark.catalog("S08")
def test_match_loss_regresses_the_masked_map_on_the_full_map_without_moving_the_target():
    """aux_loss = mean (a(x_masked) - sg[a(x)])^2 while patches are hidden in training;
    none in eval, before the curriculum starts, or with match=false."""
    from archgram.ops.vision.progressive_mask import patch_mask

    x = torch.randn(2, 3, 6, 6)
    m = build("progressive_mask_attention", tuple(x.shape), ratio=0.5, patch=2, hidden=4)
    m.train()
    m(x)
    assert m.aux_loss is None  # curriculum at 0: nothing hidden, nothing to match
    m.set_progress(100, 100)
    torch.manual_seed(3)
    m(x)
    torch.manual_seed(3)
    masked = m.attention(x * patch_mask(2, 6, 6, 2, 0.5))
    full = m.attention(x)
    torch.testing.assert_close(m.aux_loss, (masked - full.detach()).square().mean())
    params = list(m.parameters())
    got = torch.autograd.grad(m.aux_loss, params)
    want = torch.autograd.grad((masked - full.detach()).square().mean(), params, retain_graph=True)
    both = torch.autograd.grad((masked - full).square().mean(), params)  # what a moving target would give
    assert all(torch.allclose(g, w) for g, w in zip(got, want))
    assert not all(torch.allclose(g, b) for g, b in zip(got, both))
    m.eval()
    m(x)
    assert m.aux_loss is None
    off = build("progressive_mask_attention", tuple(x.shape), ratio=0.5, patch=2, hidden=4, match=False)
    off.train()
    off.set_progress(100, 100)
    off(x)
    assert off.aux_loss is None


# ------------------------------------------------------------ S33 FBLNet feedback memory
@pytest.mark.catalog("S33")
def test_fbl_memory_loops_read_then_write_from_the_stored_knowledge():
    t = torch.randn(2, 5, 4)
    m = build("fbl_memory", tuple(t.shape), slots=3, iterations=2)
    with torch.no_grad():
        m.knowledge.copy_(torch.randn(3, 4))
        m.gate.fill_(0.3)
    g = torch.sigmoid(torch.tensor(0.3))
    ref = []
    for b in range(2):
        x, mem = t[b], m.knowledge.clone()
        for _ in range(2):
            a = torch.softmax(m.q(x) @ m.k(mem).T / 2, dim=-1)
            x = x + m.o(a @ m.v(mem))
            u = torch.softmax(m.slot_queries @ x.T / 2, dim=-1) @ x
            mem = (1 - g) * mem + g * u
        ref.append(x)
    torch.testing.assert_close(m(t), torch.stack(ref))


@pytest.mark.catalog("S33")
def test_fbl_memory_accumulates_knowledge_across_inputs_only_in_training():
    x = torch.randn(2, 4, 3, 3)
    m = build("fbl_memory", tuple(x.shape), momentum=0.5)
    y0 = m(x)
    assert torch.count_nonzero(m.knowledge) == 0  # eval: read only
    torch.testing.assert_close(m(x), y0)
    m.train()
    m(x)
    first = m.knowledge.clone()
    assert first.abs().sum() > 0  # the loop's knowledge was kept
    m(x)
    assert not torch.allclose(m.knowledge, first)  # and keeps accumulating
    m.eval()
    assert not torch.allclose(m(x), y0)  # fed back: the same input is now read differently


# ------------------------------------------------------------ S16 OAT object decoder
@pytest.mark.catalog("S16")
def test_oat_decoder_greedily_points_at_objects_and_feeds_them_back():
    x = torch.randn(1, 5, 4)
    m = build("oat_decoder", tuple(x.shape), steps=3, heads=1)
    pe = (2 / 4) ** 0.5 * torch.cos(x[0, :, :2] @ m.omega + m.phase)  # random Fourier features
    objects = x[0] + pe

    def attend_rows(q, k, v, causal):
        logits = q @ k.T / q.shape[-1] ** 0.5
        if causal:
            logits = logits + torch.full_like(logits, float("-inf")).triu(1)
        return torch.softmax(logits, -1) @ v

    inputs, chosen = [m.start], []
    for t in range(3):
        z = torch.stack(inputs) + m.step_embedding[: t + 1]
        q, k, v = m.self_qkv(z).chunk(3, dim=-1)
        h = F.layer_norm(z + m.self_out(attend_rows(q, k, v, True)), (4,), m.norm1.weight, m.norm1.bias)
        k, v = m.cross_kv(objects).chunk(2, dim=-1)
        h = F.layer_norm(h + m.cross_out(attend_rows(m.cross_q(h), k, v, False)), (4,), m.norm2.weight, m.norm2.bias)
        nxt = int((m.pointer(h[-1]) @ objects.T).argmax())
        chosen.append(nxt)
        inputs.append(objects[nxt])
    torch.testing.assert_close(m(x)[0], h)
    assert m.last_fixations[0].tolist() == chosen[:2]


@pytest.mark.catalog("S16")
def test_oat_position_encoding_similarity_is_a_gaussian_of_object_distance():
    """The paper's distance-based encoding: PE(p) . PE(q) = exp(-|p - q|^2 / 2 sigma^2), so nearby
    objects look alike and far ones orthogonal (random Fourier features: error ~ 1/sqrt(C))."""
    torch.manual_seed(0)
    m = build("oat_decoder", (1, 4, 2048), heads=1, sigma=0.3)
    p = torch.rand(12, 2)
    pe = m.position_encoding(p)
    gauss = torch.exp(-torch.cdist(p, p).pow(2) / (2 * 0.3**2))
    assert (pe @ pe.T - gauss).abs().max() < 0.1
    near, far = pe[0] @ m.position_encoding(p[:1] + 0.05).T, pe[0] @ m.position_encoding(p[:1] + 1.0).T
    assert near > 0.9 and far.abs() < 0.1


@pytest.mark.catalog("S16")
def test_oat_decoder_predicts_a_scanpath_as_a_sequence_of_object_fixations():
    """output=fixations: step t's logits over the objects are the pointer scores, greedy
    decoding fixates their argmax, and the next step's distribution follows that choice."""
    x = torch.randn(2, 5, 8)
    m = build("oat_decoder", tuple(x.shape), steps=3, output="fixations")
    logits = m(x)
    assert logits.shape == (2, 3, 5)
    assert torch.equal(logits[:, :2].argmax(-1), m.last_fixations)  # the fixated objects
    objects = m.objects(x)
    fixated = objects.gather(1, m.last_fixations[:, :1, None].expand(-1, -1, 8))
    h = m.decode(torch.cat([m.start.expand(2, 1, -1), fixated], 1), objects)
    torch.testing.assert_close(logits[:, 1], (m.pointer(h[:, -1]) [:, None] @ objects.transpose(1, 2))[:, 0])
    other = objects.gather(1, ((m.last_fixations[:, :1] + 1) % 5)[..., None].expand(-1, -1, 8))
    h2 = m.decode(torch.cat([m.start.expand(2, 1, -1), other], 1), objects)
    assert not torch.allclose(m.pointer(h2[:, -1]), m.pointer(h[:, -1]))  # the scanpath conditions on its past


@pytest.mark.catalog("S16")
def test_oat_decoder_learns_a_scanpath_rule_from_fixation_cross_entropy():
    """A small reproduction of OAT's training: cross-entropy on fixations teaches the decoder
    a scanpath (visit the objects from left to right by their x coordinate)."""
    torch.manual_seed(0)
    x = torch.randn(32, 4, 8)
    target = x[..., 0].argsort(dim=1)[:, :3]  # leftmost first
    m = build("oat_decoder", (32, 4, 8), steps=3, heads=2, output="fixations")
    opt = torch.optim.Adam(m.parameters(), lr=0.03)
    for _ in range(40):
        opt.zero_grad()
        F.cross_entropy(m(x).flatten(0, 1), target.flatten()).backward()
        opt.step()
    assert (m(x).argmax(-1) == target).float().mean() > 0.9


@pytest.mark.catalog("S16")
def test_oat_decoder_is_causal_and_declares_one_state_per_fixation():
    x = torch.randn(2, 6, 8)
    m = build("oat_decoder", tuple(x.shape), steps=4)
    y = m(x)
    assert y.shape == (2, 4, 8)
    objects = m.objects(x)
    z = torch.cat([m.start.expand(2, 1, -1), objects.gather(1, m.last_fixations.unsqueeze(-1).expand(-1, -1, 8))], 1)
    torch.testing.assert_close(m.decode(z[:, :2], objects), y[:, :2])  # a prefix's states do not see later steps
    with pytest.raises(ShapeError, match="oat_decoder"):
        get_op("oat_decoder").cls.output_shape((2, 8, 4, 4))
    with pytest.raises(ShapeError, match="oat_decoder"):
        get_op("oat_decoder").cls.output_shape((2, 6, 7), heads=2)


# ------------------------------------------------------------ all vision ops
VISION = ["coord_attention", "polarized_attention", "outlook_attention", "channel_attention",
          "i2correlation", "tcpa", "bvr", "oat_decoder", "fbl_memory", "progressive_mask_attention"]


@pytest.mark.parametrize("name", VISION)
def test_vision_op_trains_gradients_reach_every_parameter_and_the_input(name):
    spec = get_op(name)
    shape = (2, 8, 6, 6) if name not in ("tcpa", "oat_decoder") else (2, 6, 8)
    m = spec.build(shape, spec.bind({})).train()
    if name == "progressive_mask_attention":
        m.set_progress(1, 1)
    x = torch.randn(shape, requires_grad=True)
    for _ in range(2):  # twice: stateful ops (fbl_memory) must survive their own update
        m.zero_grad()
        y = m(x).square().mean()
        (y + m.__dict__.get("aux_loss", 0.0)).backward()  # the trainer adds ops' learning targets
    assert [n for n, p in m.named_parameters() if p.grad is None] == []
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert spec.family == "vision" and spec.refs
