"""FBLNet's knowledge-guided fusion of a CNN and a Transformer feature (Chen,
Nan & Xiang, ICCV 2023, "FBLNet: FeedBack Loop Network for Driver Attention
Prediction"; catalog S33).

Paper's defining mechanism: FBLNet extracts a CNN feature and a Transformer
feature from the image and fuses them under the guidance of *incremental
knowledge*, a state generated over and over through iterations that carries
historically accumulated information (the driver's experience) and is fed back.

What archgram does: ``fbl_fusion`` is a merge op over ``[cnn, transformer]``
(two branches of one shape, images or sequences) holding the knowledge as the
slot memory of ``fbl_memory`` (read by tokens, rewritten from them, a persistent
buffer that moves toward each training batch's knowledge). Each iteration:

  r_c, r_t = read(c, M), read(t, M)          what the knowledge says of each branch
  g        = sigmoid(W_g [r_c ; r_t])        per token and channel
  f        = g * c + (1 - g) * t             the fused feature
  M        = write(f, M)                     knowledge generated from the fusion

so the fusion weights are set by the knowledge, and the knowledge by earlier
fusions (within a forward over ``iterations``, and across inputs in training).
In a grammar: ``clone(2) <cnn branch> <transformer branch> fbl_fusion``.

What differs: the paper's exact read, write and fusion layers are replaced by
attention read/write and a sigmoid gate (the same structure: knowledge-guided
weights over the two features, knowledge from the fused feature), and its
saliency decoder and driver-attention losses are the task's head, not this op.
"""
from __future__ import annotations

import torch
from torch import nn

from archgram.errors import ShapeError
from archgram.ops.registry import Arg, MergeOp, check_rank, register_op
from archgram.ops.tokens import from_tokens, to_tokens
from archgram.ops.vision._common import tokens_of
from archgram.ops.vision.fbl_memory import ARGS as MEMORY_ARGS
from archgram.ops.vision.fbl_memory import FeedbackLoopMemory
from archgram.shapes import Shape, fmt

#: the memory's arguments; one round here fuses, then rewrites the knowledge
ARGS = MEMORY_ARGS | {"iterations": Arg(int, 2, low=1, doc="fuse-then-rewrite rounds of the feedback loop per forward")}


@register_op("fbl_fusion", family="vision", refs=("S33",), args=ARGS)
class KnowledgeGuidedFusion(MergeOp):
    """FBLNet fusion: a CNN and a Transformer feature mixed by a gate the incremental knowledge sets."""

    def __init__(self, shapes: list[Shape], slots: int = 4, iterations: int = 2, momentum: float = 0.1):
        super().__init__()
        self.output_shape(shapes)
        c = tokens_of(shapes[0])[1]
        self.iterations = iterations
        self.memory = FeedbackLoopMemory(shapes[0], slots=slots, iterations=1, momentum=momentum)
        self.gate = nn.Linear(2 * c, c)

    @classmethod
    def output_shape(cls, shapes: list[Shape], **args) -> Shape:
        if len(shapes) != 2:
            raise ShapeError(f"fbl_fusion merges exactly 2 branches [cnn, transformer], got {len(shapes)}")
        check_rank("fbl_fusion", shapes[0], 3, 4)
        if tuple(shapes[0]) != tuple(shapes[1]):
            raise ShapeError(f"fbl_fusion fuses features of one shape, got {fmt(shapes[0])} and {fmt(shapes[1])}")
        return shapes[0]

    @classmethod
    def branch_target(cls, done: list[Shape], **args) -> tuple | None:
        return tuple(done[0])

    @classmethod
    def count_params(cls, shapes: list[Shape], /, slots: int = 4, iterations: int = 2, momentum: float = 0.1) -> int:
        c = tokens_of(shapes[0])[1]
        return FeedbackLoopMemory.count_params(shapes[0], slots=slots) + 2 * c * c + c

    @classmethod
    def flops(cls, shapes: list[Shape], out: Shape, params: int, /, slots: int = 4, iterations: int = 2,
              momentum: float = 0.1) -> int:
        n, c = tokens_of(out)
        read = 2 * (2 * n * c * c + 2 * n * slots * c) + 2 * 2 * slots * c * c  # q, o; scores and values; k, v
        per_iter = 2 * read + 2 * n * 2 * c * c + 2 * 2 * slots * n * c + 3 * n * c  # two reads, gate, write, mix
        return out[0] * iterations * per_iter

    def fusion_gate(self, c: torch.Tensor, t: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """(B, N, C) weights of the CNN tokens c against the Transformer tokens t, given knowledge m."""
        r_c, r_t = self.memory.read(c, m) - c, self.memory.read(t, m) - t
        return torch.sigmoid(self.gate(torch.cat([r_c, r_t], dim=-1)))

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        cnn, transformer = xs
        c, t = to_tokens(cnn), to_tokens(transformer)
        m = self.memory.knowledge.clone().expand(c.shape[0], -1, -1)
        for _ in range(self.iterations):
            g = self.fusion_gate(c, t, m)
            f = g * c + (1 - g) * t
            m = self.memory.write(f, m)
        if self.training:
            with torch.no_grad():
                self.memory.knowledge.lerp_(m.mean(dim=0), self.memory.momentum)
        return from_tokens(f, cnn)
