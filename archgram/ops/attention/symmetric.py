"""Symmetric similarity (Bermeitinger et al. 2024, "Reducing the Transformer
Architecture to a Minimum", catalog S45): one symmetric matrix in place of W_Q W_K^T.
"""
from __future__ import annotations

import torch
from torch import nn

from archgram.ops.attention.parts import SCORES
from archgram.ops.attention.scores import Score, masked_fill_min, masked_zero


@SCORES.register
class Symmetric(Score):
    """Symmetric similarity (Bermeitinger et al. 2024, "Reducing the Transformer
    Architecture to a Minimum", catalog S45): logits_ij = scale * q_i W_h q_j^T
    with W_h symmetric, stored as its d(d+1)/2 upper triangle (half the
    parameters of a collapsed W_Q W_K^T). Queries stand on both sides, so the
    logit matrix is symmetric and the layout's k projection is unused. W starts
    as the identity (logits q_i . q_j).

    Paper's defining mechanism: drop the MLP, collapse W_Q W_K^T into one matrix
    (optionally symmetric), drop W_V and W_O, with little loss. archgram: this
    score plus ``layout=minimal`` (no W_Q/W_K/W_V/W_O) is exactly that layer; an
    MLP-free block is a grammar without the MLP. What differs: nothing; with
    another layout the score sits on projected queries (a superset)."""

    name = "symmetric"
    refs = ("S45",)

    def __init__(self, heads: int, head_dim: int):
        super().__init__(heads)
        self.head_dim = head_dim
        rows, cols = torch.triu_indices(head_dim, head_dim)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.upper = nn.Parameter((rows == cols).to(torch.get_default_dtype()).repeat(heads, 1))

    takes_head_dim = True

    def matrix(self) -> torch.Tensor:
        """(H, d, d) symmetric W."""
        u = self.upper.new_zeros(self.heads, self.head_dim, self.head_dim)
        u[:, self.rows, self.cols] = self.upper
        return u + u.triu(1).transpose(-1, -2)

    def logits(self, q, k, scale):
        return torch.matmul(torch.matmul(q, self.matrix()[None]), q.transpose(-1, -2)) * scale

    def weights(self, logits, mask):
        return masked_zero(torch.softmax(masked_fill_min(logits, mask), dim=-1), mask)
