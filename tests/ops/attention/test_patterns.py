"""Attention patterns against independent references: naive loops that build each
mask entry by entry from the paper's rule, and properties the papers state (a
window covering the input is full attention, stacked axial layers reach every
pixel, Combiner equals attention over explicit block summaries)."""
from __future__ import annotations

import math

import pytest
import torch

from archgram.errors import ShapeError
from archgram.ops.registry import get_op

SPEC = get_op("attention")


def build(shape, **args):
    torch.manual_seed(0)
    return SPEC.build(shape, SPEC.bind(args))


def pat(name, **params):
    return {"name": name, **params}


def qk(m, x):
    """Queries and keys (B, H, N, D) the op would hand to its pattern."""
    if x.dim() == 4:
        x = x.flatten(2).transpose(1, 2)
    with torch.no_grad():
        q, k, _ = m.layout.qkv(x)
        return q, m.layout.expand(k)


def full_output(shape, x, heads=2, causal=False):
    return build(shape, heads=heads, causal=causal)(x)


# ---- fixed patterns ------------------------------------------------------


def test_dilated_window_matches_a_naive_loop():
    m = build((1, 13, 8), heads=1, pattern=pat("window", size=5, dilation=3))
    mask = m.mask(13, "cpu")
    for i in range(13):
        for j in range(13):
            assert bool(mask[i, j]) == (j in {i - 6, i - 3, i, i + 3, i + 6})


def test_dilated_window_covering_the_sequence_equals_full_attention():
    x = torch.randn(2, 7, 16)
    m = build((2, 7, 16), heads=2, pattern=pat("window", size=5, dilation=3))
    assert m.mask(7, "cpu").sum().item() < 49  # dilation leaves gaps ...
    wide = build((2, 7, 16), heads=2, pattern=pat("window", size=13, dilation=1))
    torch.testing.assert_close(wide(x), full_output((2, 7, 16), x))  # ... a covering window does not


LAYOUT_RULES = {
    "local": lambda r, s, nb: abs(r - s) <= 1,
    "global": lambda r, s, nb: r == s or r == 0 or s == 0,
    "strided": lambda r, s, nb: (r - s) % max(2, round(math.sqrt(nb))) == 0,
}


