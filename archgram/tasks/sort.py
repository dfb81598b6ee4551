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
from archgram.tasks.base import Recipe, Task, TaskData, accuracy, register_task, seeded, split_seeds
from archgram.tasks.heads import pointer_decoder


@register_task
class Sort(Task):
    name = "sort"
    # The transformer encoder (references/sort.pcfg) reaches 0.997 validation accuracy (seed 0).
    recipe = Recipe(optimizer="adamw", lr=1e-3, batch_size=32, budget="1000steps")
    refs = ("S03",)
    metric_name = "accuracy"
    description = "sort N numbers; pointer head over input positions; exact-position accuracy"

    def __init__(self, length: int = 10, n_train: int = 10000, n_val: int = 1000, hidden: int = 32,
                 score: str = "additive", n_test: int | None = None):
        super().__init__()
        self.length, self.n_train, self.n_val, self.hidden, self.score = length, n_train, n_val, hidden, score
        self.n_test = n_val if n_test is None else n_test

    def config(self) -> dict:
        return {"length": self.length, "n_train": self.n_train, "n_val": self.n_val, "n_test": self.n_test,
                "hidden": self.hidden, "score": self.score}

    def _split(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.rand(n, self.length, 1, generator=gen)
        return x, torch.argsort(x.squeeze(-1), dim=1)

    def generate(self, seed: int) -> TaskData:
        sizes = (self.n_train, self.n_val, self.n_test)
        splits = [self._split(n, seeded(s)) for n, s in zip(sizes, split_seeds(seed), strict=True)]
        return TaskData(*splits[0], *splits[1], *splits[2])

    def body_input_shape(self, batch_size: int) -> Shape:
        return (batch_size, self.length, 1)

    def output_target(self, batch_size: int) -> tuple:
        return (batch_size, self.length, None)

    def head(self, body_output_shape: Shape) -> nn.Module:
        return pointer_decoder(body_output_shape, self.length, hidden=self.hidden, score=self.score)

    def teaching(self, model: nn.Module, y: torch.Tensor):
        """Teacher forcing: the decoder reads the true previous pointers while training."""
        return teach_pointer_decoders(model, y)

    def loss(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(pred.flatten(0, 1), y.flatten())

    def metric(self, pred: torch.Tensor, y: torch.Tensor) -> float:
        return accuracy(pred, y)

    def chance(self) -> float:
        return 1.0 / self.length
