"""Stems and heads the tasks put around a searched body.

Each module records ``flops`` (forward FLOPs for the batch shape it was built
for) so the evaluator can add them to the body's count.
"""
from __future__ import annotations

import torch
from torch import nn

from archgram.errors import ShapeError
from archgram.ops.heads.pointer import PointerDecoder, pointer_flops
from archgram.shapes import Shape, channel_axis, channels, fmt, positions


class ClassificationHead(nn.Module):
    """Average over every non-channel position, then a linear classifier.

    Works for images (B,C,H,W) and sequences (B,N,D) alike, so any body output
    of rank 3 or 4 can be scored.
    """

    def __init__(self, shape: Shape, classes: int):
        super().__init__()
        if len(shape) not in (3, 4):
            raise ShapeError(f"classification head needs an image or sequence output, got {fmt(shape)}")
        self.axis = channel_axis(shape)
        self.pool_dims = tuple(i for i in range(1, len(shape)) if i != self.axis)
        self.fc = nn.Linear(channels(shape), classes)
        self.flops = shape[0] * (channels(shape) * positions(shape) + 2 * channels(shape) * classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=self.pool_dims))


class TokenHead(nn.Module):
    """A linear map of each position of a sequence (B,N,D) -> (B,N,out);
    ``squeeze`` drops a size-1 output axis (scalar regression)."""

    def __init__(self, shape: Shape, out: int, tokens: int | None = None, squeeze: bool = False):
        super().__init__()
        if len(shape) != 3:
            raise ShapeError(f"per-token head needs a sequence output (B,N,D), got {fmt(shape)}")
        if tokens is not None and shape[1] != tokens:
            raise ShapeError(f"per-token head needs {tokens} positions, got {fmt(shape)}")
        self.fc = nn.Linear(shape[2], out)
        self.squeeze = squeeze and out == 1
        self.flops = 2 * shape[0] * shape[1] * shape[2] * out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x)
        return y.squeeze(-1) if self.squeeze else y


class TokenEmbedding(nn.Module):
    """Token ids (B,N) -> vectors (B,N,D)."""

    def __init__(self, vocab: int, dim: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.flops = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)


def pointer_decoder(shape: Shape, outputs: int, hidden: int = 32, score: str = "additive") -> nn.Module:
    """The Pointer Networks decoder (catalog S03) as a task head: (B,N,D) -> logits (B, outputs, N)."""
    if len(shape) != 3:
        raise ShapeError(f"pointer head needs a sequence output (B,N,D), got {fmt(shape)}")
    head = PointerDecoder(shape[2], outputs, hidden=hidden, score=score)
    head.flops = pointer_flops(shape, outputs, hidden, score)
    return head


def module_flops(module: nn.Module) -> int:
    """FLOPs recorded by the stems/heads above (0 for anything else)."""
    return int(sum(getattr(m, "flops", 0) or 0 for m in module.modules() if isinstance(getattr(m, "flops", None), int)))
