"""Reversed attention + dependency trees (S47), visual attention redistribution
(S71) and hierarchical self-attention (S73) against explicit formulas and the
properties their papers state."""
from __future__ import annotations

import math

import pytest
import torch

from archgram.errors import ShapeError
from archgram.ops.attention.hierarchical import hierarchical_attention
from archgram.ops.attention.reversed import dependency_tree, reversed_weights
from archgram.ops.attention.sinks import activation_sinks, attention_sinks, redistribute
from archgram.ops.registry import get_op

ATTN = get_op("attention")
HSA = get_op("hierarchical_attention")


def build(spec, shape, **args):
    torch.manual_seed(0)
    return spec.build(shape, spec.bind(args))


def refused(spec, shape, **args) -> bool:
    try:
        spec.cls.output_shape(shape, **spec.bind(args))
    except ShapeError:
        return True
    return False


def grads_finite(m, x) -> bool:
    x = x.clone().requires_grad_(True)
    m(x).square().sum().backward()
    grads = [x.grad] + [p.grad for p in m.parameters() if p.grad is not None]
    return all(torch.isfinite(g).all() for g in grads)


# ------------------------------------------------------------------ S47
@pytest.mark.catalog("S47")
def test_reversed_weights_are_the_transposed_child_softmax_times_the_gate():
    torch.manual_seed(1)
    logits, gate = torch.randn(2, 3, 5, 5), torch.rand(2, 3, 5)
    mask = torch.rand(5, 5) > 0.3
    mask |= torch.eye(5, dtype=torch.bool)
    r = reversed_weights(logits, mask, gate)
    expected = torch.zeros_like(r)
    for i in range(5):  # child i spreads gate_i over the parents j it may see
        e = torch.where(mask[i], logits[..., i, :].exp(), torch.zeros(()))
        for j in range(5):
            expected[..., j, i] = gate[..., i] * e[..., j] / e.sum(-1)
    torch.testing.assert_close(r, expected)
    torch.testing.assert_close(r.sum(-2), gate)  # columns (children) carry their gate, rows do not sum to 1


@pytest.mark.catalog("S47")
def test_reversed_score_op_sends_children_values_to_parents():
    """Parent j receives sum_i a_ij g_i v_i, a the child's softmax over parents and
    g = p * m the head selector times the message controller, both from the layer
    input x (not from the queries: they vary with W_q = 0)."""
    m = build(ATTN, (2, 6, 16), heads=2, score={"name": "reversed", "temperature": 0.5})
    gate = m.value_gate
    x = torch.randn(2, 6, 16)
    p0, m0 = gate.parts(x)
    torch.testing.assert_close(p0, torch.full_like(p0, 0.5))  # uniform heads and m = 1/2 at init
    torch.testing.assert_close(m0, torch.full_like(m0, 0.5))
    with torch.no_grad():
        for t in (gate.selector.weight, gate.controller[2].weight):
            t.normal_()
        m.layout.q.weight.zero_()
        m.layout.q.bias.normal_()
    q, k, v = m.layout.qkv(x)
    a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), -1)  # (B, H, child, parent)
    p = torch.softmax((x @ gate.selector.weight.T + gate.selector.bias) / 0.5, -1).transpose(1, 2)  # (B, H, N)
    ctrl = torch.sigmoid(gate.controller(x))[..., 0]  # (B, N)
    assert p.std() > 0 and ctrl.std() > 0
    out = torch.einsum("bhij,bhi,bhid->bhjd", a, p * ctrl[:, None], v)
    torch.testing.assert_close(m(x), m.layout.out(out, x))
    assert grads_finite(m, x)


@pytest.mark.catalog("S47")
def test_reversed_refuses_causal_masks():
    assert refused(ATTN, (1, 6, 16), heads=2, score={"name": "reversed"}, causal=True)
    assert refused(ATTN, (1, 6, 16), heads=2, score={"name": "reversed"}, pattern={"name": "causal"})
    assert refused(ATTN, (1, 6, 16), heads=2, score={"name": "reversed", "temperature": 0})
    assert not refused(ATTN, (1, 6, 16), heads=2, score={"name": "reversed"}, pattern={"name": "window", "_0": 3})


@pytest.mark.catalog("S47")
def test_dependency_tree_reads_parents_and_roots_from_a_hand_made_matrix():
    # 0 is the root (chooses itself); 1, 2 -> 0; 3 -> 1; 4 -> 3.
    w = torch.tensor([
        [0.7, 0.1, 0.1, 0.05, 0.05],
        [0.6, 0.2, 0.1, 0.05, 0.05],
        [0.5, 0.1, 0.2, 0.1, 0.1],
        [0.1, 0.6, 0.1, 0.1, 0.1],
        [0.1, 0.1, 0.1, 0.6, 0.1],
    ])
    tree = dependency_tree(w)
    assert tree.parent.tolist() == [-1, 0, 0, 1, 3]
    assert tree.root.tolist() == [True, False, False, False, False]
    # batched, and a 2-cycle without a self-loop (0 <-> 1) is broken at the most-chosen member
    cyc = torch.tensor([
        [0.1, 0.8, 0.1],
        [0.7, 0.2, 0.1],
        [0.1, 0.8, 0.1],
    ])
    both = dependency_tree(torch.stack([w[:3, :3] / w[:3, :3].sum(-1, keepdim=True), cyc]))
    assert both.parent.tolist() == [[-1, 0, 0], [1, -1, 1]]
    assert both.root.sum(-1).tolist() == [1, 1]


