"""Quantizable Transformers' scores (Bondarenko et al. 2023, catalog S31): clipped
softmax and gated attention, two ways for a head to output nothing without
pushing its logits to extremes (the source of activation outliers).
"""
from __future__ import annotations

import torch
from torch import nn

from archgram.ops.attention.parts import SCORES
from archgram.ops.attention.scores import Score, masked_fill_min, masked_zero, refuse


@SCORES.register
class ClippedSoftmax(Score):
    """Clipped softmax (Bondarenko et al. 2023, "Quantizable Transformers", catalog
    S31): clip((zeta - gamma) * softmax(x) + gamma, 0, 1). The stretch gamma < 0
    lets a head reach exact zeros (and zeta > 1 exact ones) with finite logits,
    so heads that want to "do nothing" stop pushing logits (and activations)
    towards outliers. gamma = 0, zeta = 1 is plain softmax. Masked keys get
    softmax 0 -> gamma -> clipped to 0, so masks hold.

    Fidelity (S31): faithful -- Paper: clip((zeta - gamma) softmax + gamma, 0, 1)
      so a head can put exact zeros (a "no-op" head) without pushing logits to
      extremes, which removes activation outliers; archgram: exactly this, with the
      paper's gamma <= 0 <= 1 <= zeta range enforced; differs: nothing.
    """

    name = "clipped_softmax"
    params = ("gamma", "zeta")
    refs = ("S31",)

    def __init__(self, heads: int, gamma: float = -0.025, zeta: float = 1.0):
        super().__init__(heads)
        self.gamma, self.zeta = float(gamma), float(zeta)

    @classmethod
    def check(cls, pattern, causal, params):
        refuse(cls.name, params.get("gamma", -0.025) <= 0, "needs gamma <= 0 (a stretch below zero)")
        refuse(cls.name, params.get("zeta", 1.0) >= 1, "needs zeta >= 1")

    def weights(self, logits, mask):
        p = torch.softmax(masked_fill_min(logits, mask), dim=-1)
        return masked_zero(((self.zeta - self.gamma) * p + self.gamma).clamp(0.0, 1.0), mask)

    def flash(self, n, grid, device):
        return {"score": "clipped", "gamma": self.gamma, "zeta": self.zeta}


class HeadGate(nn.Module):
    """Gated attention's gate: sigmoid(W_g x_i + b_g), one scalar per token and
    head, computed from the layer input x (B, N, C) -> (B, H, N, 1)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.proj = nn.Linear(dim, heads)
        nn.init.zeros_(self.proj.weight)  # starts half open for every token
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.proj(x)).transpose(1, 2)[..., None]


@SCORES.register
class GatedSoftmax(Score):
    """Gated attention (Bondarenko et al. 2023, catalog S31): softmax attention whose
    per-head output is scaled by a learned gate sigmoid(W_g x_i + b_g) of the layer
    input, one scalar per token and head, so a head can switch itself off for a
    token without extreme logits. The op builds the gate (``input_gate``) and
    multiplies it into the head outputs; the weights are plain softmax, so the
    score also decodes token by token. The gate starts half open (W_g = 0, b_g = 0).

    Fidelity (S31, gated attention): faithful -- Paper: out_h = sigmoid(G_h(x)) *
    softmax attention_h, G a small map of the input (a linear layer per head);
    archgram: the same, G = one Linear(C, H); differs: nothing."""

    name = "gated_softmax"
    refs = ("S31",)

    @classmethod
    def input_gate(cls, heads: int, dim: int) -> nn.Module:
        return HeadGate(dim, heads)

    def weights(self, logits, mask):
        return masked_zero(torch.softmax(masked_fill_min(logits, mask), dim=-1), mask)
