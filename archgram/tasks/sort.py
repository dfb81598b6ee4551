"""Sorting with a pointer head (Vinyals et al. 2015, Pointer Networks; catalog S03).

Input: N numbers uniform in [0, 1) as a sequence (B, N, 1). Output position i
points at the input position holding the i-th smallest number: the target is
the argsort, the head is the Ptr-Net decoder (``archgram.ops.heads.pointer``)
whose logits are (B, N, N) over input positions, the loss is cross-entropy and
the metric the fraction of output positions pointed right.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from archgram.ops.heads.pointer import teach_pointer_decoders
from archgram.shapes import Shape
from archgram.tasks.base import GeneratedTask, Recipe, accuracy, register_task
from archgram.tasks.heads import pointer_decoder


class PointerTask(GeneratedTask):
    """A sequence task answered by pointers into the input (Ptr-Net, S03): the
    Ptr-Net decoder head emits ``steps`` pointers over the N input positions and
    trains with teacher forcing (it reads the true previous pointers)."""

    def __init__(self, length: int = 10, n_train: int = 10000, n_val: int = 1000, hidden: int = 32,
                 score: str = "additive", n_test: int | None = None):
        super().__init__(n_train, n_val, n_test)
        self.length, self.hidden, self.score = length, hidden, score

    @property
    def steps(self) -> int:
        return self.length

    def config(self) -> dict:
        return {"length": self.length, **self.sizes(), "hidden": self.hidden, "score": self.score}

    def output_target(self, batch_size: int) -> tuple:
        return (batch_size, self.length, None)

    def head(self, body_output_shape: Shape) -> nn.Module:
        return pointer_decoder(body_output_shape, self.steps, hidden=self.hidden, score=self.score)

    def teaching(self, model: nn.Module, y: torch.Tensor):
        """Teacher forcing: the decoder reads the true previous pointers while training
        (ignored steps read position 0; their loss is masked anyway)."""
        return teach_pointer_decoders(model, y.clamp(min=0))


@register_task
class Sort(PointerTask):
    name = "sort"
    # The transformer encoder (references/sort.pcfg) reaches 0.997 validation accuracy (seed 0).
    recipe = Recipe(optimizer="adamw", lr=1e-3, batch_size=32, budget="1000steps")
    refs = ("S03",)
    metric_name = "accuracy"
    description = "sort N numbers; pointer head over input positions; exact-position accuracy"

    def draw(self, n: int, rng: torch.Generator, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.rand(n, self.length, 1, generator=rng)
        return x, torch.argsort(x.squeeze(-1), dim=1)

    def body_input_shape(self, batch_size: int) -> Shape:
        return (batch_size, self.length, 1)

    def loss(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(pred.flatten(0, 1), y.flatten())

    def metric(self, pred: torch.Tensor, y: torch.Tensor) -> float:
        return accuracy(pred, y)

    def chance(self) -> float:
        return 1.0 / self.length
