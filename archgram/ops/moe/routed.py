"""Top-k routed mixture of FFN experts (Switch / GShard style), with
inference-time expert switching and steering (Mixture of Tunable Experts, S53).

Routing: a linear router gives each token a softmax over E experts; the token
goes to its k most probable experts and their outputs are summed with the
top-k probabilities renormalised to 1 (so one expert reproduces a dense FFN).
The auxiliary load-balancing loss is Switch Transformer's

    aux = E * sum_i f_i * P_i,

f_i the fraction of routing assignments sent to expert i (over tokens and the
k choices) and P_i the mean router probability of expert i; it is 1 when the
load is uniform. After each forward the module holds it in ``aux_loss``.

Mixture of Tunable Experts (Dahlke et al. 2025, "Behavior Modification of
DeepSeek-R1 at Inference Time"; catalog S53).

Paper's defining mechanism: (1) *identify* behaviour-specific experts by
recording which routed experts each token activates on prompts that elicit a
behaviour and on reference prompts ("functional Token Resonance Imaging"), and
ranking experts by how much more often the behaviour set activates them; (2)
*tune* a trained MoE without retraining by overriding the router: switch
experts off (never chosen) or force them on (always chosen), which shifts the
behaviour (their top-10 refusal experts off: 52% fewer refusals; random
experts off: a smaller, noisier shift).

What archgram does: ``disable`` (experts never chosen), ``force`` (experts
always among a token's k, ahead of the router's picks) and ``steer`` (expert ->
logit offset, a soft push) override routing at any time; the ``moe`` op takes
``disable`` and ``force`` as grammar arguments, and ``RoutedMoE.tune`` sets them
on a built or exported model (the method travels with ``archgram export``'s
vendored source). ``counts`` and ``tokens`` record activations;
``archgram.analysis.experts`` ranks experts by activation-rate difference
between two input sets and tunes whole models (``archgram experts`` on the
command line).

What differs: the paper works per prompt token of an LLM with thousands of
experts; here a token is whatever the op routes (sequence positions or
pixels). Nothing of the mechanism is left out.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from archgram.errors import ShapeError
from archgram.ops.registry import Arg, Op, check_rank, register_op
from archgram.shapes import IMAGE_RANK, Shape, channels


class FFN(nn.Module):
    """Position-wise feed-forward network: Linear -> GELU -> Linear."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


