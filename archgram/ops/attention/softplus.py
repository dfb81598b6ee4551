"""Length-scaled softplus attention with re-weighting (Gao & Spratling 2025,
catalog S38): softmax's exp replaced by a length-aware softplus, then sharpened.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from archgram.ops.attention.parts import SCORES
from archgram.ops.attention.scores import Score, l1_rows, masked_zero, refuse, visible_keys


@SCORES.register
class SoftplusReweight(Score):
    """Length-scaled softplus attention with re-weighting (Gao & Spratling 2025,
    "Softplus Attention with Re-weighting Boosts Length Extrapolation", catalog
    S38). Softmax = positivity map + l1 normalisation; the paper keeps the l1
    step, replaces exp by softplus and scales the logits by log N_i (N_i the
    keys query i can see: an entropy-invariance factor, so longer contexts do
    not flatten the weights): a = l1(softplus(log N_i * s_ij)). The second stage
    sharpens: w = l1(a ** power), amplifying strong weights and shrinking weak
    ones; power = 1 is the first stage alone (LSSA). Masked keys are zero before
    both normalisations and do not count in N_i.

    Fidelity (S38): Paper: softmax = positivity map + l1 normalisation; replace
      exp by softplus with an entropy-invariance scale log N_i (LSSA), then a
      re-weighting stage that sharpens (amplifies large, shrinks small weights)
      for length extrapolation; archgram: both stages, N_i the visible keys;
      differs: the sharpening is the power form l1(a^p) -- the stored sources
      describe a power-based re-weighting but its exact formula (e.g. any offset
      before the power) could not be read there, so p is a parameter.
    """

    name = "softplus_reweight"
    params = ("power",)
    refs = ("S38",)

    def __init__(self, heads: int, power: float = 2.0):
        super().__init__(heads)
        self.power = float(power)

    @classmethod
    def check(cls, pattern, causal, params):
        refuse(cls.name, params.get("power", 2.0) >= 1, "needs power >= 1 (below 1 flattens and has infinite gradients at 0)")

    def weights(self, logits, mask):
        a = l1_rows(masked_zero(F.softplus(torch.log(visible_keys(logits, mask)) * logits), mask))
        if self.power != 1.0:
            a = l1_rows(a.pow(self.power))
        return a

    def flash(self, n, grid, device):
        return {"score": "softplus", "power": self.power}
