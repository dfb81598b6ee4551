"""Reversed attention and its dependency-tree readout (Ding et al. 2023, "Visual
Dependency Transformers: Dependency Tree Emerges from Reversed Attention",
DependencyViT, catalog S47).

Ordinary attention *gathers*: query i pulls a convex mix of every value. Reversed
attention *sends*: each token i is a child that chooses its parents with a
distribution A_i. = softmax_j(q_i . k_j) (normalised over the parents j, as in
the forward matrix A_F), and a parent j receives the values of the children that
chose it, out_j = sum_i A_ij g_i v_i. The matrix applied to the values is the
transpose A^T, so its *columns* (one per child) sum to g_i, not its rows: a
parent nobody chooses receives nothing (the residual path keeps it), a popular
parent receives a lot. Summed over heads, A_R = A^T is the paper's soft
dependency mask; reading the most likely parent of every child gives a
dependency tree (``dependency_tree``).

The gate g_{h,i} = p_{h,i} m_i combines the paper's two controls, both computed
from the layer input x (``ChildGate``, the op's value gate: it scales each
child's value before the transposed map):
  * head selector p = softmax_h(W_p x_i / temperature) (temperature 0.1, the
    paper's appendix) -- each child sends through the heads it picks;
  * message controller m = sigmoid(MLP(x_i)) in (0, 1) -- how much a child sends
    at all (the paper prunes leaves that send little: DependencyViT-Lite).
The gates start uniform (p = 1/H, m = 1/2).

Fidelity (S47). Paper: reversed attention with the head selector and message
controller from x, the controller multiplied across layers, and a tree read
from the parents. archgram: all of it within one layer. Differs: the
controller is per layer: ops pass only the feature tensor to each other, so a
running product of controllers has nowhere to live between layers (an extra
channel would be mixed by the linear layers between them); users lose the
cumulative pruning of DependencyViT-Lite across layers.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from archgram.errors import ShapeError
from archgram.ops.attention.parts import SCORES
from archgram.ops.attention.scores import Score, masked_fill_min, masked_zero


def reversed_weights(logits: torch.Tensor, mask: torch.Tensor | None = None, gate: torch.Tensor | None = None) -> torch.Tensor:
    """The matrix reversed attention applies to the values, (..., N_parent, N_child).

    ``logits`` (..., N_child, N_parent): child i's scores for parent j. Each child's
    row is normalised over the parents it may see (``mask``), then scaled by its
    ``gate`` (..., N_child), then transposed, so out = reversed_weights(...) @ v
    sends child i's value to its parents."""
    a = masked_zero(torch.softmax(masked_fill_min(logits, mask), dim=-1), mask)
    if gate is not None:
        a = a * gate[..., None]
    return a.transpose(-1, -2)


class ChildGate(nn.Module):
    """g = p * m from the layer input x (B, N, C) -> (B, H, N, 1): head selector
    p = softmax over heads of W_p x / temperature, message controller
    m = sigmoid(w_2 . GELU(W_1 x)). Zero-initialised last layers: p = 1/H, m = 1/2."""

    def __init__(self, dim: int, heads: int, temperature: float = 0.1):
        super().__init__()
        self.temperature = float(temperature)
        self.selector = nn.Linear(dim, heads)
        hidden = max(1, dim // 4)
        self.controller = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 1))
        for layer in (self.selector, self.controller[2]):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(p (B, H, N), m (B, N))."""
        p = torch.softmax(self.selector(x) / self.temperature, dim=-1).transpose(1, 2)
        m = torch.sigmoid(self.controller(x))[..., 0]
        return p, m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, m = self.parts(x)
        return (p * m[:, None, :])[..., None]


@SCORES.register
class Reversed(Score):
    """Reversed attention (DependencyViT, catalog S47): children choose parents,
    parents receive; each child's value is gated by a head selector and a message
    controller computed from the layer input (``ChildGate``, which the op applies
    as its value gate; see the module docstring). Refuses causal masks: a child
    sending to an earlier parent means an earlier token receives a later token's
    value."""

    name = "reversed"
    params = ("temperature",)
    refs = ("S47",)

    def __init__(self, heads: int, temperature: float = 0.1):
        super().__init__(heads)
        self.temperature = float(temperature)

    @classmethod
    def value_gate(cls, heads: int, dim: int, temperature: float = 0.1, **params) -> nn.Module:
        return ChildGate(dim, heads, temperature)

    @classmethod
    def check(cls, pattern, causal, params):
        t = params.get("temperature", 0.1)
        if isinstance(t, bool) or not isinstance(t, (int, float)) or t <= 0:
            raise ShapeError(f"score 'reversed': temperature must be a positive number, got {t!r}")
        if causal or getattr(pattern, "name", "") == "causal":
            raise ShapeError("score 'reversed': children send to parents, which under a causal mask "
                             "leaks later tokens into earlier ones; use a non-causal pattern")

    def weights(self, logits, mask):
        """The reversed matrix (columns sum to 1); the op gates the children's values."""
        return reversed_weights(logits, mask)

    def attend(self, q, k, v, mask, bias, scale, causal=False):
        # Overridden on purpose: the transposed map needs every query as a parent, so
        # selector patterns must not gather or compress keys per query for this score.
        return super().attend(q, k, v, mask, bias, scale, causal)


class DependencyTree(NamedTuple):
    """``parent`` (..., N) long: each token's parent, -1 at roots; ``root`` (..., N) bool."""

    parent: torch.Tensor
    root: torch.Tensor


def dependency_tree(weights: torch.Tensor) -> DependencyTree:
    """Read a dependency tree from child -> parent weights (..., N, N), row i = how much
    child i sends to each parent j (the forward matrix A_F, or the transpose of a
    reversed / summed-over-heads dependency mask A_M).

    Each child's parent is its largest weight. A token that chooses itself is a
    root (it sends to no one else). Argmax choices can close cycles with no
    self-loop (i -> j -> i); each such cycle is broken at its member that
    receives the most weight in total (the column sum: the most-chosen token,
    the paper's notion of a node near the root), which becomes a root. The result
    is a forest: every token reaches a root by following ``parent``."""
    if weights.dim() < 2 or weights.shape[-1] != weights.shape[-2]:
        raise ValueError(f"dependency_tree needs square (..., N, N) weights, got {tuple(weights.shape)}")
    n = weights.shape[-1]
    flat = weights.detach().reshape(-1, n, n)
    choice = flat.argmax(-1)
    received = flat.sum(-2)
    parents = []
    for b in range(flat.shape[0]):
        parent = choice[b].tolist()
        incoming = received[b].tolist()
        state = [0] * n  # 0 unvisited, 1 on the current path, 2 done
        for i in range(n):
            if parent[i] == i:
                parent[i] = -1
        for start in range(n):
            path, node = [], start
            while node != -1 and state[node] == 0:
                state[node] = 1
                path.append(node)
                node = parent[node]
            if node != -1 and state[node] == 1:  # closed a cycle: node .. end of path
                cycle = path[path.index(node):]
                parent[max(cycle, key=lambda c: incoming[c])] = -1
            for p in path:
                state[p] = 2
        parents.append(parent)
    parent = torch.tensor(parents, dtype=torch.long, device=weights.device).reshape(weights.shape[:-1])
    return DependencyTree(parent, parent == -1)


__all__ = ["DependencyTree", "Reversed", "dependency_tree", "reversed_weights"]
