"""Titans' neural long-term memory (Behrouz, Zhong & Mirrokni 2025; catalog S56).

The memory is a small network M (a matrix, or a 2-layer MLP) whose *weights*
are the state. Reading token t: keys k_t = x_t W_K, values v_t = x_t W_V,
queries q_t = x_t W_Q. Writing is one gradient step on the associative loss
l(M; x_t) = ||M(k_t) - v_t||^2, the "surprise", with momentum and forgetting:

    S_t = eta * S_{t-1} - theta * grad l(M_{t-1}; x_t)     (momentary + past surprise)
    M_t = (1 - alpha) * M_{t-1} + S_t                      (weight decay = forgetting)
    y_t = M_t(q_t)                                         (retrieval)

The paper's theta_t, eta_t, alpha_t are data-dependent gates; with constants
instead, two things keep the memory finite: each write's gradient is clipped
to norm ``clip`` (our addition), and keys and queries are L2-normalised, as in the paper: the write is then a
gradient step of size at most ~2 theta ||k||^2 = 2 theta, so it cannot blow up
with the width or the input scale (unnormalised, a width-64 memory diverged to
NaN within 64 tokens at theta = 0.1; the MLP memory also scales its hidden
layer, see ``memory_apply``).

Each example in the batch has its own memory, starting from the learned M_0.
theta, eta and alpha are the op arguments ``lr``, ``momentum``, ``forget``; with
``gates=true`` they become the paper's data-dependent gates, one linear map of
x_t each (theta_t = 2 lr sigmoid(.), eta_t, alpha_t = sigmoid(.)), starting at
those constants. The gradient is written out
in closed form, so the outer training loop differentiates through the updates.

Fidelity (S56): the paper's mechanism (test-time surprise-driven gradient step
with momentum and forgetting, data-dependent with ``gates=true``) is here. What
differs: the gradient clip (``clip=0`` turns it off), and Titans' MAC / MAG / MAL
wiring and persistent memory, which a grammar composes around the op.
"""
from __future__ import annotations

import torch
from torch import nn

from archgram.ops.registry import Arg, Op, check_rank, register_op
from archgram.shapes import Shape

Params = list[torch.Tensor]


def _logit(p: float) -> float:
    """log(p / (1 - p)), with p kept inside (0, 1) so constants 0 and 1 stay finite."""
    p = min(max(p, 1e-4), 1 - 1e-4)
    return float(torch.logit(torch.tensor(p)))


def memory_apply(params: Params, k: torch.Tensor) -> torch.Tensor:
    """M(k) for batched memories: params are (B, ...) weights, k is (B, D). The MLP's
    hidden activations are scaled by 1/sqrt(width) so that a write's step on W2
    (theta * ||hidden||^2) does not grow with the width."""
    if len(params) == 1:
        return torch.einsum("bij,bj->bi", params[0], k)
    w1, w2 = params
    hidden = nn.functional.silu(torch.einsum("bij,bj->bi", w1, k)) * w1.shape[1] ** -0.5
    return torch.einsum("bij,bj->bi", w2, hidden)


def memory_grad(params: Params, k: torch.Tensor, v: torch.Tensor) -> Params:
    """Gradient of ||M(k) - v||^2 (summed over features) w.r.t. each example's weights."""
    if len(params) == 1:
        r = 2 * (memory_apply(params, k) - v)
        return [torch.einsum("bi,bj->bij", r, k)]
    w1, w2 = params
    scale = w1.shape[1] ** -0.5
    z = torch.einsum("bij,bj->bi", w1, k)
    s = torch.sigmoid(z)
    a = z * s * scale
    r = 2 * (torch.einsum("bij,bj->bi", w2, a) - v)
    dz = torch.einsum("bij,bi->bj", w2, r) * s * (1 + z * (1 - s)) * scale
    return [torch.einsum("bi,bj->bij", dz, k), torch.einsum("bi,bj->bij", r, a)]


