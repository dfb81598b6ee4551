"""Class semantics-based attention (Sridhar et al., ICCV 2021, "Class
Semantics-based Attention for Action Detection"; catalog S51).

Paper's defining mechanism: an action detector has a recognition encoder whose
features R are rich in class semantics, and a localization encoder that turns R
into encoded features F. CSA learns *feature-importance* scores from R (not
from F), independently per channel and per time point, applies them to F along
the channel and the temporal axis, and fuses the two attention-applied outputs.

What archgram does: ``csa`` is a merge op over two branches, ``[R, F]``::

  channel   a_c = sigmoid(W_2 relu(W_1 mean_t R))                (B, 1, C_F)
  temporal  a_t = sigmoid(conv1d_k([mean_c R ; max_c R]))        (B, T, 1)
            (a local window of k time points of R decides each time point)
  fuse      y = a_c * F + a_t * F                                 shaped like F

R and F must share batch and time points (T tokens of a sequence, or the H*W
pixels of an image, row-major); their channel counts may differ. In a grammar
the paper's wiring is ``clone(2) identity <encoder> csa``: branch 0 passes the
upstream (class-trained) features on as R, branch 1 encodes them to F.

What differs: nothing in the mechanism (scores come only from R, act only on
F). The paper's text available to us fixes the two axes, the source and target
of the scores and the fusion of the two attended outputs; the scorer internals
above (an SE-style channel MLP with ``reduction``, a k-tap conv over R's
channel-pooled statistics, fusion by sum) are our reconstruction. Whether R
carries class semantics is up to the network upstream (in the paper a
pretrained recognition encoder), as it is in the paper's plug-in module.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from archgram.errors import ShapeError
from archgram.ops.registry import Arg, MergeOp, check_rank, register_op
from archgram.ops.tokens import from_tokens, to_tokens
from archgram.ops.vision._common import tokens_of
from archgram.shapes import Shape, fmt


@register_op(
    "csa",
    family="vision",
    refs=("S51",),
    args={
        "reduction": Arg(int, 4, low=1, doc="hidden width C_R // reduction of the channel scorer"),
        "kernel": Arg(int, 3, low=1, doc="temporal window k of the time-point scorer (odd)"),
    },
)
class ClassSemanticsAttention(MergeOp):
    """CSA over branches [R, F]: per-channel and per-time-point scores from R gate F; the two gated F are summed."""

    def __init__(self, shapes: list[Shape], reduction: int = 4, kernel: int = 3):
        super().__init__()
        self.output_shape(shapes, reduction=reduction, kernel=kernel)
        (_, c_r), (_, c_f) = tokens_of(shapes[0]), tokens_of(shapes[1])
        hidden = max(1, c_r // reduction)
        self.fc1, self.fc2 = nn.Linear(c_r, hidden), nn.Linear(hidden, c_f)
        self.temporal = nn.Conv1d(2, 1, kernel, padding=kernel // 2)

    @classmethod
    def output_shape(cls, shapes: list[Shape], reduction: int = 4, kernel: int = 3) -> Shape:
        if len(shapes) != 2:
            raise ShapeError(f"csa merges exactly 2 branches [R, F], got {len(shapes)}")
        r, f = shapes
        check_rank("csa", r, 3, 4)
        check_rank("csa", f, 3, 4)
        same_time = r[2:] == f[2:] if len(r) == 4 else r[1] == f[1]
        if len(r) != len(f) or r[0] != f[0] or not same_time:
            raise ShapeError(f"csa: R {fmt(r)} and F {fmt(f)} must share batch and time points")
        if kernel % 2 == 0:
            raise ShapeError(f"csa: the temporal kernel must be odd to keep the {tokens_of(r)[0]} time points "
                             f"of {fmt(r)}, got {kernel}")
        return f

    @classmethod
    def branch_target(cls, done: list[Shape], reduction: int = 4, kernel: int = 3) -> tuple | None:
        r = done[0]
        return (r[0], None) + tuple(r[2:]) if len(r) == 4 else (r[0], r[1], None)

    @classmethod
    def count_params(cls, shapes: list[Shape], /, reduction: int = 4, kernel: int = 3) -> int:
        (_, c_r), (_, c_f) = tokens_of(shapes[0]), tokens_of(shapes[1])
        hidden = max(1, c_r // reduction)
        return (c_r * hidden + hidden) + (hidden * c_f + c_f) + (2 * kernel + 1)

    @classmethod
    def flops(cls, shapes: list[Shape], out: Shape, params: int, /, **args) -> int:
        t, c_r = tokens_of(shapes[0])
        return shapes[0][0] * (2 * t * c_r + 2 * params) + 3 * math.prod(out)

    def scores(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(channel scores (B, 1, C_F), time-point scores (B, T, 1)) from R's tokens (B, T, C_R)."""
        a_c = torch.sigmoid(self.fc2(torch.relu(self.fc1(r.mean(dim=1))))).unsqueeze(1)
        stats = torch.stack([r.mean(dim=2), r.amax(dim=2)], dim=1)  # (B, 2, T)
        a_t = torch.sigmoid(self.temporal(stats)).transpose(1, 2)  # (B, T, 1)
        return a_c, a_t

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        r, f_in = xs
        f = to_tokens(f_in)
        a_c, a_t = self.scores(to_tokens(r))
        return from_tokens(a_c * f + a_t * f, f_in)
