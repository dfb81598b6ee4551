"""The Tensor Brain's semantic decoder (Tresp et al. 2021-2024; catalog S70).

The representation layer q (here each token's D features, the "cognitive
brain state") is decoded against an index layer of K concepts, each with an
embedding a_i (one row of a learned memory A, K x D): p(i | q) = softmax_i(a_i . q + b_i).
Decoding is fed back top-down: the representation moves towards the decoded
concept's embedding, q' = q + sum_i p(i | q) a_i (the expected embedding, the
differentiable form of sampling a concept and adding its embedding). The op
returns q' (``mode='feedback'``, shape preserving) or the concept logits
(``mode='logits'``, (B,N,K)).

Paper's defining mechanism: concepts with dual representations, an index and
an embedding; the representation layer is decoded into a distribution over
concept indices, a concept is sampled and its embedding written back to the
representation layer, so decoding one concept conditions the next (subject,
predicate, object of a triple in turn); sensory, index, representation and
working-memory layers around it.
What archgram does: one decoding step per op with the expected embedding fed
back; stacked decoder ops decode in turn, each conditioned by the last.
``sample=true`` feeds back the embedding of a concept drawn from p(i|q), as
the paper decodes, with the expectation's gradient (straight-through).
What differs: the default feeds back the expectation sum_i p(i|q) a_i (the
sample's mean, deterministic); sampled training uses a straight-through
gradient, the paper's model being a cognitive account rather than a trained
network. The sensory buffer and working memory are not ops of their own.
"""
from __future__ import annotations

import torch
from torch import nn

from archgram.ops.registry import Arg, Op, check_rank, register_op
from archgram.shapes import Shape


@register_op(
    "tensor_brain_decoder",
    family="memory",
    refs=("S70",),
    args={
        "concepts": Arg(int, 16, low=2, doc="K, entries of the concept (index) memory"),
        "mode": Arg(str, "feedback", choices=("feedback", "logits")),
        "sample": Arg(bool, False, doc="feed back a sampled concept's embedding (straight-through gradient) "
                                       "instead of the expected embedding"),
    },
)
class TensorBrainDecoder(Op):
    """Tensor Brain decoder: concept distribution from an embedding memory, fed back to the representation."""

    def __init__(self, shape: Shape, concepts: int = 16, mode: str = "feedback", sample: bool = False):
        super().__init__()
        d = shape[-1]
        self.mode, self.sample = mode, sample
        self.embeddings = nn.Parameter(torch.randn(concepts, d) / d**0.5)
        self.bias = nn.Parameter(torch.zeros(concepts))

    @classmethod
    def output_shape(cls, shape: Shape, concepts: int = 16, mode: str = "feedback", sample: bool = False) -> Shape:
        check_rank("tensor_brain_decoder", shape, 3)
        return shape if mode == "feedback" else (shape[0], shape[1], concepts)

    @classmethod
    def count_params(cls, shape: Shape, /, concepts: int = 16, mode: str = "feedback", sample: bool = False) -> int:
        return concepts * (shape[-1] + 1)

    @classmethod
    def flops(cls, shape, out, params, /, concepts: int = 16, mode: str = "feedback", sample: bool = False) -> int:
        b, n, d = shape
        return b * n * concepts * d * (4 if mode == "feedback" else 2)

    def logits(self, q: torch.Tensor) -> torch.Tensor:
        return q @ self.embeddings.T + self.bias

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        logits = self.logits(q)
        if self.mode == "logits":
            return logits
        p = logits.softmax(-1)
        expected = p @ self.embeddings
        if not self.sample:
            return q + expected
        drawn = torch.multinomial(p.detach().reshape(-1, p.shape[-1]), 1).view(p.shape[:-1])
        return q + expected + (self.embeddings[drawn] - expected).detach()  # forward: the sample; gradient: the expectation's

    def extra_repr(self) -> str:
        return f"concepts={self.embeddings.shape[0]}, mode={self.mode}, sample={self.sample}"