# ------------------------------------------------------------------ S71
def _with_sink(b=2, h=2, n=6, sink=0, boost=3.0):
    torch.manual_seed(2)
    logits = torch.randn(b, h, n, n) * 0.3
    logits[..., sink] += boost
    return torch.softmax(logits, -1)


@pytest.mark.catalog("S71")
def test_redistribution_keeps_rows_normalised_and_moves_the_stated_ratio():
    w = _with_sink()
    sinks = attention_sinks(w, None, threshold=2.0)
    assert sinks[:, 0].all() and not sinks[:, 1:].any()
    new = redistribute(w, sinks, ratio=0.4, rho=1.0)
    torch.testing.assert_close(new.sum(-1), torch.ones(2, 2, 6))
    torch.testing.assert_close(new[..., 0], 0.6 * w[..., 0])  # 40% of the sink weight left
    # ... and went to the others in proportion to their weights
    rest, new_rest = w[..., 1:], new[..., 1:]
    torch.testing.assert_close(new_rest / new_rest.sum(-1, keepdim=True), rest / rest.sum(-1, keepdim=True))


@pytest.mark.catalog("S71")
def test_rows_dominated_by_sinks_are_left_alone():
    w = _with_sink(boost=5.0)  # sink share > 0.5 in every row
    sinks = attention_sinks(w, None, threshold=2.0)
    assert (w[..., 0] > 0.5).all()
    torch.testing.assert_close(redistribute(w, sinks, ratio=0.4, rho=0.5), w)


@pytest.mark.catalog("S71")
def test_no_sink_means_no_change_and_masks_hold():
    torch.manual_seed(3)
    w = torch.softmax(torch.randn(2, 2, 6, 6) * 0.1, -1)
    assert not attention_sinks(w, None, threshold=2.0).any()
    m = build(ATTN, (2, 6, 16), heads=2, score={"name": "sink_redistribute", "threshold": 50.0})
    plain = build(ATTN, (2, 6, 16), heads=2)
    x = torch.randn(2, 6, 16)
    torch.testing.assert_close(m(x), plain(x))  # nothing can exceed 50x its share of 6 keys
    # causal: early keys are not sinks merely for being visible to every query
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    uniform = causal.float() / causal.float().sum(-1, keepdim=True)
    assert not attention_sinks(uniform.expand(1, 1, 6, 6), causal, threshold=1.01).any()
    w = torch.softmax(torch.randn(1, 2, 6, 6).masked_fill(~causal, -1e9), -1)
    new = redistribute(w, torch.tensor([[True, False, False, False, False, False]]), 0.5, rho=1.0)
    assert (new.masked_select(~causal.expand_as(new)) == 0).all()
    torch.testing.assert_close(new.sum(-1), torch.ones(1, 2, 6))


@pytest.mark.catalog("S71")
def test_sink_redistribute_score_in_the_op_and_activation_detection():
    m = build(ATTN, (2, 8, 32), heads=2, score={"name": "sink_redistribute", "threshold": 1.5, "rho": 1.0})
    x = torch.randn(2, 8, 32)
    x[:, 0] *= 8  # a loud token
    q, k, v = m.layout.qkv(x)
    w = torch.softmax(q @ k.transpose(-1, -2) / 4.0, -1)
    assert attention_sinks(w, None, 1.5)[:, 0].all()  # the loud token is caught, so the check below bites
    expected = redistribute(w, attention_sinks(w, None, 1.5), 0.4, 1.0)
    torch.testing.assert_close(m(x), m.layout.out(expected @ v, x))
    assert grads_finite(m, x)
    # the paper's massive-activation test: one dimension carrying most of the key's norm
    k = torch.randn(1, 2, 5, 16) * 0.1
    k[0, 1, 3, 7] = 10.0
    assert activation_sinks(k, threshold=3.0).tolist() == [[False, False, False, True, False]]
    act = build(ATTN, (2, 8, 32), heads=2, score={"name": "sink_redistribute", "by": "activation", "threshold": 3.0})
    assert torch.isfinite(act(x)).all()
    # phi <= sqrt(head_dim) = 4: a threshold of 4 could never fire
    assert refused(ATTN, (2, 8, 32), heads=2, score={"name": "sink_redistribute", "by": "activation", "threshold": 4.0})
    assert refused(ATTN, (2, 8, 32), heads=2, score={"name": "sink_redistribute", "ratio": 1.5})


