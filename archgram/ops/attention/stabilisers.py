"""LayerScale, a stabiliser of attention branches (catalog S06).

Sigmoid attention (Ramapuram et al. 2024, catalog S06) trains only when the
large attention-output norms of early training are tamed. The paper's
remedies and where archgram has them:

- the bias b = -log n inside the score: ``score=sigmoid`` (``scores.Sigmoid``);
- QK-norm (queries and keys normalised before their dot product):
  ``score=sigmoid(qk_norm=true)``;
- hybrid-norm (a norm on the attention output before the residual add):
  written in a grammar as ``layernorm attention(...) layernorm``;
- LayerScale (a learned per-channel scale on the branch output, starting
  small): this op, ``attention(...) layer_scale(1e-4)``.

These are grammar-level choices rather than new ``attention`` arguments: every
argument of a large op costs the sampler one random draw, so a new argument
would shift every seeded derivation of every grammar that uses attention.
"""
from __future__ import annotations

import torch
from torch import nn

from archgram.ops.primitives.computation import _ChannelMap, _ShapePreserving
from archgram.ops.registry import Arg, register_op
from archgram.shapes import Shape, channels


@register_op("layer_scale", family="attention", refs=("S06",),
             args={"init": Arg(float, 1e-4, low=0.0, doc="starting value of every channel's scale")})
class LayerScale(_ShapePreserving, _ChannelMap):
    """x * gamma, gamma a learned per-channel vector starting at ``init`` (Touvron
    et al. 2021), so a residual branch starts near zero and its output norm grows
    only as training asks."""

    @classmethod
    def count_params(cls, shape, /, init=1e-4):
        return channels(shape)

    def __init__(self, shape: Shape, init: float = 1e-4):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((channels(shape),), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_last(self.to_last(x) * self.gamma)
