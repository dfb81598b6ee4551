"""Positional schemes: rotations of q/k (RoPE) or additive logit biases (ALiBi)."""
from __future__ import annotations

import torch
from torch import nn

from archgram.errors import ShapeError
from archgram.ops.attention.parts import POSITIONS, Part


class Position(Part, nn.Module):
    def __init__(self, heads: int, head_dim: int, **params):
        nn.Module.__init__(self)
        self.heads, self.head_dim = heads, head_dim

    @classmethod
    def check(cls, heads: int, head_dim: int) -> None:
        """Refuse head layouts this scheme cannot serve (ShapeError)."""

    def rotate(self, q, k, grid):
        return q, k

    def bias(self, nq: int, nk: int, device) -> torch.Tensor | None:
        return None


@POSITIONS.register
class NoPosition(Position):
    name = "none"


def _rotate(x: torch.Tensor, pos: torch.Tensor, base: float) -> torch.Tensor:
    """Rotate consecutive pairs of ``x``'s last axis by angle pos * base^(-2i/d)."""
    d = x.shape[-1]
    freqs = base ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    angles = pos.to(torch.float32)[:, None] * freqs[None, :]  # (n, d/2)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.flatten(-2)


@POSITIONS.register
class RoPE(Position):
    """Rotary position embedding (Su et al.); on a grid, half the head dims rotate
    with the row and half with the column (axial 2D RoPE)."""

    name = "rope"
    params = ("base",)
    base = 10000.0

    def __init__(self, heads, head_dim, base: float = 10000.0):
        super().__init__(heads, head_dim)
        self.base = float(base)

    @classmethod
    def check(cls, heads, head_dim):
        if head_dim % 4:
            raise ShapeError(f"rope needs a head dim divisible by 4 (pairs, and rows/columns on grids), got {head_dim}")

    def rotate(self, q, k, grid):
        n = q.shape[-2]
        if grid is None:
            pos = torch.arange(n, device=q.device)
            return _rotate(q, pos, self.base), _rotate(k, pos, self.base)
        h, w = grid
        rows = torch.arange(h, device=q.device).repeat_interleave(w)
        cols = torch.arange(w, device=q.device).repeat(h)
        half = q.shape[-1] // 2

        def both(x):
            return torch.cat((_rotate(x[..., :half], rows, self.base), _rotate(x[..., half:], cols, self.base)), -1)

        return both(q), both(k)


@POSITIONS.register
class ALiBi(Position):
    """Attention with linear biases (Press et al.): logit bias -m_h |i - j|, slopes
    m_h = 2^(-8 (h+1) / H) per head."""

    name = "alibi"

    def slopes(self) -> torch.Tensor:
        return torch.tensor([2 ** (-8 * (h + 1) / self.heads) for h in range(self.heads)])

    def bias(self, nq, nk, device):
        i = torch.arange(nq, device=device)[:, None]
        j = torch.arange(nk, device=device)[None, :]
        return -self.slopes().to(device)[:, None, None] * (i - j).abs()[None]