# ------------------------------------------------------------------ S73
def _explicit_hsa(q, k, v, grid, levels, branch, scale):
    """N x N energies from the definition: the pair's separating siblings' mean energy."""
    b, h, n, d = q.shape
    gh, gw = grid
    fh = branch if gh > 1 else 1
    rows, cols = torch.arange(n) // gw, torch.arange(n) % gw

    def node(level):  # node id of each token at a level (0: the token itself)
        return (rows // fh**level) * n + cols // branch**level

    def pooled(t, level):  # per token, the mean of t over its level-`level` node
        ids = node(level)
        out = torch.zeros_like(t)
        for i in range(n):
            out[..., i, :] = t[..., ids == ids[i], :].mean(-2)
        return out

    qs, ks = [pooled(q, lv) for lv in range(levels)], [pooled(k, lv) for lv in range(levels)]
    energy = torch.empty(b, h, n, n)
    for i in range(n):
        for j in range(n):
            # lowest level whose parent nodes coincide (the root, level `levels`, always does)
            level = next(lv for lv in range(levels) if lv + 1 == levels or node(lv + 1)[i] == node(lv + 1)[j])
            qa, kb = qs[level][..., i, :], ks[level][..., j, :]
            energy[..., i, j] = (qa * kb).sum(-1) * scale
    return torch.softmax(energy, -1) @ v


@pytest.mark.catalog("S73")
@pytest.mark.parametrize("grid,levels,branch", [((1, 8), 2, 2), ((1, 8), 3, 2), ((1, 9), 2, 3), ((4, 4), 2, 2), ((4, 4), 3, 2)])
def test_hierarchical_attention_matches_the_explicit_tree_energies(grid, levels, branch):
    torch.manual_seed(4)
    n = grid[0] * grid[1]
    q, k, v = (torch.randn(1, 2, n, 4) for _ in range(3))
    got = hierarchical_attention(q, k, v, grid, levels, branch, 0.5)
    torch.testing.assert_close(got, _explicit_hsa(q, k, v, grid, levels, branch, 0.5), atol=1e-5, rtol=1e-5)


@pytest.mark.catalog("S73")
def test_one_level_is_standard_attention_for_sequences_and_images():
    torch.manual_seed(5)
    for grid in ((1, 7), (3, 5)):
        n = grid[0] * grid[1]
        q, k, v = (torch.randn(2, 2, n, 4) for _ in range(3))
        expected = torch.softmax(q @ k.transpose(-1, -2) * 0.5, -1) @ v
        torch.testing.assert_close(hierarchical_attention(q, k, v, grid, 1, 2, 0.5), expected)


@pytest.mark.catalog("S73")
def test_hierarchical_attention_op_shapes_refusals_and_gradients():
    seq = build(HSA, (2, 8, 16), heads=2, levels=3, branch=2)
    img = build(HSA, (2, 8, 4, 4), heads=2, levels=2, branch=2)
    for m, x in ((seq, torch.randn(2, 8, 16)), (img, torch.randn(2, 8, 4, 4))):
        assert m(x).shape == x.shape and grads_finite(m, x)
        assert sum(p.numel() for p in m.parameters()) == HSA.cls.count_params(tuple(x.shape))
    x = torch.randn(2, 8, 16)
    q, k, v = seq.project(x)
    expected = _explicit_hsa(q, k, v, (1, 8), 3, 2, 1 / math.sqrt(8))
    torch.testing.assert_close(seq(x), seq.out(expected.transpose(1, 2).reshape(2, 8, 16)), atol=1e-5, rtol=1e-5)
    assert refused(HSA, (1, 6, 16), levels=3, branch=2)  # 4-token blocks do not tile 6 tokens
    assert refused(HSA, (1, 8, 6, 4), levels=2, branch=2, heads=2) is False
    assert refused(HSA, (1, 8, 6, 4), levels=3, branch=2, heads=2)  # 4 x 4 blocks on a 6 x 4 grid
    assert refused(HSA, (1, 8, 15), heads=4)  # 15 channels, 4 heads
    assert refused(HSA, (1, 8), heads=1)  # a vector has no tokens


@pytest.mark.catalog("S73")
def test_hierarchical_attention_dynamic_programme_cost_is_linear_in_the_tokens():
    """The paper's efficient algorithm, measured: with branch 4 and as many levels as
    the sequence allows (the top level always has 4 nodes), each level's nodes
    meet only their siblings and the levels shrink geometrically, so 4x the tokens
    multiplies the matmul FLOPs of the dynamic programme by 4, where dense
    attention's would grow 16x."""
    from torch.utils.flop_counter import FlopCounterMode

    from archgram.ops.attention.hierarchical import hierarchical_attention

    flops = []
    for n, levels in ((64, 3), (256, 4)):
        q, k, v = (torch.randn(1, 2, n, 8) for _ in range(3))
        with FlopCounterMode(display=False) as counter:
            hierarchical_attention(q, k, v, (1, n), levels, 4, 0.35)
        flops.append(counter.get_total_flops())
    assert flops[1] / flops[0] == pytest.approx(4, rel=0.05), flops
