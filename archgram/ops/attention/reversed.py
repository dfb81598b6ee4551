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

The gate g_{h,i} = p_{h,i} m_i combines the paper's two controls:
  * head selector p: softmax over heads (temperature 0.1, the paper's appendix)
    -- each child sends through the heads it picks;
  * message controller m = sigmoid(.) in (0, 1) -- how much a child sends at all
    (the paper prunes leaves that send little: DependencyViT-Lite).

Deviations: the paper computes p and m from the layer input x (a linear map and
an MLP); a score part sees only q, k, v, so both read the queries (p: one linear
score per head from that head's query; m: a linear map of the queries of all
heads). The paper multiplies m across layers (a cumulative controller); one op
has no memory of earlier layers, so m is per layer. The gates start uniform
(p = 1/H, m = 1/2).
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


@SCORES.register
class Reversed(Score):
    """Reversed attention (DependencyViT, catalog S47): children choose parents,
    parents receive; gated by a head selector and a message controller (see the
    module docstring). Refuses causal masks: a child sending to an earlier parent
    means an earlier token receives a later token's value.

    Fidelity. Paper: transposed (child -> parent) attention with a head selector
    and a cumulative message controller computed from x, and a tree read from
    the parents. archgram: the transposed map and both gates, from the queries.
    Differs: gates read q (a score sees only q, k, v) and the controller is per
    layer, not multiplied across layers."""

    name = "reversed"
    params = ("temperature",)
    refs = ("S47",)

    def __init__(self, heads: int, head_dim: int, temperature: float = 0.1):
        super().__init__(heads)
        self.temperature = float(temperature)
        self.selector_weight = nn.Parameter(torch.zeros(heads, head_dim))
        self.selector_bias = nn.Parameter(torch.zeros(heads))
        self.controller_weight = nn.Parameter(torch.zeros(heads, head_dim))
        self.controller_bias = nn.Parameter(torch.zeros(()))

    takes_head_dim = True

    @classmethod
    def check(cls, pattern, causal, params):
        t = params.get("temperature", 0.1)
        if isinstance(t, bool) or not isinstance(t, (int, float)) or t <= 0:
            raise ShapeError(f"score 'reversed': temperature must be a positive number, got {t!r}")
        if causal or getattr(pattern, "name", "") == "causal":
            raise ShapeError("score 'reversed': children send to parents, which under a causal mask "
                             "leaks later tokens into earlier ones; use a non-causal pattern")

    def gate(self, q: torch.Tensor) -> torch.Tensor:
        """g = p * m, (B, H, N): head selector (softmax over heads) times message controller."""
        select = torch.einsum("bhnd,hd->bhn", q, self.selector_weight) + self.selector_bias[:, None]
        p = torch.softmax(select / self.temperature, dim=1)
        m = torch.sigmoid(torch.einsum("bhnd,hd->bn", q, self.controller_weight) + self.controller_bias)
        return p * m[:, None, :]

    def weights(self, logits, mask):
        """The ungated reversed matrix (columns sum to 1); ``attend`` adds the gates."""
        return reversed_weights(logits, mask)

    def attend(self, q, k, v, mask, bias, scale, causal=False):
        logits = self.logits(q, k, scale)
        if bias is not None:
            logits = logits + bias
        return torch.matmul(reversed_weights(logits, mask, self.gate(q)), v)


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
