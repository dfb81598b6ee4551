"""Document (variable-length, "varlen") masks: packed documents that never see
each other (catalog row S14, the long-context benchmark's packed-sequence mask).

Long-context training packs documents of different lengths into one sequence
and masks attention to each document (FlashAttention's ``cu_seqlens``,
FlexAttention's document mask); benchmarks draw the lengths at random. An op
receives a tensor, not the data's boundaries, so the boundaries are the op's
own argument: ``document(docs, seed)`` cuts the n tokens into ``docs``
consecutive documents at ``docs - 1`` distinct positions drawn from ``seed``
(one draw per op, the same for every batch, as a benchmark's packed mask is);
``seed=-1`` cuts them evenly. With the op's ``causal`` flag it is the causal
document mask.
"""
from __future__ import annotations

import torch

from archgram.errors import ShapeError
from archgram.ops.attention.parts import PATTERNS
from archgram.ops.attention.patterns import Pattern, require_integers


def document_lengths(n: int, docs: int, seed: int) -> list[int]:
    """Lengths of the ``docs`` documents that tile ``n`` tokens (all >= 1)."""
    if seed == -1:
        return [len(part) for part in torch.arange(n).tensor_split(docs)]
    gen = torch.Generator().manual_seed(seed)
    cuts = sorted((torch.randperm(n - 1, generator=gen)[:docs - 1] + 1).tolist())
    edges = [0, *cuts, n]
    return [b - a for a, b in zip(edges, edges[1:], strict=False)]


@PATTERNS.register
class Document(Pattern):
    """Each query sees the keys of its own document only (block-diagonal mask)."""

    name = "document"
    params = ("docs", "seed")
    refs = ("S14",)
    seed = 0

    def check(self, n, grid):
        super().check(n, grid)
        require_integers(self, "docs")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < -1:
            raise ShapeError(f"pattern 'document': seed must be an integer >= -1, got {self.seed!r}")
        if self.docs > n:
            raise ShapeError(f"pattern 'document': {self.docs} documents do not fit {n} tokens")

    def lengths(self, n: int) -> list[int]:
        return document_lengths(n, self.docs, self.seed)

    def attended_keys(self, n):
        return max(self.lengths(n)) if self.docs <= n else n

    def mask(self, n, grid, device):
        doc = torch.repeat_interleave(torch.arange(self.docs), torch.tensor(self.lengths(n))).to(device)
        return doc[:, None] == doc[None, :]
