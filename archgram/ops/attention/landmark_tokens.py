"""Landmark tokens carried through the layers (Mohtashami & Jaggi 2023, "Random-Access
Infinite Context Length for Transformers"; catalog S41).

The paper inserts a landmark token after every block of the input and keeps it
in the sequence through all layers, so each landmark's state (and so its key,
the block's retrieval key) deepens with depth. Three grammar parts give that:

  landmark_insert(block)     (B, N, D) -> (B, N + ceil(N / block), D): a learned
                             landmark embedding after every block of tokens
  attention(pattern=landmark_tokens(block, top_k))
                             the grouped softmax of ``landmark``, with block b's
                             gate logit read from its landmark token's key
  landmark_drop(block)       removes the landmark positions again

Layout: groups of ``block`` tokens each followed by their landmark (the last
group may be shorter). A query attends its own group normally; a token j of
another group b gets p(landmark_b | i) * softmax_{j' in b}(q_i . k_j'), where
p(landmark_b | i) comes from the one softmax over the own group's keys and the
other groups' landmark keys; a far landmark's value is never read. In eval mode
a query keeps its own group plus the ``top_k`` groups of highest landmark score.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from archgram.errors import ShapeError
from archgram.ops.attention.content import Landmark
from archgram.ops.attention.parts import PATTERNS
from archgram.ops.registry import Arg, Op, check_rank, register_op
from archgram.shapes import Shape, fmt


def landmark_positions(n_total: int, block: int, device=None) -> torch.Tensor:
    """(n_total,) bool: True at the landmark positions of a sequence laid out as
    groups of ``block`` tokens, each followed by its landmark."""
    p = torch.arange(n_total, device=device)
    return (p % (block + 1) == block) | (p == n_total - 1)


def tokens_without_landmarks(n_total: int, block: int) -> int:
    return n_total - -(-n_total // (block + 1))


@PATTERNS.register
class LandmarkTokens(Landmark):
    """Landmark attention over a sequence that carries its landmark tokens."""

    name = "landmark_tokens"
    params = ("block", "top_k")
    refs = ("S41",)

    def check(self, n, grid):
        super().check(n, grid)
        if grid is not None:
            raise ShapeError("pattern 'landmark_tokens' runs on sequences that carry landmark tokens (landmark_insert)")

    def module(self, heads, head_dim, tokens):
        self.landmarks = nn.Module()  # no weights: it follows the op's train/eval mode
        return self.landmarks

    def _blocks(self, n: int, device) -> tuple[torch.Tensor, int]:
        groups = torch.arange(n, device=device) // (self.block + 1)
        return groups, int(groups[-1]) + 1

    def landmark_logits(self, q, k) -> torch.Tensor:
        """(B, H, N, groups): q_i . the key of group b's landmark token, scaled."""
        keys = k[..., landmark_positions(k.shape[-2], self.block, k.device), :]
        return q @ keys.transpose(-1, -2) / math.sqrt(q.shape[-1])

    def bias_for(self, q, k, grid):
        """Far token j of group b: s_b - lse over b's tokens; far landmarks: -inf (never read)."""
        n = q.shape[-2]
        groups, ng = self._blocks(n, q.device)
        landmark = landmark_positions(n, self.block, q.device)
        logits = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).masked_fill(landmark, float("-inf"))
        pad = ng * (self.block + 1) - n
        grouped = torch.nn.functional.pad(logits, (0, pad), value=float("-inf")).unflatten(-1, (ng, self.block + 1))
        lse = torch.logsumexp(grouped, -1)  # (B, H, N, groups) over each group's tokens, landmark excluded
        far = (self.landmark_logits(q, k) - lse)[..., groups]
        far = far.masked_fill(landmark, float("-inf"))
        own = groups[:, None] == groups[None, :]
        return far.masked_fill(own, 0.0)


@register_op("landmark_insert", family="attention", refs=("S41",),
             args={"block": Arg(int, 8, low=1, doc="tokens per block; a landmark follows each")})
class LandmarkInsert(Op):
    """A learned landmark token after every block of tokens (sequence grows by ceil(N / block))."""

    def __init__(self, shape: Shape, block: int = 8):
        super().__init__()
        self.output_shape(shape, block=block)
        self.block = block
        self.embedding = nn.Parameter(torch.randn(shape[-1]) * shape[-1] ** -0.5)

    @classmethod
    def output_shape(cls, shape: Shape, block: int = 8) -> Shape:
        check_rank("landmark_insert", shape, 3)
        b, n, d = shape
        return (b, n + -(-n // block), d)

    @classmethod
    def count_params(cls, shape: Shape, /, block: int = 8) -> int:
        return shape[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        out = x.new_empty(b, n + -(-n // self.block), d)
        landmark = landmark_positions(out.shape[1], self.block, x.device)
        out[:, ~landmark] = x
        out[:, landmark] = self.embedding.to(x.dtype)
        return out


@register_op("landmark_drop", family="attention", refs=("S41",),
             args={"block": Arg(int, 8, low=1, doc="the block of the landmark_insert this undoes")})
class LandmarkDrop(Op):
    """Removes the landmark tokens that landmark_insert(block) placed."""

    def __init__(self, shape: Shape, block: int = 8):
        super().__init__()
        self.output_shape(shape, block=block)
        self.block = block

    @classmethod
    def output_shape(cls, shape: Shape, block: int = 8) -> Shape:
        check_rank("landmark_drop", shape, 3)
        b, n, d = shape
        if n < 2 or n % (block + 1) == 1:
            raise ShapeError(f"landmark_drop: {fmt(shape)} is not a sequence with a landmark after every {block} tokens")
        return (b, tokens_without_landmarks(n, block), d)

    @classmethod
    def count_params(cls, shape: Shape, /, block: int = 8) -> int:
        return 0

    @classmethod
    def flops(cls, shape: Shape, out: Shape, params: int, /, **args) -> int:
        return 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, ~landmark_positions(x.shape[1], self.block, x.device)]
