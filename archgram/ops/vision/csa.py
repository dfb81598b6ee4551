"""Class semantics-based attention (Sridhar et al., ICCV 2021, "Class
Semantics-based Attention for Action Detection"; catalog S51).

In an action detector, CSA computes *feature-importance* scores from the
class-semantics-rich features R of the recognition encoder (not from the
encoded features F), independently per channel and per time point, applies
them to F along the channel and the temporal axis, and fuses the two
attention-applied outputs:

  channel   a_c = sigmoid(W_2 relu(W_1 mean_t R))                  (B, 1, C)
  temporal  a_t = sigmoid(conv1d_k([mean_c R ; max_c R]))          (B, T, 1)
            (a local temporal window of k steps decides each time point)
  fuse      y = a_c * F + a_t * F

Input is a sequence (B, T, C) (time = tokens) or an image (time = the H*W
pixels, row-major).

Deviations: as a unary grammar op it has one input, so R = F = x (the paper
feeds R from an earlier layer; in a grammar that is a clone branch). The
paper's text available to us fixes the two axes, the per-channel and
per-time-point scores from R, and the fusion of the two attended outputs; the
internals above (SE-style channel scorer with ``reduction``, a k-tap temporal
conv over channel-pooled statistics, fusion by sum) are our choice.
"""
from __future__ import annotations

import torch
from torch import nn

from archgram.errors import ShapeError
from archgram.ops.registry import Arg, Op, check_rank, register_op
from archgram.ops.vision._common import from_tokens, to_tokens, tokens_of
from archgram.shapes import Shape


@register_op(
    "csa",
    family="vision",
    refs=("S51",),
    args={
        "reduction": Arg(int, 4, low=1, doc="hidden width C // reduction of the channel scorer"),
        "kernel": Arg(int, 3, low=1, doc="temporal window k of the time-point scorer (odd)"),
    },
)
class ClassSemanticsAttention(Op):
    """CSA: per-channel and per-time-point importance scores gate the features; the two gated outputs are summed."""

    def __init__(self, shape: Shape, reduction: int = 4, kernel: int = 3):
        super().__init__()
        self.output_shape(shape, reduction=reduction, kernel=kernel)
        _, c = tokens_of(shape)
        hidden = max(1, c // reduction)
        self.fc1, self.fc2 = nn.Linear(c, hidden), nn.Linear(hidden, c)
        self.temporal = nn.Conv1d(2, 1, kernel, padding=kernel // 2)

    @classmethod
    def output_shape(cls, shape: Shape, reduction: int = 4, kernel: int = 3) -> Shape:
        check_rank("csa", shape, 3, 4)
        if kernel % 2 == 0:
            raise ShapeError(f"csa: the temporal kernel must be odd to keep the {tokens_of(shape)[0]} time points "
                             f"of {shape}, got {kernel}")
        return shape

    @classmethod
    def count_params(cls, shape: Shape, /, reduction: int = 4, kernel: int = 3) -> int:
        _, c = tokens_of(shape)
        hidden = max(1, c // reduction)
        return (c * hidden + hidden) + (hidden * c + c) + (2 * kernel + 1)

    def scores(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(channel scores (B, 1, C), time-point scores (B, T, 1)) of tokens r (B, T, C)."""
        a_c = torch.sigmoid(self.fc2(torch.relu(self.fc1(r.mean(dim=1))))).unsqueeze(1)
        stats = torch.stack([r.mean(dim=2), r.amax(dim=2)], dim=1)  # (B, 2, T)
        a_t = torch.sigmoid(self.temporal(stats)).transpose(1, 2)  # (B, T, 1)
        return a_c, a_t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = to_tokens(x)
        a_c, a_t = self.scores(f)
        return from_tokens(a_c * f + a_t * f, x)
