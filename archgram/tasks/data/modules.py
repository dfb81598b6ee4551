"""Stems and heads of data tasks. Self-contained torch modules built from
literal arguments (the normalisation statistics are tuples of floats), so
``archgram export`` writes them into model.py and the exported model takes the
raw inputs (uint8 pixels, unscaled features) the search trained on.

The statistics are non-persistent buffers: they come from the task, not from a
trained state dict, and never change during training.
"""
from __future__ import annotations

import torch
from torch import nn


class Standardize(nn.Module):
    """(x - mean) / std per channel: axis 1 of images (B,C,H,W), the last axis of
    sequences (B,L,D). Casts integer inputs (uint8 pixels) to float first."""

    def __init__(self, mean: tuple, std: tuple, axis: int):
        super().__init__()
        self.axis = axis
        shape = [1, 1, 1, 1] if axis == 1 else [1, 1, len(mean)]
        shape[axis] = len(mean)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(shape), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(shape), persistent=False)
        self.flops = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std


class FeatureTokens(nn.Module):
    """Tabular rows (B,F) -> one token per feature (B,F,dim): each standardised
    feature scales its own learned vector plus a learned bias (the feature
    tokenizer of FT-Transformer, Gorishniy et al. 2021), so sequence grammars
    (attention, mixers) search over tables."""

    def __init__(self, mean: tuple, std: tuple, dim: int):
        super().__init__()
        f = len(mean)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32), persistent=False)
        self.weight = nn.Parameter(torch.randn(f, dim) / dim ** 0.5)
        self.bias = nn.Parameter(torch.zeros(f, dim))
        self.flops = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.float() - self.mean) / self.std
        return z.unsqueeze(-1) * self.weight + self.bias


class RegressionHead(nn.Module):
    """Average over every non-channel position, a linear map to ``outputs``
    values, then the training targets' scale (value * std + mean), so the model
    predicts in the data's units while training sees unit-variance targets."""

    def __init__(self, shape: tuple, outputs: int, mean: tuple, std: tuple, squeeze: bool):
        super().__init__()
        self.axis = 1 if len(shape) == 4 else 2
        self.pool_dims = tuple(i for i in range(1, len(shape)) if i != self.axis)
        self.fc = nn.Linear(shape[self.axis], outputs)
        self.squeeze = squeeze
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32), persistent=False)
        positions = 1
        for i in self.pool_dims:
            positions *= shape[i]
        self.flops = shape[0] * (shape[self.axis] * positions + 2 * shape[self.axis] * outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x.mean(dim=self.pool_dims)) * self.std + self.mean
        return y.squeeze(-1) if self.squeeze else y
