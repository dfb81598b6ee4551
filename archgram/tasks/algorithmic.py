"""Algorithmic tasks with value generalisation (Back de Luca et al., ICML 2025,
"Positional Attention: Expressivity and Learnability of Algorithmic
Computation"; catalog S30, the task half of the row).

Input: N numbers uniform in [-1, 1] as a sequence (B, N, 1). Output: one number
per position, given by ``problem`` -- ``sum`` (the total at every position),
``cumsum``, ``cummin``, ``cummax``, ``sort`` (ascending). Loss MSE, metric
-MSE (higher is better). The paper's out-of-distribution question is *value*
generalisation: same length, larger magnitudes. The test split therefore draws
its numbers from [-test_scale, test_scale] (1: in distribution), so a study's
final test score measures how far an architecture extrapolates in value;
``relative_mse`` normalises by the target's spread so scales compare.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from archgram.errors import ArchgramError
from archgram.registry import Registry
from archgram.shapes import Shape
from archgram.tasks.base import GeneratedTask, Recipe, register_task
from archgram.tasks.heads import TokenHead

#: problem name -> target of x (B, N): one value per position.
PROBLEMS: Registry[Callable[[torch.Tensor], torch.Tensor]] = Registry("problem", entries={
    "sum": lambda x: x.sum(1, keepdim=True).expand_as(x),
    "cumsum": lambda x: x.cumsum(1),
    "cummin": lambda x: x.cummin(1).values,
    "cummax": lambda x: x.cummax(1).values,
    "sort": lambda x: x.sort(1).values,
})


def relative_mse(pred: torch.Tensor, y: torch.Tensor) -> float:
    """MSE divided by the target's variance (1.0 = predicting the mean)."""
    return float(((pred.double() - y.double()) ** 2).mean() / y.double().var().clamp_min(1e-12))


@register_task
class Algorithmic(GeneratedTask):
    name = "algorithmic"
    # Recipe of the sibling sequence-regression task (icl-regression); the
    # reference (references/algorithmic.pcfg) under it is not measured yet.
    recipe = Recipe(optimizer="adamw", lr=1e-3, batch_size=32, budget="1000steps")
    refs = ("S30",)
    metric_name = "neg_mse"
    description = "sum / cumsum / cummin / cummax / sort of N numbers in [-1, 1]; -MSE; test split at test_scale x magnitude"

    def __init__(self, problem: str = "cumsum", length: int = 8, test_scale: float = 1.0, n_train: int = 8000,
                 n_val: int = 1000, n_test: int | None = None):
        super().__init__(n_train, n_val, n_test)
        if problem not in PROBLEMS:
            raise ArchgramError(f"algorithmic: {PROBLEMS.unknown(problem)}")
        if not test_scale > 0:
            raise ArchgramError(f"algorithmic: test_scale must be positive, got {test_scale}")
        self.problem, self.length, self.test_scale = problem, length, float(test_scale)

    def config(self) -> dict:
        return {"problem": self.problem, "length": self.length, "test_scale": self.test_scale, **self.sizes()}

    def draw(self, n: int, gen: torch.Generator, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Values in [-1, 1]; the test split's are ``test_scale`` times larger (out of distribution)."""
        scale = self.test_scale if split == "test" else 1.0
        x = (torch.rand(n, self.length, generator=gen) * 2 - 1) * scale
        return x[..., None], PROBLEMS[self.problem](x).contiguous()

    def body_input_shape(self, batch_size: int) -> Shape:
        return (batch_size, self.length, 1)

    def output_target(self, batch_size: int) -> tuple:
        return (batch_size, self.length, None)

    def head(self, body_output_shape: Shape) -> nn.Module:
        return TokenHead(body_output_shape, 1, tokens=self.length, squeeze=True)

    def loss(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(pred, y)

    def metric(self, pred: torch.Tensor, y: torch.Tensor) -> float:
        return -float(F.mse_loss(pred.double(), y.double()))