def balance_loss(probs: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Switch load-balancing loss E * sum_i f_i P_i for router ``probs`` (T, E)
    and the chosen expert indices ``chosen`` (T, k)."""
    e = probs.shape[-1]
    f = torch.bincount(chosen.flatten(), minlength=e).to(probs.dtype) / chosen.numel()
    return e * (f * probs.mean(0)).sum()


class RoutedMoE(nn.Module):
    """k-of-E routed FFN experts on the last axis of ``x`` (any leading shape)."""

    def __init__(self, dim: int, experts: int, k: int = 1, hidden: int | None = None):
        super().__init__()
        if not 1 <= k <= experts:
            raise ShapeError(f"moe: k={k} must be between 1 and experts={experts}")
        self.k = k
        self.router = nn.Linear(dim, experts, bias=False)
        self.experts = nn.ModuleList(FFN(dim, hidden or 2 * dim) for _ in range(experts))
        self.disable: set[int] = set()
        self.force: set[int] = set()
        self.steer: dict[int, float] = {}
        self.register_buffer("counts", torch.zeros(experts, dtype=torch.long), persistent=False)
        self.tokens = 0
        self.aux_loss = torch.zeros(())

    @property
    def n_experts(self) -> int:
        return len(self.experts)

    def tune(self, disable=(), force=(), steer=None) -> None:
        """Override routing without retraining (MoTE): ``disable`` experts are never
        chosen, ``force`` experts are always among each token's k, ``steer``
        (expert -> logit offset) pushes tokens towards or away from experts."""
        disable, force, steer = set(disable), set(force), dict(steer or {})
        bad = sorted(i for i in disable | force | set(steer) if not 0 <= i < self.n_experts)
        if bad:
            raise ValueError(f"moe: no expert {bad[0]} among {self.n_experts}")
        if disable & force:
            raise ValueError(f"moe: experts {sorted(disable & force)} are both disabled and forced")
        if len(force) > self.k:
            raise ValueError(f"moe: {len(force)} forced experts exceed k={self.k}")
        if self.n_experts - len(disable) < self.k:
            raise ValueError(f"moe: {len(disable)} experts disabled leaves fewer than k={self.k}")
        self.disable, self.force, self.steer = disable, force, steer

    def route(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(router probs before tuning (T,E), chosen experts (T,k), gates (T,k)).

        Gates are the tuned router probabilities of the chosen experts, renormalised;
        forced experts take the first slots, disabled ones are never chosen."""
        logits = self.router(t)
        probs = logits.softmax(-1)
        tuned = logits
        if self.steer:
            offset = torch.zeros(self.n_experts, dtype=logits.dtype, device=logits.device)
            for i, v in self.steer.items():
                offset[i] = v
            tuned = tuned + offset
        if self.disable:
            if self.n_experts - len(self.disable) < self.k:
                raise ValueError(f"moe: {len(self.disable)} experts disabled leaves fewer than k={self.k}")
            off = torch.zeros(self.n_experts, dtype=torch.bool, device=logits.device)
            off[sorted(self.disable)] = True
            tuned = tuned.masked_fill(off, float("-inf"))
        tuned_probs = tuned.softmax(-1)
        rank = tuned_probs
        if self.force:
            on = torch.zeros(self.n_experts, dtype=logits.dtype, device=logits.device)
            on[sorted(self.force)] = 2.0  # above any probability: forced experts rank first
            rank = tuned_probs + on
        chosen = rank.topk(self.k, dim=-1).indices
        top = tuned_probs.gather(-1, chosen)
        gates = top / top.sum(-1, keepdim=True).clamp_min(torch.finfo(top.dtype).tiny)
        return probs, chosen, gates

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.reshape(-1, x.shape[-1])
        probs, chosen, gates = self.route(t)
        if torch.compiler.is_compiling():
            out = self.combine_dense(t, chosen, gates)
        else:
            out = self.combine_sparse(t, chosen, gates)
        if not torch.compiler.is_exporting():  # an exported program is inference only: no bookkeeping
            self.aux_loss = balance_loss(probs, chosen)
            with torch.no_grad():
                self.counts += torch.bincount(chosen.flatten(), minlength=self.n_experts)
            self.tokens += t.shape[0]
        return out.reshape(x.shape)

    def combine_sparse(self, t: torch.Tensor, chosen: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """Each expert runs on its own tokens only (k/E of the dense cost)."""
        out = torch.zeros_like(t)
        for e, expert in enumerate(self.experts):
            rows, slot = torch.nonzero(chosen == e, as_tuple=True)
            if rows.numel():
                out.index_add_(0, rows, gates[rows, slot, None] * expert(t[rows]))
        return out

    def combine_dense(self, t: torch.Tensor, chosen: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """Every expert on every token, unchosen ones weighted 0: the same sum without
        data-dependent shapes, so ``torch.export`` and ``torch.compile`` can trace it."""
        weights = torch.zeros(t.shape[0], self.n_experts, dtype=t.dtype, device=t.device).scatter(1, chosen, gates)
        return sum(weights[:, e, None] * expert(t) for e, expert in enumerate(self.experts))

    def activation_stats(self) -> torch.Tensor:
        """Fraction of routing assignments each expert received since the last reset."""
        total = self.counts.sum()
        return self.counts.float() / total.clamp_min(1)

    def activation_rates(self) -> torch.Tensor:
        """Per expert, the fraction of tokens since the last reset whose k experts included it."""
        return self.counts.float() / max(self.tokens, 1)

    def reset_stats(self) -> None:
        self.counts.zero_()
        self.tokens = 0


@register_op(
    "moe",
    family="moe",
    refs=("S53",),
    args={
        "experts": Arg(int, 4, low=1, high=64),
        "k": Arg(int, 1, low=1, doc="experts per token"),
        "mult": Arg(int, 2, low=1, high=8, doc="expert hidden width = mult * channels"),
        "disable": Arg(tuple, (), doc="experts switched off: never chosen (MoTE)"),
        "force": Arg(tuple, (), doc="experts forced on: always among a token's k (MoTE)"),
    },
)
class MoE(Op):
    """Top-k routed mixture of FFN experts with a Switch load-balancing loss (``aux_loss``); experts can be disabled or forced (MoTE)."""

    def __init__(self, shape: Shape, experts: int = 4, k: int = 1, mult: int = 2,
                 disable: tuple = (), force: tuple = ()):
        super().__init__()
        self.output_shape(shape, experts=experts, k=k, mult=mult, disable=disable, force=force)
        d = channels(shape)
        self.image = len(shape) == IMAGE_RANK
        self.moe = RoutedMoE(d, experts, k, mult * d)
        self.moe.tune(disable=disable, force=force)

    @classmethod
    def output_shape(cls, shape: Shape, experts: int = 4, k: int = 1, mult: int = 2,
                     disable: tuple = (), force: tuple = ()) -> Shape:
        check_rank("moe", shape, 3, 4)
        if k > experts:
            raise ShapeError(f"moe: k={k} exceeds experts={experts}")
        for name, ids in (("disable", disable), ("force", force)):
            bad = [i for i in ids if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < experts]
            if bad:
                raise ShapeError(f"moe: {name}={ids} names {bad[0]!r}, not one of the experts 0..{experts - 1}")
        if set(disable) & set(force):
            raise ShapeError(f"moe: experts {sorted(set(disable) & set(force))} are both disabled and forced")
        if len(set(force)) > k:
            raise ShapeError(f"moe: force={force} names more experts than k={k}")
        if experts - len(set(disable)) < k:
            raise ShapeError(f"moe: disable={disable} leaves fewer than k={k} of {experts} experts")
        return shape

    @classmethod
    def count_params(cls, shape: Shape, /, experts: int = 4, k: int = 1, mult: int = 2, **_) -> int:
        d = channels(shape)
        h = mult * d
        return d * experts + experts * (2 * d * h + h + d)

    @classmethod
    def flops(cls, shape, out, params, /, experts: int = 4, k: int = 1, mult: int = 2, **_) -> int:
        d = channels(shape)
        tokens = out[0] * (out[2] * out[3] if len(out) == IMAGE_RANK else out[1])
        return tokens * (2 * d * experts + k * 4 * d * mult * d)

    @property
    def aux_loss(self) -> torch.Tensor:
        return self.moe.aux_loss

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.image:
            return self.moe(x.movedim(1, -1)).movedim(-1, 1)
        return self.moe(x)
