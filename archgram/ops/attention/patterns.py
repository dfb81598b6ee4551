"""Attention patterns: which keys each query may see. One class each.

A pattern gives a boolean mask (queries x keys) for a token count and, for 2D
patterns, the (H, W) grid the tokens came from. ``check`` refuses shapes the
pattern cannot serve, so the sampler never picks, say, a 2D neighborhood for a
plain sequence.
"""
from __future__ import annotations

import math

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

    def check(self, n: int, grid: tuple[int, int] | None) -> None:
        if self.needs_grid and grid is None:
            raise ShapeError(f"pattern '{self.name}' is 2D: it needs an image (B,C,H,W) input, not a sequence")

    def mask(self, n: int, grid, device) -> torch.Tensor | None:
        """(n, n) bool, True where query i may attend key j; None means all."""
        raise NotImplementedError


def _integers(pattern: Pattern, *names: str, low: int = 1) -> None:
    """Refuse (ShapeError) parameters that are not integers >= ``low``."""
    for key in names:
        value = getattr(pattern, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ShapeError(f"pattern '{pattern.name}': {key} must be an integer >= {low}, got {value!r}")


def _side(n: int) -> int:
    """Side of the square grid of n pixels (rounded up): the FLOP rule's grid estimate."""
    return math.isqrt(n - 1) + 1 if n > 1 else 1


def _grid_coords(n: int, grid, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column of each of the n = H * W row-major tokens."""
    _, w = grid
    i = torch.arange(n, device=device)
    return i // w, i % w


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
        _integers(self, "size", "dilation")

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


def _bigbird_random(nb: int, device, count: int = 1, seed: int = 0) -> torch.Tensor:
    """``count`` random key blocks per query block, fixed by ``seed`` so a built
    model's mask never changes between calls (BigBird samples once per layer)."""
    gen = torch.Generator().manual_seed(seed)
    picks = torch.rand(nb, nb, generator=gen).argsort(-1)[:, :count]
    return torch.zeros(nb, nb, dtype=torch.bool).scatter(1, picks, True).to(device)


def _strided_blocks(r: torch.Tensor, s: torch.Tensor, nb: int) -> torch.Tensor:
    stride = max(2, round(nb**0.5))
    return (r - s) % stride == 0


#: Block layouts for ``block_sparse``: (query block r, key block s, block count) -> bool.
BLOCK_LAYOUTS = {
    # sliding blocks: own block and its neighbours (BigBird's window part)
    "local": lambda r, s, nb: (r - s).abs() <= 1,
    # own block plus a first block that sees and is seen by everything (ETC/BigBird global)
    "global": lambda r, s, nb: (r == s) | (r == 0) | (s == 0),
    # own block plus every stride-th block, stride ~ sqrt(blocks) (Sparse Transformer, strided)
    "strided": _strided_blocks,
    # BigBird: local + global + one fixed random block per query block
    "bigbird": lambda r, s, nb: (r - s).abs().le(1) | (r == 0) | (s == 0) | _bigbird_random(nb, r.device),
}


@PATTERNS.register
class BlockSparse(Pattern):
    """Block-sparse attention from a fixed block layout (Sparse Transformer, Child et
    al. 2019; BigBird, Zaheer et al. 2020): tokens fall into blocks of ``block``
    and a (blocks x blocks) layout from BLOCK_LAYOUTS decides which key blocks a
    query block sees. The layout is the unit a block-sparse kernel skips."""

    name = "block_sparse"
    params = ("block", "pattern")
    pattern = "local"

    def check(self, n, grid):
        _integers(self, "block")
        if self.pattern not in BLOCK_LAYOUTS:
            raise ShapeError(f"block_sparse layout '{self.pattern}' is unknown; known: {', '.join(BLOCK_LAYOUTS)}")

    def layout(self, nb: int, device) -> torch.Tensor:
        r = torch.arange(nb, device=device)
        return BLOCK_LAYOUTS[self.pattern](r[:, None], r[None, :], nb)

    def mask(self, n, grid, device):
        blocks = torch.arange(n, device=device) // self.block
        layout = self.layout(int(blocks[-1]) + 1, device)
        return layout[blocks][:, blocks]

    def flash(self, n, grid, device):
        """The block layout as the kernel's block mask; None when a query block sees
        no key block (the op's softmax gives such rows uniform weights, the kernel zeros)."""
        layout = self.layout(-(-n // self.block), device)
        if not bool(layout.diagonal().all()):
            return None
        return {"block_mask": layout, "block": (self.block, self.block)}


class _GridPattern(Pattern):
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
class AxialRow(_GridPattern):
    """Axial attention along rows (Ho et al. 2019, Axial Attention in
    Multidimensional Transformers): each pixel sees its own row. The paper reaches
    the whole image by stacking a row layer and a column layer, which a grammar
    does with ``axial_row`` then ``axial_col``.

    Paper's defining mechanism (S61, for ``axial_row``, ``axial_col``, ``axial``):
    self-attention along one axis of a multi-dimensional tensor at a time, so a
    layer costs O(N sqrt(N)) on an image instead of O(N^2), and stacked row and
    column layers reach every pixel.
    What archgram does: the row, the column, or both at once (``axial``) as a
    pattern; the op gathers each pixel's row/column keys (``_GridPattern``), so
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
class AxialCol(_GridPattern):
    """Axial attention along columns (Ho et al. 2019): each pixel sees its own column."""

    name = "axial_col"
    refs = ("S61",)

    def attended_keys(self, n):
        return _side(n)

    def relate(self, r, c, r2, c2):
        return c == c2


@PATTERNS.register
class Axial(_GridPattern):
    """Both axes in one pass: a pixel sees its row and its column (the criss-cross
    union). Not the paper's sequential row-then-column form (that is two stacked
    ops, ``axial_row`` and ``axial_col``) but the same keys in one softmax."""

    name = "axial"
    refs = ("S61",)

    def attended_keys(self, n):
        return min(n, 2 * _side(n) - 1)

    def relate(self, r, c, r2, c2):
        return (r == r2) | (c == c2)


class _HeadSplitPattern(Pattern):
    """A pattern whose mask differs between heads; it learns the head count from
    ``module`` (which the op calls when it builds) and returns (H, N, N)."""

    heads = 1

    def module(self, heads, head_dim, tokens):
        self.heads = heads
        return None


@PATTERNS.register
class Strip(_HeadSplitPattern):
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
        _integers(self, "width")

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
class Halo(_GridPattern):
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
        _integers(self, "block")
        _integers(self, "halo", low=0)

    def relate(self, r, c, r2, c2):
        b, h = self.block, self.halo
        top, left = r // b * b, c // b * b
        return (r2 >= top - h) & (r2 < top + b + h) & (c2 >= left - h) & (c2 < left + b + h)


@PATTERNS.register
class Circular(_GridPattern):
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


@PATTERNS.register
class ShiftedSparse(_HeadSplitPattern):
    """Shifted sparse attention with sink tokens (SinkLoRA, Zhang 2024, building on
    LongLoRA's S2-Attn, Chen et al. 2023). Tokens fall into groups of ``group``;
    the first half of the heads attend within their group, the second half within
    groups shifted by group / 2, so information crosses group borders; the first
    ``sinks`` tokens are visible to every query (attention sinks, global keys).

    LongLoRA shifts cyclically, which joins the last and first half-groups into
    one group (``cyclic=True``); SinkLoRA's SF-Attn undoes that wrap, so by
    default the two edge half-groups stay apart. One head: unshifted groups only.

    Fidelity (S52). Paper: S2-Attn with the shift's wrap undone (SF-Attn) plus
    global sink tokens, for long-context fine-tuning; also H2O KV-cache
    compression at inference. archgram: the SF-Attn mask with sinks. Differs: the
    H2O cache eviction is a decoding-time cache policy, not this mask."""

    name = "shifted_sparse"
    params = ("group", "sinks", "cyclic")
    refs = ("S52",)
    sinks = 0
    cyclic = False

    def check(self, n, grid):
        _integers(self, "group", low=2)
        _integers(self, "sinks", low=0)

    def mask(self, n, grid, device):
        i = torch.arange(n, device=device)
        half = self.group // 2
        plain = i // self.group
        shifted = ((i - half) % n if self.cyclic else i + half) // self.group
        heads = [plain] * max(1, self.heads - self.heads // 2) + [shifted] * (self.heads // 2)
        ids = torch.stack(heads)  # (H, N)
        mask = ids[:, :, None] == ids[:, None, :]
        mask[..., : self.sinks] = True
        return mask
