"""Titans (S56) with the paper's data-dependent gates: each token sets its own
step size theta_t, momentum eta_t and forgetting alpha_t."""
from __future__ import annotations

import pytest
import torch

from archgram.ops import get_op
from archgram.ops.memory import memory_apply
from archgram.ops.memory.titans import memory_grad

pytestmark = pytest.mark.catalog("S56")


def build(shape, **args):
    spec = get_op("titans_memory")
    return spec.build(shape, spec.bind(args)).double()


def test_gated_writes_follow_the_recurrence_with_each_tokens_own_gates():
    torch.manual_seed(0)
    m = build((2, 3, 4), depth=2, lr=0.2, momentum=0.8, forget=0.05, clip=0.0, gates=True)
    with torch.no_grad():
        m.gate.weight.normal_()
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    q, k, v = m.project(x)
    g = torch.sigmoid(x @ m.gate.weight.T + m.gate.bias)  # (B, N, 3), by hand
    theta, eta, alpha = 0.4 * g[..., 0], g[..., 1], g[..., 2]
    assert theta.std() > 0 and eta.std() > 0 and alpha.std() > 0  # they do vary by token
    params = [p.expand(2, *p.shape) for p in m.init]
    surprise = [torch.zeros_like(p) for p in params]
    want = []
    for t in range(3):
        grads = memory_grad(params, k[:, t], v[:, t])
        surprise = [eta[:, t, None, None] * s - theta[:, t, None, None] * gr for s, gr in zip(surprise, grads)]
        params = [(1 - alpha[:, t, None, None]) * p + s for p, s in zip(params, surprise)]
        want.append(memory_apply(params, q[:, t]))
    torch.testing.assert_close(m(x), torch.stack(want, 1))


def test_gates_start_at_the_constants_and_a_closed_forget_gate_erases_the_memory():
    x = torch.randn(1, 4, 4, dtype=torch.float64)
    plain = build((1, 4, 4), depth=1, lr=0.2, momentum=0.8, forget=0.05, clip=0.0)
    gated = build((1, 4, 4), depth=1, lr=0.2, momentum=0.8, forget=0.05, clip=0.0, gates=True)
    gated.load_state_dict({**plain.state_dict(), **{k: v for k, v in gated.state_dict().items() if k.startswith("gate")}})
    torch.testing.assert_close(gated(x), plain(x))  # zero gate weights: the constants
    with torch.no_grad():  # alpha_t -> 1 and eta_t -> 0 for every token: nothing old is kept
        gated.gate.bias.copy_(torch.tensor([0.0, -40.0, 40.0]))
    q, k, v = gated.project(x)
    out = gated(x)
    memory = [p[None] for p in gated.init]
    for t in range(4):  # the memory is this token's step alone: -theta * grad at the previous memory
        memory = [-0.2 * gr for gr in memory_grad(memory, k[:, t], v[:, t])]
        torch.testing.assert_close(out[:, t], memory_apply(memory, q[:, t]))
    spec = get_op("titans_memory")
    assert spec.param_count((1, 4, 4), spec.bind({"depth": 1, "gates": True})) == sum(p.numel() for p in gated.parameters())