@register_op(
    "titans_memory",
    family="memory",
    refs=("S56",),
    args={
        "depth": Arg(int, 2, choices=(1, 2), doc="1: linear memory; 2: MLP memory (hidden = D)"),
        "lr": Arg(float, 0.1, low=0.0, doc="theta, the surprise step size"),
        "momentum": Arg(float, 0.9, low=0.0, high=1.0, doc="eta, weight of past surprise"),
        "forget": Arg(float, 0.01, low=0.0, high=1.0, doc="alpha, weight decay of the memory"),
        "clip": Arg(float, 1.0, low=0.0, doc="largest norm of one write's gradient (0: no clipping)"),
        "gates": Arg(bool, False, doc="data-dependent theta_t, eta_t, alpha_t from each token (the paper's); "
                                      "they start at lr, momentum, forget"),
    },
)
class TitansMemory(Op):
    """Titans long-term memory: an MLP written at test time by surprise-driven gradient steps."""

    def __init__(self, shape: Shape, depth: int = 2, lr: float = 0.1, momentum: float = 0.9, forget: float = 0.01,
                 clip: float = 1.0, gates: bool = False):
        super().__init__()
        d = shape[-1]
        self.lr, self.momentum, self.forget, self.clip = lr, momentum, forget, clip
        self.q, self.k, self.v = (nn.Linear(d, d, bias=False) for _ in range(3))
        self.init = nn.ParameterList(nn.Parameter(torch.randn(d, d) / d**0.5) for _ in range(depth))
        # data-dependent gates (theta_t, eta_t, alpha_t) = one linear map of x_t each, squashed;
        # zero weights and these biases start them at the constants lr, momentum, forget
        self.gate = nn.Linear(d, 3) if gates else None
        if self.gate is not None:
            nn.init.zeros_(self.gate.weight)
            with torch.no_grad():
                self.gate.bias.copy_(torch.tensor([0.0, _logit(momentum), _logit(forget)]))

    @classmethod
    def output_shape(cls, shape: Shape, **args) -> Shape:
        check_rank("titans_memory", shape, 3)
        return shape

    @classmethod
    def count_params(cls, shape: Shape, /, depth: int = 2, gates: bool = False, **args) -> int:
        return (3 + depth) * shape[-1] ** 2 + (3 * shape[-1] + 3 if gates else 0)

    @classmethod
    def flops(cls, shape, out, params, /, depth: int = 2, **args) -> int:
        b, n, d = shape
        return b * n * d * d * (6 + 8 * depth)

    def gates_of(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(theta_t, eta_t, alpha_t), each (B, N), of tokens x (B, N, D), or None without gates.
        theta_t = 2 lr sigmoid(.) lies in (0, 2 lr); eta_t and alpha_t = sigmoid(.) in (0, 1)."""
        if self.gate is None:
            return None
        g = torch.sigmoid(self.gate(x))
        return 2 * self.lr * g[..., 0], g[..., 1], g[..., 2]

    def step(self, params: Params, surprise: Params, k: torch.Tensor, v: torch.Tensor,
             gates: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> tuple[Params, Params]:
        """One write: momentum on the surprise, then forgetting plus the step. ``gates``
        (theta, eta, alpha), each (B,), replace the constants per example."""
        lr, momentum, forget = (self.lr, self.momentum, self.forget) if gates is None else (
            tuple(g.view(-1, 1, 1) for g in gates))
        grads = memory_grad(params, k, v)
        if self.clip:  # per example, over all layers: bounded writes keep M finite (M <= clip*lr/((1-eta)*alpha))
            norm = torch.sqrt(sum(g.flatten(1).square().sum(1) for g in grads))
            factor = (self.clip / norm.clamp_min(1e-12)).clamp(max=1.0)
            grads = [g * factor.view(-1, *([1] * (g.dim() - 1))) for g in grads]
        surprise = [momentum * s - lr * g for s, g in zip(surprise, grads, strict=True)]
        params = [(1 - forget) * p + s for p, s in zip(params, surprise, strict=True)]
        return params, surprise

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(q, k, v) of every token; q and k on the unit sphere."""
        normalize = nn.functional.normalize
        return normalize(self.q(x), dim=-1), normalize(self.k(x), dim=-1), self.v(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        q, k, v = self.project(x)
        params = [p.expand(b, *p.shape) for p in self.init]
        surprise = [torch.zeros_like(p) for p in params]
        gates = self.gates_of(x)
        out = []
        for t in range(x.shape[1]):
            at = None if gates is None else tuple(g[:, t] for g in gates)
            params, surprise = self.step(params, surprise, k[:, t], v[:, t], at)
            out.append(memory_apply(params, q[:, t]))
        return torch.stack(out, dim=1)
