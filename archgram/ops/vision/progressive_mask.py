"""Self-supervised spatial attention trained under progressive masking (Mitra,
Chakraborty & Sahu 2025, "Mask & Match: Learning to Recognize Handwritten Math
with Self-Supervised Attention"; catalog S08).

Mask & Match learns a spatial attention map over encoder features that should
find the informative regions (operators, exponents, nested notation) without
labels, and trains it under a *progressive spatial masking curriculum*: square
patches of the feature map are hidden, and the hidden fraction grows during
training, so the attention must stay right while ever more of the input is
missing.

  mask      during training, a random ``ratio`` of the patch x patch cells of
            the grid is zeroed (all channels); never in eval mode
  attention a = sigmoid(W_2 relu(DWConv_3x3(W_1 x_masked)))   (B, 1, H, W)
  output    y = x * a          (the unmasked features, reweighted)
  match     (``match=true``, training with patches hidden) the self-supervised
            objective left in ``aux_loss`` for the trainer to add:
            mean (a(x_masked) - sg[a(x)])^2, the masked view's map matching
            the full view's (sg: stop-gradient, the full view is the target),
            so the map must infer the focus regions of hidden patches from
            their context

``mask_ratio(step, total)`` is the curriculum: 0 for the first ``warmup``
fraction of training, then a linear ramp to ``max_ratio`` at the end. A
trainer calls ``module.set_progress(step, total)``; the op's ``ratio`` argument
is the ``max_ratio`` of that schedule.

Catalog S08, read against the paper's abstract and introduction (the
method section could not be found: only the start of arxiv.org/html/2508.06107
is readable). Paper: a three-stage pipeline: an encoder pretrained with global
+ local contrastive losses; a self-supervised attention network trained under
a progressive spatial masking curriculum so that it finds informative regions
without labels and becomes robust to missing or occluded input; supervised
fine-tuning with a LaTeX decoder. archgram: the attention network, the
curriculum (the evaluator advances ``set_progress`` during training) and a
self-supervised match objective (``aux_loss``) that needs no labels.
Differs: the abstract gives neither the attention network's layers nor its
objective, so the head (1x1 -> depth-wise 3x3 -> 1x1, sigmoid), the linear
ramp and the match loss (masked-view map regressed on the stop-gradient
full-view map, the "match" of the title) are our choices; the contrastive
pretraining stage and the decoder are outside the op.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from archgram.errors import ShapeError
from archgram.ops.registry import Arg, Op, register_op
from archgram.ops.vision._common import image
from archgram.shapes import Shape


def mask_ratio(step: int, total: int, max_ratio: float = 0.5, warmup: float = 0.1) -> float:
    """Curriculum of the hidden fraction: 0 during the first ``warmup`` of ``total``
    steps, then rising linearly to ``max_ratio`` at the last step."""
    if total <= 0:
        raise ValueError(f"mask_ratio needs a positive number of steps, got total={total}")
    progress = min(max(step / total, 0.0), 1.0)
    if progress <= warmup:
        return 0.0
    return max_ratio * (progress - warmup) / (1.0 - warmup)


def patch_mask(b: int, h: int, w: int, patch: int, ratio: float, generator: torch.Generator | None = None,
               device=None) -> torch.Tensor:
    """(B, 1, H, W) float mask, 0 on round(ratio * cells) random patch x patch cells, 1 elsewhere."""
    gh, gw = -(-h // patch), -(-w // patch)
    cells = gh * gw
    hidden = round(ratio * cells)
    keep = torch.ones(b, cells, device=device)
    if hidden:
        order = torch.rand(b, cells, generator=generator).argsort(dim=1).to(device)
        keep.scatter_(1, order[:, :hidden], 0.0)
    keep = keep.view(b, 1, gh, gw)
    return keep.repeat_interleave(patch, 2).repeat_interleave(patch, 3)[:, :, :h, :w]


@register_op(
    "progressive_mask_attention",
    family="vision",
    refs=("S08",),
    args={
        "ratio": Arg(float, 0.5, low=0.0, high=0.95, doc="largest hidden fraction of the curriculum"),
        "patch": Arg(int, 2, low=1, doc="side of the hidden square cells"),
        "hidden": Arg(int, 8, low=1, doc="width of the attention network"),
        "match": Arg(bool, True, doc="leave the self-supervised match loss in aux_loss while training"),
    },
)
class ProgressiveMaskAttention(Op):
    """Mask & Match spatial attention: sigmoid map from features whose patches are hidden by a growing curriculum."""

    def __init__(self, shape: Shape, ratio: float = 0.5, patch: int = 2, hidden: int = 8, match: bool = True):
        super().__init__()
        c = self.output_shape(shape, patch=patch)[1]
        self.max_ratio, self.patch, self.ratio, self.match = ratio, patch, 0.0, bool(match)
        self.aux_loss: torch.Tensor | None = None
        self.reduce = nn.Conv2d(c, hidden, 1)
        self.local = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.score = nn.Conv2d(hidden, 1, 1)

    @classmethod
    def output_shape(cls, shape: Shape, patch: int = 2, **args) -> Shape:
        _, _, h, w = image("progressive_mask_attention", shape)
        if patch > min(h, w):
            raise ShapeError(f"progressive_mask_attention: patch {patch} is larger than the {h}x{w} grid of {shape}")
        return shape

    @classmethod
    def count_params(cls, shape: Shape, /, ratio: float = 0.5, patch: int = 2, hidden: int = 8, match: bool = True) -> int:
        c = shape[1]
        return (c * hidden + hidden) + (9 * hidden + hidden) + (hidden + 1)

    def set_progress(self, step: int, total: int) -> float:
        """Advance the curriculum; returns the hidden fraction now in force."""
        self.ratio = mask_ratio(step, total, self.max_ratio)
        return self.ratio

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) attention map of (possibly masked) features."""
        return torch.sigmoid(self.score(F.relu(self.local(self.reduce(x)))))

    def match_loss(self, masked_map: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Mean squared gap between the masked view's map and the full view's (the target, no gradient)."""
        with torch.no_grad():
            target = self.attention(x)
        return (masked_map - target).square().mean()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.aux_loss = None
        if not (self.training and self.ratio > 0):
            return x * self.attention(x)
        b, _, h, w = x.shape
        masked_map = self.attention(x * patch_mask(b, h, w, self.patch, self.ratio, device=x.device).to(x.dtype))
        if self.match and torch.is_grad_enabled() and not torch.compiler.is_exporting():
            self.aux_loss = self.match_loss(masked_map, x)
        return x * masked_map
