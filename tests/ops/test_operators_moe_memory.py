"""Neural-operator layers (S01, S02), mixtures of experts (S10, S53) and memory
ops (S56, S70), each against an independent reference
or a property its paper states."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from archgram.errors import ShapeError
from archgram.ops import get_op
from archgram.ops.memory import memory_apply
from archgram.ops.memory.titans import memory_grad
from archgram.ops.moe import FFN, DenseParallelBlock, RoutedMoE, balance_loss, upcycle

torch.manual_seed(0)


def build(name, shape, **args):
    spec = get_op(name)
    return spec.build(shape, spec.bind(args))


# ------------------------------------------------------------ S02 spectral conv
def smooth_field(n: int, channels: int) -> torch.Tensor:
    """Band-limited periodic signals on n points of [0, 1): frequencies 0..2 only."""
    t = torch.arange(n, dtype=torch.float64) / n
    rows = [1.0 + 0.5 * c + torch.sin(2 * math.pi * t + c) + 0.3 * torch.cos(4 * math.pi * t * (c % 2 + 1))
            for c in range(channels)]
    return torch.stack(rows, dim=-1)[None]  # (1, n, C)


@pytest.mark.catalog("S02")
def test_spectral_conv_1d_is_discretisation_invariant_on_band_limited_input():
    m = build("spectral_conv", (1, 16, 3), modes=4, out=2).double()
    coarse, fine = m(smooth_field(16, 3)), m(smooth_field(64, 3))
    assert coarse.shape == (1, 16, 2) and fine.shape == (1, 64, 2)
    torch.testing.assert_close(fine[:, ::4], coarse)


@pytest.mark.catalog("S02")
def test_spectral_conv_2d_is_discretisation_invariant_on_band_limited_input():
    m = build("spectral_conv", (1, 2, 8, 8), modes=3).double()

    def field(n):
        y, x = torch.meshgrid(torch.arange(n) / n, torch.arange(n) / n, indexing="ij")
        a = torch.sin(2 * math.pi * x) * torch.cos(2 * math.pi * 2 * y) + 0.5
        b = torch.cos(2 * math.pi * (x + y)) - torch.sin(2 * math.pi * 2 * x)
        return torch.stack([a, b])[None].double()

    coarse, fine = m(field(8)), m(field(32))
    torch.testing.assert_close(fine[..., ::4, ::4], coarse)


@pytest.mark.catalog("S02")
def test_spectral_conv_1d_matches_the_explicit_dft_formula():
    n, cin, cout, modes = 10, 2, 3, 4
    m = build("spectral_conv", (2, n, cin), modes=modes, out=cout).double()
    x = torch.randn(2, n, cin, dtype=torch.float64)
    w = torch.view_as_complex(m.weight)  # (cin, cout, modes)
    ref = torch.zeros(2, n, cout, dtype=torch.float64)
    for b in range(2):
        for k in range(modes):
            xk = sum(x[b, j] * complex(math.cos(2 * math.pi * k * j / n), -math.sin(2 * math.pi * k * j / n))
                     for j in range(n)) / n  # (cin,) DFT coefficient, 1/n-normalised
            yk = xk @ w[:, :, k]  # (cout,)
            for p in range(n):
                phase = complex(math.cos(2 * math.pi * k * p / n), math.sin(2 * math.pi * k * p / n))
                term = (yk * phase).real
                ref[b, p] += term if k == 0 else 2 * term  # conjugate-symmetric partner
    torch.testing.assert_close(m(x), ref)


@pytest.mark.catalog("S02")
def test_spectral_conv_refuses_more_modes_than_the_grid_resolves():
    spec = get_op("spectral_conv")
    assert spec.cls.output_shape((2, 8, 4), modes=4) == (2, 8, 4)
    with pytest.raises(ShapeError, match="modes=5"):
        spec.cls.output_shape((2, 8, 4), modes=5)
    with pytest.raises(ShapeError, match="grid points"):
        spec.cls.output_shape((2, 3, 16, 6), modes=4)  # W=6 cannot hold 4 modes
    m = build("spectral_conv", (2, 16, 4), modes=4)
    with pytest.raises(ShapeError):
        m(torch.randn(2, 6, 4))  # the same weights, on a grid too coarse for them


# ------------------------------------------------------------ S01 multigrid
@pytest.mark.catalog("S01")
def test_mgno_two_level_vcycle_equals_its_explicit_composition_2d():
    x = torch.randn(2, 3, 6, 6)
    m = build("mgno", tuple(x.shape), levels=2, smooth=2)
    A0, A1 = m.A[0].weight, m.A[1].weight
    (S00, S01), (S10, S11) = ([c.weight for c in level] for level in m.S)  # S^{l,i}: one kernel per iteration
    R, P = m.R[0].weight, m.P[0].weight

    def conv(w, t):
        return F.conv2d(t, w, padding=1)

    u0 = conv(S00, x)
    u0 = u0 + conv(S01, x - conv(A0, u0))
    f1 = F.conv2d(x - conv(A0, u0), R, stride=2, padding=1)  # 6x6 -> 3x3
    u1 = conv(S10, f1)
    u1 = u1 + conv(S11, f1 - conv(A1, u1))
    up = F.conv_transpose2d(u1, P, stride=2, padding=1, output_padding=1)  # 3x3 -> 6x6
    torch.testing.assert_close(m(x), u0 + up)


@pytest.mark.catalog("S01")
def test_mgno_is_linear_and_runs_at_other_resolutions_1d_and_2d():
    m = build("mgno", (2, 16, 3), levels=3)
    a, b = torch.randn(2, 16, 3), torch.randn(2, 16, 3)
    torch.testing.assert_close(m(2 * a - 3 * b), 2 * m(a) - 3 * m(b), atol=1e-5, rtol=1e-5)
    for n in (13, 32):
        assert m(torch.randn(2, n, 3)).shape == (2, n, 3)
    img = build("mgno", (1, 2, 16, 16), levels=3)
    for hw in ((16, 16), (17, 9), (40, 24)):
        assert img(torch.randn(1, 2, *hw)).shape == (1, 2, *hw)


@pytest.mark.catalog("S01")
def test_mgno_reaches_across_the_whole_grid_from_three_point_stencils():
    """Multigrid's point: every kernel is a 3-point stencil, yet with enough levels the
    output at the first grid point depends on the input at the last one; one level
    (smoothing only) stays local: S f reads 1 neighbour, S (f - A u) 2 more."""
    def reach(levels):
        torch.manual_seed(0)
        m = build("mgno", (1, 64, 2), levels=levels, smooth=2).double()
        x = torch.randn(1, 64, 2, dtype=torch.float64, requires_grad=True)
        m(x)[0, 0].sum().backward()
        return int((x.grad[0].abs().sum(-1) > 0).nonzero().max()) + 1  # last input point it reads

    assert reach(1) == 4
    assert reach(6) == 64


@pytest.mark.catalog("S01")
def test_mgno_shape_rule_refuses_grids_too_small_for_the_levels():
    spec = get_op("mgno")
    assert spec.cls.output_shape((2, 4, 8, 8), levels=3) == (2, 4, 8, 8)  # 8 -> 4 -> 2
    with pytest.raises(ShapeError, match="below 2 points"):
        spec.cls.output_shape((2, 4, 8, 8), levels=4)  # 8 -> 4 -> 2 -> 1
    with pytest.raises(ShapeError):
        spec.cls.output_shape((2, 3, 4), levels=3)


# ------------------------------------------------------------ MoE (S53, S10)
@pytest.mark.catalog("S53")
def test_moe_with_one_expert_equals_the_dense_ffn():
    moe = RoutedMoE(8, experts=1, k=1, hidden=16)
    x = torch.randn(3, 5, 8)
    torch.testing.assert_close(moe(x), moe.experts[0](x))
    assert float(moe.aux_loss.detach()) == pytest.approx(1.0)  # one expert: f = P = 1


@pytest.mark.catalog("S53")
@pytest.mark.parametrize("k", [1, 2, 3])
def test_moe_routes_each_token_to_exactly_k_experts_and_sums_their_gated_outputs(k):
    moe = RoutedMoE(6, experts=4, k=k, hidden=12)
    t = torch.randn(20, 6)
    probs, chosen, gates = moe.route(t)
    assert chosen.shape == (20, k)
    assert all(len(set(row.tolist())) == k for row in chosen)
    torch.testing.assert_close(gates.sum(-1), torch.ones(20))
    ref = torch.stack([
        sum(g * moe.experts[int(e)](t[i]) for g, e in zip(gates[i], chosen[i], strict=True)) for i in range(20)
    ])
    torch.testing.assert_close(moe(t), ref)
    assert int(moe.counts.sum()) == 20 * k


@pytest.mark.catalog("S53")
def test_moe_dense_combine_equals_sparse_dispatch_and_exports():
    m = build("moe", (2, 6, 8), experts=4, k=2).eval()
    t = torch.randn(12, 8)
    _, chosen, gates = m.moe.route(t)
    torch.testing.assert_close(m.moe.combine_dense(t, chosen, gates), m.moe.combine_sparse(t, chosen, gates))
    x = torch.randn(2, 6, 8)
    exported = torch.export.export(m, (x,)).module()
    torch.testing.assert_close(exported(x), m(x))


@pytest.mark.catalog("S53")
def test_switch_balance_loss_on_a_hand_case():
    probs = torch.tensor([[0.7, 0.2, 0.1, 0.0], [0.6, 0.3, 0.1, 0.0], [0.1, 0.8, 0.1, 0.0], [0.2, 0.2, 0.5, 0.1]])
    chosen = torch.tensor([[0], [0], [1], [2]])
    # f = (2/4, 1/4, 1/4, 0); P = (0.4, 0.375, 0.2, 0.025); aux = 4 * (0.2 + 0.09375 + 0.05)
    assert float(balance_loss(probs, chosen)) == pytest.approx(4 * (0.5 * 0.4 + 0.25 * 0.375 + 0.25 * 0.2))
    uniform = torch.full((8, 4), 0.25)
    assert float(balance_loss(uniform, torch.arange(8)[:, None] % 4)) == pytest.approx(1.0)


@pytest.mark.catalog("S53")
def test_tunable_experts_disable_and_steer_at_inference_and_record_activations():
    moe = RoutedMoE(6, experts=4, k=1, hidden=12)
    t = torch.randn(64, 6)
    moe.disable = {0, 1}
    _, chosen, _ = moe.route(t)
    assert set(chosen.flatten().tolist()) <= {2, 3}
    moe.disable = set()
    moe.steer = {3: 100.0}
    moe.reset_stats()
    moe(t)
    assert moe.activation_stats().tolist() == [0.0, 0.0, 0.0, 1.0]
    moe.steer = {}
    moe.disable = {0, 1, 2, 3}
    with pytest.raises(ValueError, match="disabled"):
        moe(t)


@pytest.mark.catalog("S53")
def test_moe_op_acts_on_the_channel_axis_of_images_and_exposes_the_aux_loss():
    m = build("moe", (2, 4, 3, 3), experts=3, k=2)
    x = torch.randn(2, 4, 3, 3)
    ref = m.moe(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(m(x), ref)
    assert m.aux_loss.ndim == 0 and float(m.aux_loss.detach()) > 0
    with pytest.raises(ShapeError, match="exceeds"):
        get_op("moe").cls.output_shape((2, 4, 8), experts=2, k=3)


@pytest.mark.catalog("S10")
def test_upcycled_ffn_moe_initially_equals_the_dense_ffn():
    dense = FFN(8, 16)
    moe = upcycle(dense, 4, k=2)
    x = torch.randn(5, 8)
    torch.testing.assert_close(moe(x), dense(x))
    assert all(e is not dense for e in moe.experts)  # copies, free to specialise


@pytest.mark.catalog("S10")
@pytest.mark.parametrize("shared_kv", [False, True])
def test_bam_upcycled_block_initially_equals_the_dense_parallel_block(shared_kv):
    dense = DenseParallelBlock(8, heads=2, hidden=16)
    block = upcycle(dense, 3, k=1, shared_kv=shared_kv)
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(block(x), dense(x), atol=1e-5, rtol=1e-5)
    w = block.attention_weights(block.norm(x))
    assert w.shape == (2, 5, 3) and not torch.allclose(w, w[..., :1].expand_as(w))  # soft, non-uniform routing
    # after the experts diverge the mixture is no longer the dense block
    with torch.no_grad():
        block.attn_experts[0].o.weight.add_(1.0)
    assert not torch.allclose(block(x), dense(x), atol=1e-3)


@pytest.mark.catalog("S10")
def test_bam_upcycles_several_specialised_dense_models_one_expert_each():
    seeds = [DenseParallelBlock(8, heads=2, hidden=16) for _ in range(2)]
    block = upcycle(seeds, k=2)
    for e, s in enumerate(seeds):
        torch.testing.assert_close(block.attn_experts[e].q.weight, s.attn.q.weight)
        torch.testing.assert_close(block.ffn.experts[e].fc1.weight, s.ffn.fc1.weight)
    torch.testing.assert_close(block.norm.weight, (seeds[0].norm.weight + seeds[1].norm.weight) / 2)


@pytest.mark.catalog("S10")
def test_bam_op_shares_kv_projections_when_asked():
    m = build("bam", (2, 5, 8), heads=2, experts=3, shared_kv=True)
    ks = {id(e.kv()[0]) for e in m.block.attn_experts}
    assert len(ks) == 1 and m(torch.randn(2, 5, 8)).shape == (2, 5, 8)


# ------------------------------------------------------------ S56 Titans
@pytest.mark.catalog("S56")
@pytest.mark.parametrize("depth", [1, 2])
def test_titans_one_write_is_a_momentum_gradient_step_with_forgetting(depth):
    m = build("titans_memory", (1, 1, 4), depth=depth, lr=0.3, momentum=0.9, forget=0.1, clip=0.0).double()
    x = torch.randn(1, 1, 4, dtype=torch.float64)
    q, k, v = (t[:, 0] for t in m.project(x))
    torch.testing.assert_close(k.norm(dim=-1), torch.ones(1, dtype=torch.float64))  # unit keys, as in the paper
    m0 = [p.detach().clone().requires_grad_(True) for p in m.init]
    loss = ((memory_apply([p[None] for p in m0], k.detach()) - v.detach()) ** 2).sum()
    grads = torch.autograd.grad(loss, m0)  # the surprise, by autograd
    s1 = [0.9 * 0 - 0.3 * g for g in grads]  # S_0 = 0
    m1 = [(1 - 0.1) * p.detach() + s for p, s in zip(m0, s1, strict=True)]
    expected = memory_apply([p[None] for p in m1], q.detach())
    torch.testing.assert_close(m(x)[:, 0].detach(), expected)


@pytest.mark.catalog("S56")
def test_titans_memory_recalls_a_repeated_key_better_after_writing_it():
    """Surprise falls when the same association is written again: memorisation at test time."""
    m = build("titans_memory", (1, 6, 4), depth=1, lr=0.05, momentum=0.5, forget=0.0, clip=0.0).double()
    x = torch.randn(1, 1, 4, dtype=torch.float64).expand(1, 6, 4)
    _, k, v = (t[0, 0] for t in m.project(x))
    params = [p[None] for p in m.init]
    surprise = [torch.zeros_like(p) for p in params]
    errors = []
    for _ in range(6):
        errors.append(float(((memory_apply(params, k[None]) - v) ** 2).sum().detach()))
        params, surprise = m.step(params, surprise, k[None], v[None])
    assert errors[-1] < errors[0]


@pytest.mark.catalog("S56")
def test_titans_write_clips_the_gradient_norm():
    m = build("titans_memory", (1, 1, 4), depth=2, lr=1.0, momentum=0.0, forget=0.0, clip=0.01).double()
    x = 5 * torch.randn(1, 1, 4, dtype=torch.float64)
    _, k, v = (t[:, 0] for t in m.project(x))
    params = [p.detach()[None] for p in m.init]
    raw = memory_grad(params, k.detach(), v.detach())
    new, _ = m.step(params, [torch.zeros_like(p) for p in params], k.detach(), v.detach())
    step = [a - b for a, b in zip(new, params, strict=True)]  # = -lr * clipped gradient
    norm = torch.sqrt(sum(s.square().sum() for s in step))
    assert float(norm) == pytest.approx(0.01) and float(torch.sqrt(sum(g.square().sum() for g in raw))) > 0.01
    for s_, g in zip(step, raw, strict=True):  # same direction as the raw gradient
        torch.testing.assert_close(s_ / norm, -g / torch.sqrt(sum(r.square().sum() for r in raw)))


@pytest.mark.catalog("S56")
@pytest.mark.parametrize("depth", [1, 2])
def test_titans_memory_stays_finite_at_width_64_over_many_tokens(depth):
    """Unnormalised keys (and an unscaled MLP hidden layer) made the write step grow
    with the width: NaN within 64 tokens."""
    torch.manual_seed(0)
    m = build("titans_memory", (1, 256, 64), depth=depth)
    y = m(3 * torch.randn(1, 256, 64))
    assert torch.isfinite(y).all() and y.abs().max() < 1e3


@pytest.mark.catalog("S56")
def test_titans_outer_training_differentiates_through_the_test_time_updates():
    m = build("titans_memory", (2, 5, 4))
    m(torch.randn(2, 5, 4)).square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


# ------------------------------------------------------------ S70 Tensor Brain
@pytest.mark.catalog("S70")
def test_tensor_brain_decoder_matches_its_formula_and_feeds_the_concept_back():
    m = build("tensor_brain_decoder", (2, 3, 8), concepts=5)
    q = torch.randn(2, 3, 8)
    p = torch.softmax(q @ m.embeddings.T + m.bias, dim=-1)
    torch.testing.assert_close(m(q), q + p @ m.embeddings)
    logits = build("tensor_brain_decoder", (2, 3, 8), concepts=5, mode="logits")
    logits.load_state_dict(m.state_dict())
    assert logits(q).shape == (2, 3, 5)
    # a state aligned with concept 2 decodes to concept 2 and moves further towards it
    with torch.no_grad():
        m.embeddings.copy_(torch.eye(5, 8) * 3)
    state = 4 * m.embeddings[2].detach()[None, None]
    assert int(m.logits(state).argmax(-1)) == 2
    torch.testing.assert_close(m(state), state + m.embeddings[2].detach(), atol=1e-4, rtol=0)


@pytest.mark.catalog("S70")
def test_tensor_brain_sampled_decoding_feeds_back_one_concept_drawn_from_its_posterior():
    """sample=true: each token's representation moves by exactly one concept
    embedding, drawn with frequency p(i|q) (the paper's sampling of the index
    layer), and the gradient is that of the expected embedding (straight-through)."""
    m = build("tensor_brain_decoder", (1, 4000, 4), concepts=3, sample=True)
    with torch.no_grad():
        m.embeddings.copy_(torch.tensor([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 2.0, 0]]))
        m.bias.copy_(torch.tensor([0.0, 0.5, -0.5]))
    q = torch.zeros(1, 4000, 4)  # logits = bias: p = softmax(0, 0.5, -0.5) for every token
    torch.manual_seed(0)
    moved = m(q) - q
    hits = (moved[0, :, None, :] == m.embeddings.detach()[None]).all(-1)  # (N, K)
    assert hits.sum(-1).eq(1).all()  # exactly one concept's embedding each
    want = torch.softmax(torch.tensor([0.0, 0.5, -0.5]), -1)
    torch.testing.assert_close(hits.float().mean(0), want, atol=0.03, rtol=0)
    x = torch.randn(1, 4000, 4, requires_grad=True)
    torch.manual_seed(1)
    m(x).sum().backward()
    soft = build("tensor_brain_decoder", (1, 4000, 4), concepts=3)
    soft.load_state_dict(m.state_dict())
    x2 = x.detach().clone().requires_grad_(True)
    soft(x2).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
