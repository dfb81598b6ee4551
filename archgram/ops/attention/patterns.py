"""Attention patterns: which keys each query may see. One class each.

A pattern gives a boolean mask (queries x keys) for a token count and, for 2D
patterns, the (H, W) grid the tokens came from. ``check`` refuses shapes the
pattern cannot serve, so the sampler never picks, say, a 2D neighborhood for a
plain sequence.
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

    def __init__(self, **params):
        for key, value in params.items():
            setattr(self, key, value)

    def module(self, heads: int, head_dim: int):
        """An nn.Module with this pattern's learned parts, or None."""
        return None

    def mask_for(self, q, k, grid) -> torch.Tensor | None:
        """(B, H, Nq, Nk) or (Nq, Nk) bool mask computed from the queries and keys."""
        return self.mask(q.shape[-2], grid, q.device)

    def check(self, n: int, grid: tuple[int, int] | None) -> None:
        if self.needs_grid and grid is None:
            raise ShapeError(f"pattern '{self.name}' is 2D: it needs an image (B,C,H,W) input, not a sequence")

    def mask(self, n: int, grid, device) -> torch.Tensor | None:
        """(n, n) bool, True where query i may attend key j; None means all."""
        raise NotImplementedError


@PATTERNS.register
class Full(Pattern):
    name = "full"

    def mask(self, n, grid, device):
        return None


@PATTERNS.register
class Causal(Pattern):
    name = "causal"

    def mask(self, n, grid, device):
        return torch.ones(n, n, dtype=torch.bool, device=device).tril()


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
    """Sliding window: query i sees keys within ``size // 2`` positions (1D)."""

    name = "window"
    params = ("size",)

    def check(self, n, grid):
        if not isinstance(self.size, int) or self.size < 1:
            raise ShapeError(f"window size must be a positive integer, got {self.size!r}")

    def mask(self, n, grid, device):
        i = torch.arange(n, device=device)
        return (i[:, None] - i[None, :]).abs() <= self.size // 2


@PATTERNS.register
class Neighborhood(Pattern):
    """1D (dilated) neighborhood attention, catalog S37."""

    name = "neighborhood"
    params = ("size", "dilation")
    refs = ("S37",)
    dilation = 1

    def check(self, n, grid):
        if self.size < 1 or self.dilation < 1:
            raise ShapeError("neighborhood size and dilation must be positive")

    def mask(self, n, grid, device):
        return _neighborhood_1d(n, self.size, self.dilation, device)


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
