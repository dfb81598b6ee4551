"""The container modules a compiled derivation is made of: ``Sequence`` (one
rule expansion), ``Branch`` (split, arms, merge) and ``Network`` (body plus
task head). Below both the builder and the fusion passes, which rewrite them.
"""
from __future__ import annotations

import torch
from torch import nn

from archgram.grammar.derivation import Derivation


class Sequence(nn.Sequential):
    """The modules of one rule expansion, applied in order."""

    def __init__(self, symbol: str, modules: list[nn.Module]):
        super().__init__(*modules)
        self.symbol = symbol

    def extra_repr(self) -> str:
        return f"<{self.symbol}>"


class Branch(nn.Module):
    """split -> one module per arm -> merge."""

    def __init__(self, split: nn.Module, arms: list[nn.Module], merge: nn.Module):
        super().__init__()
        self.split = split
        self.arms = nn.ModuleList(arms)
        self.merge = merge

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = self.split(x)
        return self.merge([arm(part) for arm, part in zip(self.arms, parts, strict=True)])


class Network(nn.Module):
    """A compiled derivation: the body, plus an optional task head."""

    def __init__(self, body: nn.Module, derivation: Derivation, head: nn.Module | None = None):
        super().__init__()
        self.body = body
        self.head = head if head is not None else nn.Identity()
        self.input_shape = tuple(derivation.input_shape)
        self.output_shape = tuple(derivation.output_shape)
        self.arch_hash = derivation.hash()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
