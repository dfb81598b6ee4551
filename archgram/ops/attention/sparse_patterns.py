"""Fixed sparse layouts over a sequence: block-sparse layouts (Sparse
Transformer, BigBird) and shifted sparse groups with sink tokens (SinkLoRA, S52).
"""
from __future__ import annotations

import torch

from archgram.errors import ShapeError
from archgram.ops.attention.parts import PATTERNS
from archgram.ops.attention.patterns import HeadSplitPattern, Pattern, require_integers
from archgram.registry import Registry


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
BLOCK_LAYOUTS: Registry = Registry("block_sparse layout", error=ShapeError, entries={
    # sliding blocks: own block and its neighbours (BigBird's window part)
    "local": lambda r, s, nb: (r - s).abs() <= 1,
    # own block plus a first block that sees and is seen by everything (ETC/BigBird global)
    "global": lambda r, s, nb: (r == s) | (r == 0) | (s == 0),
    # own block plus every stride-th block, stride ~ sqrt(blocks) (Sparse Transformer, strided)
    "strided": _strided_blocks,
    # BigBird: local + global + one fixed random block per query block
    "bigbird": lambda r, s, nb: (r - s).abs().le(1) | (r == 0) | (s == 0) | _bigbird_random(nb, r.device),
})


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
        require_integers(self, "block")
        BLOCK_LAYOUTS.get(self.pattern)  # ShapeError naming the closest layout

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


@PATTERNS.register
class ShiftedSparse(HeadSplitPattern):
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
        require_integers(self, "group", low=2)
        require_integers(self, "sinks", low=0)

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
