"""PrFlashAttention (Li 2024, 'The Nature of Mathematical Modeling and
Probabilistic Optimization Engineering in Generative AI', catalog S67).

The paper tiles the causal attention matrix into blocks, as FlashAttention
does, and lets a probability distribution over *block distances* decide which
blocks take part in a round of attention, keeping the lower-triangular shape
for autoregressive models. Only the abstract could be read; it names the
mechanism but neither the distribution nor how a draw is shared. Our choices,
each the natural one:

* key block j takes part for query block i (j <= i) with probability
  p(d) = (d + 1)^(-decay), d = i - j: the harmonic series of the paper's own
  RoPE + ALiBi slopes at ``decay=1``; the diagonal block always (p(0) = 1);
  blocks above the diagonal never, and inside the diagonal block the token
  causal triangle holds;
* blocks are drawn independently, one layout per round (forward call), shared
  by the batch and the heads as a FlashAttention block mask is;
* ``seed`` None draws each round from torch's global generator (seeded runs
  stay reproducible); an integer fixes the layout, for deterministic inference.

A query block at row r then attends E[r] = sum_{d<=r} (d + 1)^(-decay) key
blocks: ln(r) + 0.58 at decay 1, so a sequence of n tokens costs O(n log n)
instead of O(n^2); decay 0 keeps every block (exact causal attention).
On GPU the op hands the round's layout to the flash kernels as their block
mask (the kernels skip the other blocks); elsewhere it gathers each query's
chosen keys (the "re-shaping": compact (queries x chosen keys) tensors, no
n x n logits).
"""
from __future__ import annotations

import math

import torch

from archgram.errors import ShapeError
from archgram.ops.attention.parts import PATTERNS
from archgram.ops.attention.patterns import Pattern


def participation(distance: torch.Tensor, decay: float) -> torch.Tensor:
    """p(d) = (d + 1)^(-decay) for block distances d >= 0, 0 for d < 0 (above the diagonal)."""
    d = distance.to(torch.float64)
    return torch.where(d >= 0, (d.clamp(min=0) + 1) ** -float(decay), torch.zeros((), dtype=torch.float64))


def expected_blocks(row: int, decay: float) -> float:
    """Expected number of key blocks query block ``row`` (0-based) attends to."""
    return float(participation(torch.arange(row + 1), decay).sum())


@PATTERNS.register
class PrFlash(Pattern):
    """Causal blocks chosen at random by block distance, p(d) = (d + 1)^-decay (S67)."""

    name = "pr_flash"
    params = ("block", "decay", "seed")
    refs = ("S67",)
    block = 64
    decay = 1.0
    seed = None
    gathers = True
    #: The mask is causal by construction (read by scores that need causal order).
    always_causal = True

    def check(self, n, grid):
        if isinstance(self.block, bool) or not isinstance(self.block, int) or self.block < 1:
            raise ShapeError(f"pattern 'pr_flash': block must be an integer >= 1, got {self.block!r}")
        if isinstance(self.decay, bool) or not isinstance(self.decay, (int, float)) or self.decay < 0:
            raise ShapeError(f"pattern 'pr_flash': decay must be a number >= 0, got {self.decay!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ShapeError(f"pattern 'pr_flash': seed must be an integer or absent, got {self.seed!r}")

    def blocks(self, n: int) -> int:
        return -(-n // self.block)

    def draw(self, nb: int, device) -> torch.Tensor:
        """A round's (nb, nb) block layout: True where the key block takes part."""
        rows = torch.arange(nb)
        p = participation(rows[:, None] - rows[None, :], self.decay)
        generator = None if self.seed is None else torch.Generator().manual_seed(self.seed)
        layout = (torch.rand(nb, nb, generator=generator, dtype=torch.float64) < p).to(device)
        self._round = layout  # the op asks ``mask`` and then ``flash`` within one forward
        return layout

    def mask(self, n, grid, device):
        layout = self.draw(self.blocks(n), device)
        tokens = torch.arange(n, device=device) // self.block
        causal = torch.ones(n, n, dtype=torch.bool, device=device).tril()
        return layout[tokens][:, tokens] & causal

    def select(self, q, k, grid) -> tuple[torch.Tensor, torch.Tensor]:
        """(idx, valid), both (B, H, N, width): each query's keys in the round's
        blocks, padded (valid False) to the longest row."""
        n = q.shape[-2]
        mask = self.mask(n, grid, q.device)
        self._round = None  # a gathered round is never handed to the kernels
        if torch.compiler.is_exporting():  # the width must not depend on the draw: every key, the mask as validity
            order, valid = torch.arange(n, device=q.device).expand(n, n), mask
        else:
            width = max(int(mask.sum(-1).max()), 1)
            order = torch.sort(mask.to(torch.int8), dim=-1, descending=True, stable=True).indices[:, :width]
            valid = mask.gather(-1, order)
        shape = (q.shape[0], q.shape[1], n, order.shape[-1])
        return order.expand(shape), valid.expand(shape)

    def flash(self, n, grid, device):
        """The round's layout as the kernels' block mask: the one ``mask`` drew in this
        forward (the op's dense path asks ``mask`` first), else a fresh draw (the
        op asks the kernels before gathering)."""
        nb = self.blocks(n)
        layout, self._round = getattr(self, "_round", None), None
        if layout is None or layout.shape[0] != nb:
            layout = self.draw(nb, device)
            self._round = None
        return {"block_mask": layout.to(device), "block": (self.block, self.block), "causal": True}

    def attended_keys(self, n: int) -> int:
        """Expected keys of the last query block: block * E[nb - 1] (at most n)."""
        return min(n, math.ceil(self.block * expected_blocks(self.blocks(n) - 1, self.decay)))
