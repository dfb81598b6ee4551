"""Pointer Networks' attention-as-output (Vinyals et al. 2015; catalog S03) as a grammar op.

The module is the task layer's ``PointerHead`` (one implementation): for each of
M outputs a learned query attends over the N input positions, and the
attention logits themselves are the output, (B,N,D) -> (B,M,N). A softmax over
the last axis turns them into a distribution over input positions.
"""
from __future__ import annotations

import torch

from archgram.errors import ShapeError
from archgram.ops.registry import Arg, Op, check_rank, register_op
from archgram.shapes import Shape
from archgram.tasks.heads import PointerHead


@register_op(
    "pointer_head",
    family="heads",
    refs=("S03",),
    args={
        "outputs": Arg(int, 0, low=0, doc="pointer outputs M; 0 means one per input position"),
        "hidden": Arg(int, 32, low=1),
        "score": Arg(str, "additive", choices=("additive", "dot")),
    },
)
class PointerHeadOp(Op):
    """Pointer attention: logits over input positions for each output, (B,N,D) -> (B,M,N)."""

    def __init__(self, shape: Shape, outputs: int = 0, hidden: int = 32, score: str = "additive"):
        super().__init__()
        self.head = PointerHead(shape, outputs or shape[1], hidden=hidden, score=score)

    @classmethod
    def output_shape(cls, shape: Shape, outputs: int = 0, hidden: int = 32, score: str = "additive") -> Shape:
        check_rank("pointer_head", shape, 3)
        if shape[1] < 1:
            raise ShapeError("pointer_head needs at least one input position")
        return (shape[0], outputs or shape[1], shape[1])

    @classmethod
    def count_params(cls, shape: Shape, /, outputs: int = 0, hidden: int = 32, score: str = "additive") -> int:
        m = outputs or shape[1]
        return shape[2] * hidden + hidden + m * hidden + (hidden if score == "additive" else 0)

    @classmethod
    def flops(cls, shape, out, params, /, outputs: int = 0, hidden: int = 32, score: str = "additive") -> int:
        b, n, d = shape
        m = out[1]
        return 2 * b * n * d * hidden + (3 if score == "additive" else 2) * b * m * n * hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)
