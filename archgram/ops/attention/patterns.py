"""Attention patterns: which keys each query may see. One class each.

A pattern gives a boolean mask (queries x keys) for a token count and, for 2D
patterns, the (H, W) grid the tokens came from. ``check`` refuses shapes the
pattern cannot serve, so the sampler never picks, say, a 2D neighborhood for a
plain sequence.

This module holds the ``Pattern`` base and the local windows (full, causal,
sliding and neighbourhood windows); fixed sparse layouts over a sequence are in
sparse_patterns.py, 2D grid neighbourhoods in grid_patterns.py, content-based
patterns in content.py, combiner.py and sparsifiner.py.
"""
from __future__ import annotations

import torch

from archgram.errors import ShapeError
from archgram.ops.attention.parts import PATTERNS, Part


class Pattern(Part):
    needs_grid = False
    #: Content-based patterns (routing, top-k selection) decide from q and k:
    #: they implement ``mask_for`` and may hold learned weights (``module``).
    data_dependent = False
    #: Set by the op when it also applies a causal mask, so content-based
    #: selection spends its budget on visible (past) keys only.
    causal = False

    def __init__(self, **params):
        for key, value in params.items():
            setattr(self, key, value)

    #: Selector patterns pick keys per query (``select`` -> indices, valid);
    #: the op then gathers those keys instead of masking a dense score matrix.
    gathers = False
    #: Patterns with their own sub-quadratic softmax contraction (``attend``,
    #: Combiner); the op uses it for softmax scores without logit biases.
    factorised = False
    #: Token-compressing patterns (Token Sparse Attention): ``select`` -> (idx, valid)
    #: tokens per head; the op attends among them only and zeroes the other rows.
    compresses = False

    def module(self, heads: int, head_dim: int, tokens: int):
        """An nn.Module with this pattern's learned parts, or None."""
        return None

    def attended_keys(self, n: int) -> int:
        """Keys each query attends to at most, for the FLOP count."""
        return n

    def mask_for(self, q, k, grid) -> torch.Tensor | None:
        """(B, H, Nq, Nk) or (Nq, Nk) bool mask computed from the queries and keys."""
        return self.mask(q.shape[-2], grid, q.device)

    def bias_for(self, q, k, grid) -> torch.Tensor | None:
        """Additive logits (broadcast to (B, H, Nq, Nk)) for patterns that reshape
        weights rather than cut keys (Combiner's block summaries); None for most."""
        return None

    def dense_weights(self, q, k, scale: float) -> torch.Tensor | None:
        """(B, H, Nq, Nk) weights that ``attend`` applies to v, for analysis of a
        factorised pattern whose weights are no single masked softmax (routing's
        per-cluster average, Combiner's block summaries); None where the dense
        mask path says it all."""
        return None

    def check(self, n: int, grid: tuple[int, int] | None) -> None:
        if self.needs_grid and grid is None:
            raise ShapeError(f"pattern '{self.name}' is 2D: it needs an image (B,C,H,W) input, not a sequence")

    def mask(self, n: int, grid, device) -> torch.Tensor | None:
        """(n, n) bool, True where query i may attend key j; None means all."""
        raise NotImplementedError


