"""Head layouts: how the input is projected into query/key/value heads and back."""
from __future__ import annotations

import torch
from torch import nn

from archgram.errors import ShapeError
from archgram.ops.attention.parts import LAYOUTS, Part


class Layout(Part, nn.Module):
    """Projections for ``heads`` query heads and ``kv_heads`` key/value heads."""

    @classmethod
    def kv_heads(cls, heads: int, kv_heads: int) -> int:
        return heads

    @classmethod
    def check(cls, dim: int, heads: int, kv_heads: int, head_dim: int) -> None:
        kv = cls.kv_heads(heads, kv_heads)
        if kv < 1 or heads % kv:
            raise ShapeError(f"layout '{cls.name}': {kv} key/value heads must divide {heads} query heads")

    def __init__(self, dim: int, heads: int, kv_heads: int, head_dim: int):
        nn.Module.__init__(self)
        self.heads, self.kv, self.head_dim = heads, self.kv_heads(heads, kv_heads), head_dim
        self.q = nn.Linear(dim, heads * head_dim)
        self.k = nn.Linear(dim, self.kv * head_dim)
        self.v = nn.Linear(dim, self.kv * head_dim)
        self.o = nn.Linear(heads * head_dim, dim)

    def split(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, heads, self.head_dim).transpose(1, 2)

    def qkv(self, x: torch.Tensor):
        q = self.split(self.q(x), self.heads)
        k = self.split(self.k(x), self.kv)
        v = self.split(self.v(x), self.kv)
        return q, k, v

    def expand(self, kv: torch.Tensor) -> torch.Tensor:
        """Repeat each key/value head for the query heads that share it."""
        return kv.repeat_interleave(self.heads // self.kv, dim=1) if self.kv != self.heads else kv

    def out(self, o: torch.Tensor) -> torch.Tensor:
        b, h, n, d = o.shape
        return self.o(o.transpose(1, 2).reshape(b, n, h * d))


@LAYOUTS.register
class MHA(Layout):
    """Multi-head attention: one key/value head per query head."""

    name = "mha"


@LAYOUTS.register
class GQA(Layout):
    """Grouped-query attention: ``kv_heads`` key/value heads shared by groups of query heads."""

    name = "gqa"

    @classmethod
    def kv_heads(cls, heads, kv_heads):
        return kv_heads or heads


@LAYOUTS.register
class MQA(Layout):
    """Multi-query attention: one key/value head for all query heads."""

    name = "mqa"

    @classmethod
    def kv_heads(cls, heads, kv_heads):
        return 1
