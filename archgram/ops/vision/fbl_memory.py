"""Feedback-loop incremental-knowledge memory (Chen, Nan & Xiang, ICCV 2023,
"FBLNet: FeedBack Loop Network for Driver Attention Prediction"; catalog S33).

FBLNet models a driver's accumulated experience as *incremental knowledge*:
a state generated over and over through iterations, carrying long-term
information, which is fed back to guide the features of the current input.
As an op, the knowledge is a set of ``slots`` vectors:

  read   r = softmax(Q(x) K(M)^T / sqrt(C)) V(M);  x <- x + W_o r   (tokens consult the knowledge)
  write  u = softmax(S x^T / sqrt(C)) x;           M <- (1 - g) M + g u
         (learned slot queries S summarise the guided tokens; g = sigmoid(gate))

repeated ``iterations`` times inside one forward (the feedback loop), starting
from a persistent knowledge buffer. In training, after each forward the buffer
moves toward the batch's final knowledge with ``momentum`` (knowledge that
accumulates across inputs); in eval the buffer is read only. Image tokens
(H*W) or a sequence.

Fidelity (S33): Paper: FBLNet predicts driver attention; over and over
iterations it generates incremental knowledge (an accumulating state) that is
fed back to guide the fusion of CNN and Transformer features of each image;
archgram: this op is the knowledge loop alone, for any token stream -- a
persistent slot memory read by the tokens and rewritten from them, looped
within a forward and accumulated across inputs in training; ``fbl_fusion``
(fbl_fusion.py) uses the same memory to set the fusion weights of a CNN and a
Transformer branch, which is the paper's full mechanism; differs: the paper's
exact knowledge-update layers are attention read/write here, and its saliency
decoder is the task's head.
"""
from __future__ import annotations

import torch
from torch import nn

from archgram.ops.registry import Arg, Op, check_rank, register_op
from archgram.ops.tokens import from_tokens, to_tokens
from archgram.ops.vision._common import tokens_of
from archgram.shapes import Shape

ARGS = {
    "slots": Arg(int, 4, low=1, doc="knowledge vectors in the memory"),
    "iterations": Arg(int, 2, low=1, doc="read/write rounds of the feedback loop per forward"),
    "momentum": Arg(float, 0.1, low=0.0, high=1.0, doc="step of the persistent knowledge toward each batch's"),
}


@register_op("fbl_memory", family="vision", refs=("S33",), args=ARGS)
class FeedbackLoopMemory(Op):
    """FBLNet incremental knowledge: a slot memory read by the tokens, rewritten from them, looped and kept."""

    def __init__(self, shape: Shape, slots: int = 4, iterations: int = 2, momentum: float = 0.1):
        super().__init__()
        self.output_shape(shape)
        c = tokens_of(shape)[1]
        self.iterations, self.momentum, self.scale = iterations, momentum, c**-0.5
        self.q, self.k, self.v, self.o = (nn.Linear(c, c) for _ in range(4))
        self.slot_queries = nn.Parameter(torch.randn(slots, c) * c**-0.5)
        self.gate = nn.Parameter(torch.zeros(slots, 1))
        self.register_buffer("knowledge", torch.zeros(slots, c))

    @classmethod
    def output_shape(cls, shape: Shape, **args) -> Shape:
        check_rank("fbl_memory", shape, 3, 4)
        return shape

    @classmethod
    def count_params(cls, shape: Shape, /, slots: int = 4, iterations: int = 2, momentum: float = 0.1) -> int:
        c = tokens_of(shape)[1]
        return 4 * (c * c + c) + slots * c + slots

    def read(self, t: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """Tokens t (B, N, C) guided by knowledge m (B, S, C)."""
        a = torch.softmax(self.q(t) @ self.k(m).transpose(1, 2) * self.scale, dim=-1)
        return t + self.o(a @ self.v(m))

    def write(self, t: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """Knowledge m (B, S, C) after absorbing the tokens t (B, N, C)."""
        u = torch.softmax(self.slot_queries @ t.transpose(1, 2) * self.scale, dim=-1) @ t  # (B, S, C)
        g = torch.sigmoid(self.gate)
        return (1 - g) * m + g * u

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = to_tokens(x)
        m = self.knowledge.clone().expand(t.shape[0], -1, -1)  # the buffer is updated in place below
        for _ in range(self.iterations):
            t = self.read(t, m)
            m = self.write(t, m)
        if self.training:
            with torch.no_grad():
                self.knowledge.lerp_(m.mean(dim=0), self.momentum)
        return from_tokens(t, x)
