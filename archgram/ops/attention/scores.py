"""Score functions: how attention logits become weights. One class each."""
from __future__ import annotations

import math

import torch
from torch import nn

from archgram.ops.attention.parts import SCORES, Part


class Score(Part, nn.Module):
    """Default path: logits = scale * q k^T + bias, weights = self.weights(logits), out = weights v.

    Scores that never form the n x n weights (linear attention) override
    ``attend`` and declare in ``check`` which patterns they can honour."""

    def __init__(self, heads: int, **params):
        nn.Module.__init__(self)
        self.heads = heads

    @classmethod
    def check(cls, pattern, causal: bool, params: dict) -> None:
        """Refuse (ShapeError) patterns or parameters this score cannot serve."""

    def attend(self, q, k, v, mask, bias, scale: float, causal: bool = False):
        logits = torch.matmul(q, k.transpose(-1, -2)) * scale
        if bias is not None:
            logits = logits + bias
        return torch.matmul(self.weights(logits, mask), v)

    def weights(self, logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError


def masked_fill_min(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Masked logits at the dtype's minimum (not -inf: a fully masked row stays finite)."""
    if mask is None:
        return logits
    return logits.masked_fill(~mask, torch.finfo(logits.dtype).min)


@SCORES.register
class Softmax(Score):
    """Standard scaled dot-product attention."""

    name = "softmax"

    def weights(self, logits, mask):
        return torch.softmax(masked_fill_min(logits, mask), dim=-1)


@SCORES.register
class Sigmoid(Score):
    """Sigmoid attention (Ramapuram et al., catalog S06): elementwise sigmoid with
    bias b = -log(n), n the number of keys, so row sums start near 1."""

    name = "sigmoid"
    params = ("bias",)
    refs = ("S06",)

    def __init__(self, heads: int, bias: float | None = None):
        super().__init__(heads)
        self.bias = bias

    def weights(self, logits, mask):
        b = -math.log(logits.shape[-1]) if self.bias is None else self.bias
        w = torch.sigmoid(logits + b)
        return w if mask is None else w * mask
