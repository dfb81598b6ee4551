"""2D patterns on the token grid of an image: axial rows and columns (S61),
CSWin-style strips, HaloNet blocks (S72) and CLEAR's circular windows (S77).
Most are fixed neighbourhoods that the op gathers per query (``GridPattern``).
"""
from __future__ import annotations

import math

import torch

from archgram.errors import ShapeError
from archgram.ops.attention.parts import PATTERNS
from archgram.ops.attention.patterns import HeadSplitPattern, Pattern, require_integers


def _side(n: int) -> int:
    """Side of the square grid of n pixels (rounded up): the FLOP rule's grid estimate."""
    return math.isqrt(n - 1) + 1 if n > 1 else 1


def _grid_coords(n: int, grid, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column of each of the n = H * W row-major tokens."""
    _, w = grid
    i = torch.arange(n, device=device)
    return i // w, i % w


class GridPattern(Pattern):
    """A fixed 2D neighbourhood per pixel (axial, halo, circular). Its key set
    depends on positions only, so the op gathers it (``gathers``): each query
    reads its own keys, the attention core costs O(N k d) for k keys per query
    and no N x N logits exist; scores with their own contraction, and positions
    that reweight the map, use the dense ``mask`` instead (same outputs)."""

    needs_grid = True
    gathers = True

    def select(self, q, k, grid) -> tuple[torch.Tensor, torch.Tensor]:
        """(idx, valid), both (B, H, N, k): each query's keys, padded (valid False)
        to the largest neighbourhood; under a causal mask later keys are invalid."""
        n = q.shape[-2]
        idx, valid = self._neighbours(n, tuple(grid), q.device)
        if self.causal:
            valid = valid & (idx <= torch.arange(n, device=q.device)[:, None])
        shape = (q.shape[0], q.shape[1], *idx.shape)
        return idx.expand(shape), valid.expand(shape)

    def _neighbours(self, n: int, grid: tuple[int, int], device) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, k) key indices (True entries of the mask row first, in key order) and
        their validity, computed once per grid and device."""
        cache = self.__dict__.setdefault("_cache", {})
        key = (n, grid, str(device))
        if key not in cache:
            mask = self.mask(n, grid, device)
            width = int(mask.sum(-1).max())
            order = torch.sort(mask.to(torch.int8), dim=-1, descending=True, stable=True).indices[:, :width]
            cache[key] = (order, mask.gather(-1, order))
        return cache[key]

    def mask(self, n, grid, device):
        rows, cols = _grid_coords(n, grid, device)
        return self.relate(rows[:, None], cols[:, None], rows[None, :], cols[None, :])

    def relate(self, r, c, r2, c2) -> torch.Tensor:
        """Whether the query at (r, c) may see the key at (r2, c2) (broadcast)."""
        raise NotImplementedError


@PATTERNS.register
class AxialRow(GridPattern):
    """Axial attention along rows (Ho et al. 2019, Axial Attention in
    Multidimensional Transformers): each pixel sees its own row. The paper reaches
    the whole image by stacking a row layer and a column layer, which a grammar
    does with ``axial_row`` then ``axial_col``.

    Paper's defining mechanism (S61, for ``axial_row``, ``axial_col``, ``axial``):
    self-attention along one axis of a multi-dimensional tensor at a time, so a
    layer costs O(N sqrt(N)) on an image instead of O(N^2), and stacked row and
    column layers reach every pixel.
    What archgram does: the row, the column, or both at once (``axial``) as a
    pattern; the op gathers each pixel's row/column keys (``GridPattern``), so
    the core costs N * W (N * (H + W - 1) for ``axial``) and no N x N logits exist.
    What differs: the Axial Transformer's autoregressive model (masked column
    and row decoders with shifts) is an architecture, left to grammars;
    ``causal`` masks in raster order."""

    name = "axial_row"
    refs = ("S61",)

    def attended_keys(self, n):
        return _side(n)  # a row of a square grid (the FLOP rule sees N only)

    def relate(self, r, c, r2, c2):
        return r == r2


@PATTERNS.register
class AxialCol(GridPattern):
    """Axial attention along columns (Ho et al. 2019): each pixel sees its own column."""

    name = "axial_col"
    refs = ("S61",)

    def attended_keys(self, n):
        return _side(n)

    def relate(self, r, c, r2, c2):
        return c == c2


@PATTERNS.register
class Axial(GridPattern):
    """Both axes in one pass: a pixel sees its row and its column (the criss-cross
    union). Not the paper's sequential row-then-column form (that is two stacked
    ops, ``axial_row`` and ``axial_col``) but the same keys in one softmax."""

    name = "axial"
    refs = ("S61",)

    def attended_keys(self, n):
        return min(n, 2 * _side(n) - 1)

    def relate(self, r, c, r2, c2):
        return (r == r2) | (c == c2)


@PATTERNS.register
class Strip(HeadSplitPattern):
    """Strip (stripe) attention on the grid: rows fall into horizontal strips of
    ``width`` rows and columns into vertical strips of ``width`` columns; the first
    half of the heads attend within their horizontal strip, the rest within their
    vertical strip (CSWin's cross-shaped split; one head sees the union).

    Catalog S43's Strip Self-Attention (S2AFormer, Xu et al. 2025) is a different
    mechanism -- keys/values spatially reduced by a depth-wise conv, queries/keys
    channel-compressed -- which changes the key count and belongs in a layout,
    not a mask; so this part does not claim S43."""

    name = "strip"
    params = ("width",)
    needs_grid = True

    def check(self, n, grid):
        super().check(n, grid)
        require_integers(self, "width")

    def mask(self, n, grid, device):
        rows, cols = _grid_coords(n, grid, device)
        rows, cols = rows // self.width, cols // self.width
        horizontal = rows[:, None] == rows[None, :]
        vertical = cols[:, None] == cols[None, :]
        if self.heads == 1:
            return horizontal | vertical
        split = (self.heads + 1) // 2
        return torch.stack([horizontal] * split + [vertical] * (self.heads - split))


@PATTERNS.register
class Halo(GridPattern):
    """Blocked local attention with halo (HaloNet, Vaswani et al. 2021): the grid is
    cut into ``block`` x ``block`` query blocks and every query of a block sees the
    (block + 2 halo)^2 neighbourhood around its block. HaloNet zero-pads that
    neighbourhood at the image border; here the padding keys are dropped instead
    (a mask cannot attend to a token that does not exist).

    Paper's defining mechanism (S72): blocked local self-attention -- queries in
    a block share one neighbourhood of the block plus a halo -- at a cost linear
    in the number of pixels, with relative position logits.
    What archgram does: that neighbourhood, gathered per query (each reads the
    (block + 2 halo)^2 keys of its block), so the core grows linearly with the
    image; relative positions come from the position axis.
    What differs: border queries read fewer keys instead of zero-padded ones."""

    name = "halo"
    params = ("block", "halo")
    refs = ("S72",)
    halo = 1

    def attended_keys(self, n):
        return min(n, (self.block + 2 * self.halo) ** 2)

    def check(self, n, grid):
        super().check(n, grid)
        require_integers(self, "block")
        require_integers(self, "halo", low=0)

    def relate(self, r, c, r2, c2):
        b, h = self.block, self.halo
        top, left = r // b * b, c // b * b
        return (r2 >= top - h) & (r2 < top + b + h) & (c2 >= left - h) & (c2 < left + b + h)


@PATTERNS.register
class Circular(GridPattern):
    """CLEAR's conv-like local attention (Liu, Tan, Wang 2024): each query sees the
    keys inside a circle of Euclidean ``radius`` around it on the grid -- a round
    window rather than a square one, which the paper finds matters for
    linearising pre-trained diffusion transformers.

    Paper's defining mechanism (S77): each query attends only to keys within a
    circular (Euclidean) window around it, making attention linear in the number
    of tokens; pre-trained DiTs are converted to it by distillation and
    fine-tuning.
    What archgram does: the circular window, gathered per query, so the core
    grows linearly with the image.
    What differs: the conversion recipe for pre-trained models is not part of
    an op (archgram trains searched models from scratch)."""

    name = "circular"
    params = ("radius",)
    refs = ("S77",)

    def attended_keys(self, n):
        r = int(math.floor(self.radius))
        d = torch.arange(-r, r + 1)
        return min(n, int(((d[:, None] ** 2 + d[None, :] ** 2) <= self.radius**2).sum()))

    def check(self, n, grid):
        super().check(n, grid)
        if isinstance(self.radius, bool) or not isinstance(self.radius, (int, float)) or self.radius <= 0:
            raise ShapeError(f"pattern 'circular': radius must be a positive number, got {self.radius!r}")

    def relate(self, r, c, r2, c2):
        return (r - r2) ** 2 + (c - c2) ** 2 <= self.radius**2
