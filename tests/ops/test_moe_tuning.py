"""Mixture of Tunable Experts (S53): overriding a trained router (disable / force),
identifying behaviour-specific experts by their activation difference between two
input sets, and the paper's qualitative result on a small trained MoE."""
from __future__ import annotations

import pytest
import torch

from archgram.analysis.experts import activation_rates, distinctive_experts, moe_layers, tune_experts
from archgram.errors import ShapeError
from archgram.ops import get_op
from archgram.ops.moe import RoutedMoE

pytestmark = pytest.mark.catalog("S53")


def test_forced_experts_take_the_first_slots_and_gates_are_the_renormalised_tuned_probs():
    torch.manual_seed(0)
    moe = RoutedMoE(6, experts=5, k=2, hidden=8)
    t = torch.randn(40, 6)
    moe.tune(disable={0}, force={4})
    _, chosen, gates = moe.route(t)
    assert (chosen[:, 0] == 4).all() and (chosen != 0).all()
    logits = moe.router(t).masked_fill(torch.arange(5) == 0, float("-inf"))
    p = logits.softmax(-1)
    for i in range(40):  # reference: expert 4, then the most probable enabled other one
        rest = max((e for e in range(1, 4)), key=lambda e: p[i, e].item())
        assert chosen[i, 1].item() == rest
        want = torch.stack([p[i, 4], p[i, rest]])
        torch.testing.assert_close(gates[i], want / want.sum())
    for bad in ({"disable": {1}, "force": {1}}, {"force": {1, 2, 3}}, {"disable": {0, 1, 2, 3}}, {"disable": {7}}):
        with pytest.raises(ValueError, match="moe"):
            moe.tune(**bad)


def test_grammar_arguments_disable_and_force_experts_of_the_built_op():
    import archgram
    from archgram.grammar.model import Grammar

    g = Grammar.from_text("start net\nnet : moe(experts=4, k=2, disable=(1), force=(3))\n")
    m = archgram.compile(g.sample((2, 6, 8), seed=0), (2, 6, 8))
    layer = next(mod for mod in m.modules() if isinstance(mod, RoutedMoE))
    assert layer.disable == {1} and layer.force == {3}
    spec = get_op("moe")
    m = spec.build((2, 6, 8), spec.bind({"experts": 4, "k": 2, "disable": (1,), "force": (3,)}))
    m.moe.reset_stats()
    m(torch.randn(2, 6, 8))
    rates = m.moe.activation_rates()
    assert rates[1] == 0 and rates[3] == 1 and torch.isclose(rates.sum(), torch.tensor(2.0))
    for bad in ({"disable": (4,)}, {"disable": (1,), "force": (1,)}, {"force": (0, 1)}, {"disable": (0, 1, 2, 3)}):
        with pytest.raises(ShapeError, match="moe"):
            spec.cls.output_shape((2, 6, 8), **bad)


def _trained_two_behaviour_moe(seed: int = 0):
    """A linear layer then an 8-expert top-2 MoE, trained on two input families A
    (x_0 ~ +3) and B (x_0 ~ -3) with different targets, so experts specialise."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    d = 8
    model = torch.nn.Sequential(torch.nn.Linear(d, d), RoutedMoE(d, 8, k=2, hidden=16))
    mu = torch.zeros(d)
    mu[0] = 3.0
    w_a, w_b = torch.randn(d, d, generator=g), torch.randn(d, d, generator=g)

    def sample(which: str, n: int = 32):
        x = (mu if which == "a" else -mu) + torch.randn(n, d, generator=g)
        return x, torch.tanh(x @ (w_a if which == "a" else w_b))

    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(120):
        (xa, ya), (xb, yb) = sample("a"), sample("b")
        loss = (model(torch.cat([xa, xb])) - torch.cat([ya, yb])).square().mean() + 0.01 * model[1].aux_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, sample("a", 256), sample("b", 256)


def test_switching_off_the_most_distinctive_experts_changes_only_that_behaviour():
    """The paper's result in small: rank experts by activation on behaviour set A
    minus reference set B; switching off the top two breaks A's behaviour and
    leaves B's intact, switching off the two least distinctive barely matters, and
    forcing A's top expert on shifts B's behaviour."""
    model, (xa, ya), (xb, yb) = _trained_two_behaviour_moe()

    def err(x, y):
        with torch.no_grad():
            return (model(x) - y).square().mean().item()

    ranked = distinctive_experts(model, [xa], [xb], top=None)
    assert [d.layer for d in ranked] == ["1"] * 8
    assert ranked[0].rate_a > 0.5 and ranked[0].rate_b < 0.05
    assert ranked == sorted(ranked, key=lambda d: -d.difference)
    base_a, base_b = err(xa, ya), err(xb, yb)

    tune_experts(model, disable=[(d.layer, d.expert) for d in ranked[:2]])
    off_a, off_b = err(xa, ya), err(xb, yb)
    assert off_a > 2.5 * base_a and abs(off_b - base_b) < 0.1 * base_b

    least = sorted(ranked, key=lambda d: abs(d.difference))[:2]
    tune_experts(model, disable=[(d.layer, d.expert) for d in least])
    assert err(xa, ya) < 1.5 * base_a

    tune_experts(model, disable=[], force=[(ranked[0].layer, ranked[0].expert)])
    assert model[1].disable == set() and err(xb, yb) > 1.5 * base_b


def test_activation_rates_count_tokens_whose_k_experts_include_each_expert():
    torch.manual_seed(0)
    model = torch.nn.Sequential(RoutedMoE(4, experts=3, k=2, hidden=4))
    x = torch.randn(5, 7, 4)
    rates = activation_rates(model, [x[:2], x[2:]])["0"]
    _, chosen, _ = model[0].route(x.reshape(-1, 4))
    want = torch.stack([(chosen == e).any(-1).float().mean() for e in range(3)])
    torch.testing.assert_close(rates, want)
    assert list(moe_layers(model)) == ["0"]
    with pytest.raises(ValueError, match="no MoE layer"):
        tune_experts(model, disable=[("2", 0)])
    with pytest.raises(ValueError, match="no routed mixture"):
        activation_rates(torch.nn.Linear(4, 4), [torch.randn(2, 4)])
