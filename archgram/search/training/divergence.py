"""What the adversarial methods share: the divergence between a clean and a
perturbed prediction, and the smallest norm a direction is divided by."""
from __future__ import annotations

import torch
import torch.nn.functional as F

TINY = 1e-12


def divergence(clean: torch.Tensor, other: torch.Tensor, categorical: bool) -> torch.Tensor:
    """How far ``other`` predictions moved from ``clean`` ones (clean held constant):
    KL over the last axis for logits, mean squared difference for values."""
    clean = clean.detach()
    if categorical:
        logp = F.log_softmax(clean.float(), dim=-1)
        logq = F.log_softmax(other.float(), dim=-1)
        return (logp.exp() * (logp - logq)).sum(-1).mean()
    return F.mse_loss(other.float(), clean.float())