def require_integers(pattern: Pattern, *names: str, low: int = 1) -> None:
    """Refuse (ShapeError) parameters that are not integers >= ``low``."""
    for key in names:
        value = getattr(pattern, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ShapeError(f"pattern '{pattern.name}': {key} must be an integer >= {low}, got {value!r}")


class HeadSplitPattern(Pattern):
    """A pattern whose mask differs between heads; it learns the head count from
    ``module`` (which the op calls when it builds) and returns (H, N, N)."""

    heads = 1

    def module(self, heads, head_dim, tokens):
        self.heads = heads
        return None


@PATTERNS.register
class Full(Pattern):
    name = "full"

    def mask(self, n, grid, device):
        return None

    def flash(self, n, grid, device):
        return {}


@PATTERNS.register
class Causal(Pattern):
    name = "causal"

    def mask(self, n, grid, device):
        return torch.ones(n, n, dtype=torch.bool, device=device).tril()

    def flash(self, n, grid, device):
        return {"causal": True}


def _neighborhood_1d(n: int, size: int, dilation: int, device) -> torch.Tensor:
    """Neighborhood attention (NAT/DiNAT, catalog S37): each query sees ``size``
    keys of its own dilation group, the window shifted inward at the borders so
    every query keeps ``size`` neighbours (fewer only if the group is shorter)."""
    i = torch.arange(n, device=device)
    group, local = i % dilation, i // dilation
    length = (n - group + dilation - 1) // dilation  # positions in i's dilation group
    start = (local - size // 2).clamp(min=0)
    start = torch.minimum(start, (length - size).clamp(min=0))
    j_local = (torch.arange(n, device=device) // dilation)[None, :]
    same_group = (torch.arange(n, device=device) % dilation)[None, :] == group[:, None]
    return same_group & (j_local >= start[:, None]) & (j_local < (start + size)[:, None])


@PATTERNS.register
class Window(Pattern):
    """Sliding window (Longformer, Beltagy et al. 2020): query i sees keys within
    ``size // 2`` steps. With ``dilation`` d the steps are d tokens apart
    (|i - j| <= d * (size // 2) and d divides i - j): Longformer's dilated window,
    a d-times wider receptive field for the same number of keys."""

    name = "window"
    params = ("size", "dilation")
    dilation = 1

    def check(self, n, grid):
        require_integers(self, "size", "dilation")

    def mask(self, n, grid, device):
        i = torch.arange(n, device=device)
        diff = i[:, None] - i[None, :]
        return (diff.abs() <= self.size // 2 * self.dilation) & (diff % self.dilation == 0)

    def flash(self, n, grid, device):
        return {"window": self.size // 2 * self.dilation, "dilation": self.dilation}


@PATTERNS.register
class Neighborhood(Pattern):
    """1D (dilated) neighborhood attention, catalog S37.

    Fidelity (S37): faithful -- Paper: neighborhood attention (each query sees
    its k nearest keys, the window shifted inward at borders so every query keeps
    k keys) with dilation d (keys d apart, within the query's dilation group),
    1D and 2D, with fused kernels; archgram: neighborhood(k, d) and
    neighborhood2d(k, d) masks with those border rules, a Triton kernel for the
    2D form that visits only the rows it needs; differs: nothing of the pattern.
    """

    name = "neighborhood"
    params = ("size", "dilation")
    refs = ("S37",)
    dilation = 1

    def check(self, n, grid):
        if self.size < 1 or self.dilation < 1:
            raise ShapeError("neighborhood size and dilation must be positive")

    def mask(self, n, grid, device):
        return _neighborhood_1d(n, self.size, self.dilation, device)

    def flash(self, n, grid, device):
        return {"neighborhood": self.size, "dilation": self.dilation}


@PATTERNS.register
class Neighborhood2D(Pattern):
    """2D (dilated) neighborhood attention on the token grid, catalog S37."""

    name = "neighborhood2d"
    params = ("size", "dilation")
    refs = ("S37",)
    needs_grid = True
    dilation = 1

    def check(self, n, grid):
        super().check(n, grid)
        if self.size < 1 or self.dilation < 1:
            raise ShapeError("neighborhood2d size and dilation must be positive")

    def mask(self, n, grid, device):
        h, w = grid
        rows = _neighborhood_1d(h, self.size, self.dilation, device)
        cols = _neighborhood_1d(w, self.size, self.dilation, device)
        # token (r, c) sees (r', c') iff r' is a row neighbour and c' a column neighbour
        return (rows[:, None, :, None] & cols[None, :, None, :]).reshape(h * w, h * w)

    def flash(self, n, grid, device):
        return {"neighborhood": self.size, "dilation": self.dilation, "grid": (int(grid[0]), int(grid[1]))}
