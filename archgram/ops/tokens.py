"""Images as token sequences and back: the layout change shared by the ops that
mix tokens (mixers, vision). Image (B, C, H, W) <-> tokens (B, H*W, C);
a sequence (B, N, C) is already tokens and passes through."""
from __future__ import annotations

import torch

from archgram.shapes import IMAGE_RANK


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C); sequences pass through."""
    return x.flatten(2).transpose(1, 2) if x.dim() == IMAGE_RANK else x


def from_tokens(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Inverse of ``to_tokens`` for the layout of ``like`` (the channels may
    differ: they are ``t``'s)."""
    if like.dim() == IMAGE_RANK:
        b, _, h, w = like.shape
        return t.transpose(1, 2).reshape(b, t.shape[-1], h, w)
    return t