@pytest.mark.parametrize("layout", sorted(LAYOUT_RULES))
def test_block_sparse_layouts_match_naive_block_rules(layout):
    n, block = 22, 3  # 8 blocks, the last one partial
    m = build((1, n, 8), heads=1, pattern=pat("block_sparse", block=block, pattern=layout))
    mask = m.mask(n, "cpu")
    for i in range(n):
        for j in range(n):
            assert bool(mask[i, j]) == LAYOUT_RULES[layout](i // block, j // block, 8), (i, j)


def test_block_sparse_bigbird_is_local_plus_global_plus_one_fixed_random_block():
    m = build((1, 32, 8), heads=1, pattern=pat("block_sparse", block=4, pattern="bigbird"))
    mask = m.mask(32, "cpu")
    blocks = mask[::4, ::4]  # (8, 8) block layout
    local_global = torch.tensor([[abs(r - s) <= 1 or r == 0 or s == 0 for s in range(8)] for r in range(8)])
    assert (blocks | ~local_global).all()  # contains the local and global blocks
    assert ((blocks & ~local_global).sum(1) <= 1).all()  # plus at most one random block per row
    assert torch.equal(m.mask(32, "cpu"), mask)  # the random blocks are fixed, not resampled


def test_block_sparse_with_one_block_equals_full_attention():
    x = torch.randn(2, 6, 16)
    m = build((2, 6, 16), heads=2, pattern=pat("block_sparse", block=6, pattern="local"))
    torch.testing.assert_close(m(x), full_output((2, 6, 16), x))


@pytest.mark.catalog("S61")
@pytest.mark.parametrize(
    "name,rule",
    [
        ("axial_row", lambda r, c, r2, c2: r == r2),
        ("axial_col", lambda r, c, r2, c2: c == c2),
        ("axial", lambda r, c, r2, c2: r == r2 or c == c2),
    ],
)
def test_axial_masks_match_a_naive_loop(name, rule):
    h, w = 3, 4
    m = build((1, 8, h, w), heads=1, pattern=pat(name))
    mask = m.mask(h * w, "cpu")
    for i in range(h * w):
        for j in range(h * w):
            assert bool(mask[i, j]) == rule(i // w, i % w, j // w, j % w)


@pytest.mark.catalog("S61")
def test_axial_row_then_column_layers_reach_every_pixel():
    """Axial Transformer: one row layer then one column layer give a full receptive field."""
    row = build((1, 8, 3, 5), heads=1, pattern=pat("axial_row")).mask(15, "cpu").float()
    col = build((1, 8, 3, 5), heads=1, pattern=pat("axial_col")).mask(15, "cpu").float()
    assert (col @ row > 0).all()
    assert not (row > 0).all() and not (col > 0).all()


def test_strip_heads_split_into_horizontal_and_vertical_strips():
    h, w, width = 4, 6, 2
    m = build((1, 8, h, w), heads=4, pattern=pat("strip", width=width))
    mask = m.mask(h * w, "cpu")
    assert mask.shape == (4, h * w, h * w)
    for i in range(h * w):
        for j in range(h * w):
            same_row_strip = (i // w) // width == (j // w) // width
            same_col_strip = (i % w) // width == (j % w) // width
            assert mask[:2, i, j].tolist() == [same_row_strip] * 2
            assert mask[2:, i, j].tolist() == [same_col_strip] * 2


@pytest.mark.catalog("S72")
def test_halo_matches_a_naive_loop():
    h, w, b, halo = 6, 7, 3, 1
    m = build((1, 8, h, w), heads=1, pattern=pat("halo", block=b, halo=halo))
    mask = m.mask(h * w, "cpu")
    for i in range(h * w):
        r, c = divmod(i, w)
        top, left = (r // b) * b, (c // b) * b
        rows = range(top - halo, top + b + halo)
        cols = range(left - halo, left + b + halo)
        for j in range(h * w):
            r2, c2 = divmod(j, w)
            assert bool(mask[i, j]) == (r2 in rows and c2 in cols), (i, j)


@pytest.mark.catalog("S72")
def test_halo_queries_of_a_block_share_one_neighbourhood_of_side_block_plus_two_halo():
    m = build((1, 8, 8, 8), heads=1, pattern=pat("halo", block=2, halo=1))
    mask = m.mask(64, "cpu").view(8, 8, 64)
    inner = mask[2:4, 2:4].reshape(4, 64)  # the four queries of an interior block
    assert (inner == inner[0]).all() and inner[0].sum() == (2 + 2 * 1) ** 2


@pytest.mark.catalog("S72")
def test_halo_without_halo_is_block_local_and_a_wide_halo_is_full():
    x = torch.randn(2, 8, 4, 4)
    blocked = build((2, 8, 4, 4), heads=2, pattern=pat("halo", block=2, halo=0)).mask(16, "cpu")
    assert blocked.sum(1).tolist() == [4] * 16
    wide = build((2, 8, 4, 4), heads=2, pattern=pat("halo", block=2, halo=2))
    torch.testing.assert_close(wide(x), full_output((2, 8, 4, 4), x))


@pytest.mark.catalog("S77")
def test_circular_window_is_a_euclidean_disc():
    h, w, radius = 7, 7, 2
    m = build((1, 8, h, w), heads=1, pattern=pat("circular", radius=radius))
    mask = m.mask(h * w, "cpu")
    for i in range(h * w):
        for j in range(h * w):
            (r, c), (r2, c2) = divmod(i, w), divmod(j, w)
            assert bool(mask[i, j]) == (math.hypot(r - r2, c - c2) <= radius)
    assert mask[3 * w + 3].sum() == 13  # lattice points in a disc of radius 2


@pytest.mark.catalog("S77")
def test_circular_window_covering_the_image_equals_full_attention():
    x = torch.randn(2, 8, 3, 4)
    m = build((2, 8, 3, 4), heads=2, pattern=pat("circular", radius=5))
    torch.testing.assert_close(m(x), full_output((2, 8, 3, 4), x))


@pytest.mark.catalog("S52")
@pytest.mark.parametrize("cyclic", [False, True])
def test_shifted_sparse_matches_naive_groups_and_shifted_groups(cyclic):
    n, g, sinks = 16, 4, 1
    m = build((1, n, 16), heads=4, pattern=pat("shifted_sparse", group=g, sinks=sinks, cyclic=cyclic))
    mask = m.mask(n, "cpu")
    assert mask.shape == (4, n, n)

    def shifted_group(t):  # LongLoRA rolls tokens by -g/2; SinkLoRA undoes the wrap
        return ((t - g // 2) % n) // g if cyclic else (t + g // 2) // g

    for i in range(n):
        for j in range(n):
            sink = j < sinks
            assert mask[:2, i, j].tolist() == [sink or i // g == j // g] * 2
            assert mask[2:, i, j].tolist() == [sink or shifted_group(i) == shifted_group(j)] * 2
    assert bool(mask[3, 0, n - 1]) == cyclic  # the wrapped group joins the two ends


@pytest.mark.catalog("S52")
def test_shifted_sparse_with_a_group_covering_the_sequence_equals_full_attention():
    x = torch.randn(2, 8, 16)
    m = build((2, 8, 16), heads=2, pattern=pat("shifted_sparse", group=16))
    torch.testing.assert_close(m(x), full_output((2, 8, 16), x))


# ---- content-based patterns ----------------------------------------------


def landmark_keys(m, k, block):
    """Each block's landmark key, by hand: sum_j softmax_j(w_h . k_j) k_j over the block."""
    w = m.pattern.landmarks.w
    nb = -(-k.shape[-2] // block)
    keys = []
    for s in range(nb):
        kb = k[..., s * block:(s + 1) * block, :]  # (B, H, b, D)
        p = torch.softmax(torch.einsum("bhjd,hd->bhj", kb, w), -1)
        keys.append(torch.einsum("bhj,bhjd->bhd", p, kb))
    return torch.stack(keys, 2)  # (B, H, nb, D)


@pytest.mark.catalog("S41")
def test_landmark_retrieves_own_block_and_top_k_blocks_by_landmark_score_in_eval():
    n, block, top_k = 12, 3, 2
    m = build((2, n, 16), heads=2, pattern=pat("landmark", block=block, top_k=top_k)).eval()
    with torch.no_grad():
        m.pattern.landmarks.w.normal_()
    x = torch.randn(2, n, 16)
    q, k = qk(m, x)
    mask = m.mask(n, "cpu", q, k)
    with torch.no_grad():
        keys = landmark_keys(m, k, block)
    for b in range(2):
        for h in range(2):
            for i in range(n):
                others = [s for s in range(n // block) if s != i // block]
                best = sorted(others, key=lambda s: -float(q[b, h, i] @ keys[b, h, s]))[:top_k]
                expected = [j // block in best or j // block == i // block for j in range(n)]
                assert mask[b, h, i].tolist() == expected


@pytest.mark.catalog("S41")
@pytest.mark.parametrize("causal", [False, True])
def test_landmark_grouped_softmax_gates_each_far_block_by_its_landmark(causal):
    """The paper's grouped softmax: one softmax over own-block tokens and the other
    blocks' landmarks; a far token gets p(landmark_b) * softmax within its block."""
    n, block, d = 10, 3, 8
    m = build((1, n, 16), heads=2, causal=causal, pattern=pat("landmark", block=block)).train()
    with torch.no_grad():
        m.pattern.landmarks.w.normal_()
    x = torch.randn(1, n, 16)
    with torch.no_grad():
        q, k, v = m.layout.qkv(x)
        keys = landmark_keys(m, k, block)
        heads = torch.zeros(1, 2, n, d)
        for h in range(2):
            for i in range(n):
                own = [j for j in range(n) if j // block == i // block and (j <= i or not causal)]
                far = [s for s in range(-(-n // block)) if (s < i // block if causal else s != i // block)]
                logits = [q[0, h, i] @ k[0, h, j] / math.sqrt(d) for j in own]
                logits += [q[0, h, i] @ keys[0, h, s] / math.sqrt(d) for s in far]
                p = torch.softmax(torch.stack(logits), 0)
                out = sum(p[a] * v[0, h, j] for a, j in enumerate(own))
                for a, s in enumerate(far):
                    members = [j for j in range(n) if j // block == s]
                    inner = torch.softmax(torch.stack([q[0, h, i] @ k[0, h, j] for j in members]) / math.sqrt(d), 0)
                    out = out + p[len(own) + a] * sum(wj * v[0, h, j] for wj, j in zip(inner, members))
                heads[0, h, i] = out
        expected = m.layout.out(heads, x)
    torch.testing.assert_close(m(x), expected, atol=1e-5, rtol=1e-5)
    m(x).square().sum().backward()  # retrieval is learned: the landmark pooling gets a gradient
    assert m.pattern.landmarks.w.grad.abs().sum() > 0


@pytest.mark.catalog("S41")
def test_landmark_retrieving_every_block_in_eval_equals_the_trained_grouped_softmax():
    x = torch.randn(2, 10, 16)
    m = build((2, 10, 16), heads=2, pattern=pat("landmark", block=3, top_k=4))
    with torch.no_grad():
        m.pattern.landmarks.w.normal_()
        trained = m.train()(x)
        torch.testing.assert_close(m.eval()(x), trained)


@pytest.mark.catalog("S41")
def test_causal_landmark_retrieves_only_earlier_blocks():
    n, block = 16, 4
    m = build((2, n, 16), heads=2, causal=True, pattern=pat("landmark", block=block, top_k=1)).eval()
    q, k = qk(m, torch.randn(2, n, 16))
    retrieved = m.pattern.mask_for(q, k, None)
    i = torch.arange(n)
    own_block = (i[:, None] // block) == (i[None, :] // block)
    earlier = (i[None, :] // block) < (i[:, None] // block)
    assert ((retrieved & ~own_block) <= earlier).all()
    # every query past the first block retrieves exactly one earlier block
    assert ((retrieved & earlier).sum(-1)[..., block:] == block).all()


@pytest.mark.catalog("S60")
@pytest.mark.parametrize("by", ["attention", "norm"])
def test_token_select_keeps_the_top_tokens_per_head_and_only_they_attend_to_each_other(by):
    n, keep = 10, 3
    m = build((2, n, 16), heads=2, pattern=pat("token_select", keep=keep, by=by))
    q, k = qk(m, torch.randn(2, n, 16))
    mask = m.mask(n, "cpu", q, k)
    for b in range(2):
        for h in range(2):
            if by == "norm":
                score = [float(k[b, h, j].norm()) for j in range(n)]
            else:  # softmax mass each key receives
                w = torch.softmax(q[b, h] @ k[b, h].T / math.sqrt(8), -1)
                score = [float(w[:, j].sum()) for j in range(n)]
            kept = sorted(range(n), key=lambda j: -score[j])[:keep]
            for i in range(n):  # a kept query sees the kept keys; another only itself (its output is zeroed)
                assert mask[b, h, i].tolist() == [(i in kept and j in kept) or j == i for j in range(n)]


@pytest.mark.catalog("S60")
def test_token_select_keeping_every_token_equals_full_attention():
    x = torch.randn(2, 6, 16)
    m = build((2, 6, 16), heads=2, pattern=pat("token_select", keep=6))
    torch.testing.assert_close(m(x), full_output((2, 6, 16), x))


def _exact_predictor(m, n, head_dim):
    """Make the predictor exact: identity channel maps, n_down = n identity down/up
    projections, so A~ = softmax(q k^T / sqrt(d)) -- the dense attention map."""
    p = m.pattern.predictor
    with torch.no_grad():
        for lin in (p.proj_q, p.proj_k):
            lin.weight.copy_(torch.eye(head_dim))
            lin.bias.zero_()
        p.down.copy_(torch.eye(n))
        p.up.copy_(torch.eye(n))
    p.coef_top = n  # keep every coefficient at inference too


@pytest.mark.catalog("S24")
def test_sparsifiner_with_an_exact_predictor_selects_the_true_top_k_keys():
    """With full token rank the predictor is the dense attention map, so the
    selection must be exactly the top_k keys of q . k, found here by sorting."""
    n, top_k, d = 9, 3, 8
    m = build((2, n, 16), heads=2, pattern=pat("sparsifiner", top_k=top_k, rank=n, reduce=1)).eval()
    _exact_predictor(m, n, d)
    q, k = qk(m, torch.randn(2, n, 16))
    mask = m.mask(n, "cpu", q, k)
    logits = q @ k.transpose(-1, -2)
    for b in range(2):
        for h in range(2):
            for i in range(n):
                best = sorted(range(n), key=lambda j: -float(logits[b, h, i, j]))[:top_k]
                assert mask[b, h, i].tolist() == [j in best for j in range(n)]


@pytest.mark.catalog("S24")
@pytest.mark.parametrize("causal", [False, True])
def test_sparsifiner_gathered_attention_equals_dense_softmax_over_the_selected_keys(causal):
    """The op's sparse path (gather the kept keys per query) gives exactly the
    dense reference: softmax(q k^T / sqrt(d)) with every unselected key masked."""
    x = torch.randn(2, 12, 16)
    m = build((2, 12, 16), heads=2, pattern=pat("sparsifiner", top_k=4, rank=4), causal=causal).eval()
    q, k = qk(m, x)
    with torch.no_grad():
        _, _, v = m.layout.qkv(x)
        v = m.layout.expand(v)
        mask = m.mask(12, "cpu", q, k)
        assert int(mask.sum(-1).max()) == 4  # the budget: top_k keys per query
        logits = (q @ k.transpose(-1, -2) / math.sqrt(8)).masked_fill(~mask, float("-inf"))
        ref = m.layout.out(logits.softmax(-1) @ v, x)
        torch.testing.assert_close(m(x), ref)


@pytest.mark.catalog("S24")
def test_sparsifiner_core_flops_grow_linearly_in_n_at_fixed_top_k():
    """Sparse compute, not a dense masked matrix: the attention core (q . k at the
    kept keys, weights . v) counts 2 * B * H * N * top_k * (d + d) FLOPs, so
    doubling N doubles it (a dense masked core would quadruple)."""
    from torch.utils.flop_counter import FlopCounterMode

    from archgram.ops.attention.gathered import gathered_attend
    from archgram.ops.attention.scores import Softmax

    b, h, d, top_k = 1, 2, 8, 4
    counts = []
    for n in (32, 64, 128):
        q, k, v = (torch.randn(b, h, n, d) for _ in range(3))
        idx = torch.randint(0, n, (b, h, n, top_k))
        with FlopCounterMode(display=False) as counter:
            gathered_attend(Softmax(h), q, k, v, idx, torch.ones_like(idx, dtype=torch.bool), None, 0.5)
        counts.append(counter.get_total_flops())
        assert counts[-1] == 2 * b * h * n * top_k * (d + d)
    assert counts[1] == 2 * counts[0] and counts[2] == 2 * counts[1]
    # and the op runs that path: its FLOPs grow with top_k by exactly the gathered core
    x = torch.randn(1, 32, 16)
    totals = {}
    for kk in (4, 8):
        m = build((1, 32, 16), heads=2, pattern=pat("sparsifiner", top_k=kk, rank=4)).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            m(x)
        totals[kk] = counter.get_total_flops()
    assert totals[8] - totals[4] == 2 * 1 * 2 * 32 * 4 * (8 + 8)


def _sequences(g, batch=16, n=16, dim=16):
    """Tokens with a fixed positional part and instance-specific content, so the
    attention map is partly shared and partly instance-dependent."""
    pos = torch.randn(n, dim, generator=torch.Generator().manual_seed(1))
    return pos + 0.5 * torch.randn(batch, n, dim, generator=g)


def _recall(m, x, top_k):
    """Fraction of the exact top_k keys of q . k that the predictor's selection keeps."""
    with torch.no_grad():
        q, k = qk(m, x)
        chosen = m.mask(x.shape[1], "cpu", q, k)
        exact = torch.zeros_like(chosen).scatter(-1, (q @ k.transpose(-1, -2)).topk(top_k, -1).indices, True)
        return float((chosen & exact).sum() / exact.sum())


@pytest.mark.catalog("S24")
def test_sparsifiner_predictor_learns_the_attention_map_by_distillation():
    """The paper's training claim: minimising the distillation loss makes the
    low-rank predictor recover the attention connectivity. Only the predictor
    trains (attention weights frozen): its loss must fall below 30% and
    its top-k recall of the exact q . k keys must rise from near chance (4/16)
    to well above it (half of each map is instance-specific noise, so not 1)."""
    n, top_k = 16, 4
    m = build((16, n, 16), heads=2, pattern=pat("sparsifiner", top_k=top_k, rank=8))
    for p in m.layout.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(m.pattern_module.parameters(), lr=0.03)
    g = torch.Generator().manual_seed(0)
    held_out = _sequences(torch.Generator().manual_seed(99))
    before = _recall(m.eval(), held_out, top_k)
    m.train()
    losses = []
    for _ in range(150):
        m(_sequences(g))
        loss = m.pattern_module.aux_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    after = _recall(m.eval(), held_out, top_k)
    assert sum(losses[-10:]) / 10 < 0.3 * sum(losses[:10]) / 10  # measured: 0.026 -> 0.004
    assert before < 0.35 and after > 0.6, (before, after)  # measured: 0.27 -> 0.70
    m.pattern_module.aux_loss = None
    with torch.no_grad():
        m(held_out)
    assert m.pattern_module.aux_loss is None  # no distillation work at inference


def routing_reference(m, x, causal=False):
    """Routing attention by hand: each centroid owns its w = ceil(N / C) nearest queries
    and w nearest keys (cosine); a cluster's queries attend its keys plus their own
    (softmax); a query in several clusters averages them, one in none reads itself.
    Returns (output, clusters per query) for every batch and head."""
    q, k, v = (t.detach() for t in m.layout.qkv(x))
    b_, h_, n, d = q.shape
    c = m.pattern.clusters
    w = -(-n // c)
    mu = m.pattern_module.centroids  # (H, C, D) on the unit sphere
    heads, memberships = torch.zeros_like(v), []
    for b in range(b_):
        for h in range(h_):
            cos_q, cos_k = (torch.nn.functional.normalize(t[b, h], dim=-1) @ mu[h].T for t in (q, k))
            own_q = [set(cos_q[:, cc].topk(w).indices.tolist()) for cc in range(c)]
            own_k = [set(cos_k[:, cc].topk(w).indices.tolist()) for cc in range(c)]
            assert all(len(o) == w for o in own_q + own_k)  # balanced: w queries and w keys each
            for i in range(n):
                mine = [cc for cc in range(c) if i in own_q[cc]]
                memberships.append(len(mine))
                outs = []
                for cc in mine:
                    keys = sorted(j for j in own_k[cc] | {i} if j <= i or not causal)
                    p = torch.softmax(torch.stack([q[b, h, i] @ k[b, h, j] for j in keys]) * m.scale, 0)
                    outs.append(sum(pj * v[b, h, j] for pj, j in zip(p, keys)))
                heads[b, h, i] = torch.stack(outs).mean(0) if outs else v[b, h, i]
    return m.layout.out(heads, x), memberships


@pytest.mark.catalog("S78")
@pytest.mark.parametrize("causal", [False, True])
def test_routing_attends_within_balanced_query_and_key_clusters(causal):
    """The paper's routing: top-w queries and top-w keys per centroid, attention within
    each cluster; queries in several clusters or in none are both exercised."""
    x = torch.randn(2, 12, 16)
    m = build((2, 12, 16), heads=2, causal=causal, pattern=pat("routing", clusters=4)).eval()
    want, memberships = routing_reference(m, x, causal)
    assert 0 in memberships and max(memberships) >= 2, memberships
    assert m.factorised
    with torch.no_grad():
        torch.testing.assert_close(m(x), want, atol=1e-5, rtol=1e-5)
        q, k, v = m.layout.qkv(x)  # the dense weights analysis reads are the ones applied
        torch.testing.assert_close(m.pattern.dense_weights(q, k, m.scale) @ v, m.pattern.attend(q, k, v, m.scale))


@pytest.mark.catalog("S78")
def test_routing_core_grows_as_n_to_the_1_5_with_sqrt_n_clusters():
    """The paper's complexity: with sqrt(N) balanced clusters of w = sqrt(N) queries
    and keys the core is C w^2 = N^1.5 products (the own-key column is one dot
    product per query), so 4x the tokens multiplies it by 8, where full
    attention's grows 16x."""
    flops = []
    for n, clusters in ((64, 8), (256, 16)):
        shape = (1, n, 16)
        m = build(shape, heads=2, pattern=pat("routing", clusters=clusters)).eval()
        flops.append(_core_flops_seq(m, torch.randn(shape)))
    assert flops[1] / flops[0] == pytest.approx(8, rel=0.05), flops


def _core_flops_seq(m, x) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as total:
        m(x)
    with torch.no_grad(), FlopCounterMode(display=False) as projections:
        q, _, _ = m.layout.qkv(x)
        m.layout.out(q, x)
    return total.get_total_flops() - projections.get_total_flops()


@pytest.mark.catalog("S78")
def test_routing_with_one_cluster_equals_full_attention():
    x = torch.randn(2, 6, 16)
    m = build((2, 6, 16), heads=2, pattern=pat("routing", clusters=1))
    torch.testing.assert_close(m(x), full_output((2, 6, 16), x))


@pytest.mark.catalog("S78")
def test_routing_centroids_move_toward_their_members_by_ema_only_in_training():
    m = build((1, 6, 8), heads=1, pattern=pat("routing", clusters=1, decay=0.5))
    x = torch.randn(1, 6, 8)
    q, k = qk(m, x)
    before = m.pattern_module.centroids.clone()
    m.eval()
    m(x)
    assert torch.equal(m.pattern_module.centroids, before)
    m.train()
    m(x)
    units = torch.cat((q, k), 2)[0, 0]
    units = units / units.norm(dim=-1, keepdim=True)
    expected = 0.5 * before[0, 0] + 0.5 * units.mean(0)
    torch.testing.assert_close(m.pattern_module.centroids[0, 0], expected / expected.norm())


def combiner_reference(m, x, block, causal=False):
    """Combiner-Fixed by hand: each query attends to the keys of its own block and
    to one summary (mean key, mean value) per other block, in one softmax."""
    q, k, v = m.layout.qkv(x)
    k, v = m.layout.expand(k), m.layout.expand(v)
    b, h, n, d = q.shape
    out = torch.zeros_like(q)
    for i in range(n):
        r = i // block
        keys, values = [], []
        for s in range(0, n, block):
            span = slice(s, min(s + block, n))
            if s // block == r:
                stop = i + 1 if causal else span.stop
                keys.append(k[:, :, s:stop])
                values.append(v[:, :, s:stop])
            elif not causal or s // block < r:
                keys.append(k[:, :, span].mean(2, keepdim=True))
                values.append(v[:, :, span].mean(2, keepdim=True))
        keys, values = torch.cat(keys, 2), torch.cat(values, 2)
        w = torch.softmax(q[:, :, i : i + 1] @ keys.transpose(-1, -2) / math.sqrt(d), -1)
        out[:, :, i : i + 1] = w @ values
    return m.layout.out(out)


@pytest.mark.catalog("S27")
@pytest.mark.parametrize("causal", [False, True])
def test_combiner_equals_attention_over_explicit_block_summaries(causal):
    x = torch.randn(2, 11, 16)  # blocks of 3, the last one partial
    m = build((2, 11, 16), heads=2, causal=causal, pattern=pat("combiner", block=3))
    torch.testing.assert_close(m(x), combiner_reference(m, x, 3, causal), atol=1e-5, rtol=1e-4)


@pytest.mark.catalog("S27")
@pytest.mark.parametrize("causal", [False, True])
def test_combiner_learned_local_expectation_weights_each_block_summary(causal):
    """With a trained q(j | block) = softmax_j(w . k_j), a far block's summary is the
    q-weighted mean of its keys and values; the compact path (softmax), the dense
    exact-bias path (used with other scores/positions) and a by-hand loop agree."""
    n, blk = 11, 3
    x = torch.randn(2, n, 16)
    m = build((2, n, 16), heads=2, causal=causal, pattern=pat("combiner", block=blk))
    with torch.no_grad():
        m.pattern_module.w.copy_(torch.randn(2, 8))
    assert m.factorised
    q, k, _ = m.layout.qkv(x)
    k, v = m.layout.expand(k), m.layout.expand(m.layout.qkv(x)[2])
    with torch.no_grad():
        want = torch.zeros_like(q)
        for i in range(n):
            keys, values = [], []
            for s in range(0, n, blk):
                span = slice(s, min(s + blk, n))
                if s // blk == i // blk:
                    stop = i + 1 if causal else span.stop
                    keys.append(k[:, :, s:stop])
                    values.append(v[:, :, s:stop])
                elif not causal or s // blk < i // blk:
                    p = torch.softmax(torch.einsum("bhnd,hd->bhn", k[:, :, span], m.pattern_module.w), -1)[..., None]
                    keys.append((p * k[:, :, span]).sum(2, keepdim=True))
                    values.append((p * v[:, :, span]).sum(2, keepdim=True))
            keys, values = torch.cat(keys, 2), torch.cat(values, 2)
            want[:, :, i : i + 1] = torch.softmax(q[:, :, i : i + 1] @ keys.transpose(-1, -2) / math.sqrt(8), -1) @ values
        torch.testing.assert_close(m(x), m.layout.out(want, x), atol=1e-5, rtol=1e-4)
        # the dense weights analysis reads are the ones applied
        torch.testing.assert_close(m.pattern.dense_weights(q, k, m.scale) @ v, m.pattern.attend(q, k, v, m.scale))
        m.factorised = False  # the dense form: additive bias on the n x n logits
        torch.testing.assert_close(m(x), m.layout.out(want, x), atol=1e-5, rtol=1e-4)


@pytest.mark.catalog("S27")
def test_combiner_cost_grows_as_n_sqrt_n_not_n_squared():
    """Combiner's claim: full attention support at sub-quadratic cost. With blocks
    of sqrt(N) the compact contraction's FLOPs grow 8x when N grows 4x (N^1.5),
    where dense attention grows 16x; and the op runs that compact path."""
    from torch.utils.flop_counter import FlopCounterMode

    def core(n, name, **params):
        m = build((1, n, 16), heads=2, pattern=pat(name, **params)).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            m(torch.randn(1, n, 16))
        return counter.get_total_flops() - 2 * 4 * (16 * 16) * n  # minus the q, k, v, o projections

    sparse = [core(n, "combiner", block=int(math.isqrt(n))) for n in (16, 64, 256)]
    dense = [core(n, "full") for n in (16, 64, 256)]
    assert dense[2] == 16 * dense[1]
    assert 7.0 < sparse[2] / sparse[1] < 9.0 and 7.0 < sparse[1] / sparse[0] < 9.0
    assert sparse[2] < dense[2] / 6


@pytest.mark.catalog("S27")
def test_combiner_with_one_block_equals_full_attention():
    x = torch.randn(2, 6, 16)
    m = build((2, 6, 16), heads=2, pattern=pat("combiner", block=6))
    torch.testing.assert_close(m(x), full_output((2, 6, 16), x))


# ---- every pattern ---------------------------------------------------------

EVERY_PATTERN = [
    pat("window", size=3, dilation=2),
    pat("block_sparse", block=4, pattern="bigbird"),
    pat("block_sparse", block=3, pattern="strided"),
    pat("axial"),
    pat("axial_row"),
    pat("axial_col"),
    pat("strip", width=2),
    pat("halo", block=2, halo=1),
    pat("circular", radius=1.5),
    pat("shifted_sparse", group=4, sinks=1),
    pat("landmark", block=4, top_k=1),
    pat("token_select", keep=2),
    pat("sparsifiner", top_k=2, rank=4),
    pat("routing", clusters=4),
    pat("combiner", block=4),
]


@pytest.mark.catalog("S24", "S27", "S41", "S52", "S60", "S61", "S72", "S77", "S78")
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("pattern", EVERY_PATTERN, ids=lambda p: p["name"])
def test_every_query_keeps_a_visible_key_and_causal_is_anded(pattern, causal):
    shape = (2, 16, 4, 4)
    m = build(shape, heads=4, pattern=pattern, causal=causal).eval()  # routing: fixed centroids
    x = torch.randn(*shape, requires_grad=True)
    q, k = qk(m, x)
    mask = m.mask(16, "cpu", q, k)
    if mask is not None:
        assert mask.any(-1).all()  # no empty row, so no NaN softmax
        if causal:
            assert not (mask & ~torch.ones(16, 16, dtype=torch.bool).tril()).any()
            uncausal = m.pattern.mask_for(q, k, m.grid) if m.pattern.data_dependent else m.pattern.mask(16, m.grid, "cpu")
            if uncausal is not None:  # the op's mask is exactly the pattern AND causal
                assert torch.equal(mask, uncausal & torch.ones(16, 16, dtype=torch.bool).tril())
    y = m.train()(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.catalog("S61", "S72", "S77")
@pytest.mark.parametrize("name", ["axial", "axial_row", "axial_col", "strip", "halo", "circular"])
def test_2d_patterns_are_refused_on_sequences(name):
    params = {"strip": {"width": 2}, "halo": {"block": 2}, "circular": {"radius": 2}}.get(name, {})
    with pytest.raises(ShapeError, match="2D"):
        SPEC.cls.output_shape((2, 10, 16), **SPEC.bind({"pattern": pat(name, **params)}))


@pytest.mark.catalog("S41", "S52", "S60", "S78")
@pytest.mark.parametrize(
    "pattern,reason",
    [
        (pat("window", size=3, dilation=0), "dilation"),
        (pat("block_sparse", block=4, pattern="diagonal"), "unknown block_sparse layout .* known: bigbird, global, local"),
        (pat("shifted_sparse", group=1), "group"),
        (pat("landmark", block=0), "block"),
        (pat("routing", clusters=2, decay=1.5), "decay"),
        (pat("token_select", keep=2, by="random"), "attention or norm"),
    ],
)
def test_bad_pattern_parameters_are_refused_by_the_shape_rule(pattern, reason):
    with pytest.raises(ShapeError, match=reason):
        SPEC.cls.output_shape((2, 10, 16), **SPEC.bind({"pattern": pattern}))


# ---- gathered 2D neighbourhoods (S61 axial, S72 halo, S77 circular) -----------------
GRID_PATTERNS = [pat("axial_row"), pat("axial_col"), pat("axial"), pat("halo", block=2, halo=1),
                 pat("circular", radius=1.5)]
GRID_IDS = ["axial_row", "axial_col", "axial", "halo", "circular"]


def _dense_masked(m, x, causal=False):
    """Softmax attention over the pattern's dense mask (the reference the gathered path must equal)."""
    b, c, h, w = x.shape
    t = x.flatten(2).transpose(1, 2)
    q, k, v = m.layout.qkv(t)
    mask = m.pattern.mask(h * w, (h, w), x.device)
    if causal:
        mask = mask & torch.ones_like(mask).tril()
    logits = (q @ k.transpose(-1, -2) * m.scale).masked_fill(~mask, float("-inf"))
    y = m.layout.out(torch.softmax(logits, -1) @ v, t)
    return y.transpose(1, 2).reshape(b, c, h, w)


@pytest.mark.catalog("S61", "S72", "S77")
@pytest.mark.parametrize("pattern", GRID_PATTERNS, ids=GRID_IDS)
@pytest.mark.parametrize("causal", [False, True])
def test_grid_patterns_gather_their_keys_and_equal_dense_masked_attention(pattern, causal):
    shape = (2, 8, 5, 6)
    m = build(shape, heads=2, pattern=pattern, causal=causal)
    assert m.gathers  # each query reads its own keys; no N x N logits
    x = torch.randn(shape)
    torch.testing.assert_close(m(x), _dense_masked(m, x, causal), atol=1e-5, rtol=1e-5)


def _core_flops(m, x) -> int:
    """FLOPs of the op's forward minus its projections: the attention core."""
    from torch.utils.flop_counter import FlopCounterMode

    t = x.flatten(2).transpose(1, 2)
    with torch.no_grad(), FlopCounterMode(display=False) as total:
        m(x)
    with torch.no_grad(), FlopCounterMode(display=False) as projections:
        q, _, _ = m.layout.qkv(t)
        m.layout.out(q, t)
    return total.get_total_flops() - projections.get_total_flops()


@pytest.mark.catalog("S61", "S72", "S77")
def test_local_and_axial_attention_cores_grow_slower_than_full_attention():
    """The papers' cost claims, measured: growing the image 16x16 -> 32x32 (4x the
    pixels) would multiply full attention's core FLOPs by 16 (N^2); it multiplies
    axial attention's by 8 (N * sqrt(N): a query reads its row), and HaloNet's
    blocked local attention's and CLEAR's circular window's by 4 (linear: a
    fixed neighbourhood)."""
    ratio = {}
    for name, pattern in (("axial_row", pat("axial_row")), ("axial", pat("axial")),
                          ("halo", pat("halo", block=4, halo=1)), ("circular", pat("circular", radius=2))):
        flops = []
        for side in (16, 32):
            shape = (1, 16, side, side)
            flops.append(_core_flops(build(shape, heads=2, pattern=pattern), torch.randn(shape)))
        ratio[name] = flops[1] / flops[0]
    assert ratio["axial_row"] == pytest.approx(8, rel=0.05) and ratio["axial"] < 8.6, ratio
    assert ratio["halo"] == pytest.approx(4, rel=0.05) and ratio["circular"] == pytest.approx(4, rel=0.05), ratio
