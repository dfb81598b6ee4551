"""Head patterns of softmax attention trained on in-context linear regression
(He, Pan, Chen & Yang 2025, "In-Context Linear Regression Demystified"; catalog S18).

The paper finds that multi-head softmax attention trained on ``icl-regression``
settles into two patterns, and that together they make the layer a debiased
gradient-descent predictor:

  KQ   each head's key-query matrix W_q^T W_k, restricted to the covariate
       block, is diagonal and homogeneous (omega_h I), positive for some heads
       and negative for others;
  OV   each head's output-value matrix W_o,h W_v,h reads only the label entry
       of the tokens ("last entry only"), and the heads' label columns sum to
       zero ("zero-sum"), so the softmax normaliser's bias cancels.

``head_patterns`` measures both on an attention layout with per-head q/k/v/o
projections (mha): the share of each head's covariate-block KQ mass on its
diagonal, the sign and size of that diagonal, the share of its OV mass read
from the label entry, and across heads how far the label columns are from
summing to zero. ``archgram.tasks.icl_regression.debiased_gd`` is the predictor the patterns implement:
for small omega, mu [sum_l softmax(omega s)_l y_l - sum_l softmax(-omega s)_l y_l]
= (2 mu omega / n) sum_l (s_l - mean s) y_l + O(omega^2), s_l = x_l . x_q.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class HeadPattern:
    head: int
    kq_diagonal: float  # ||diag|| / ||KQ||_F on the covariate block: 1 for omega I
    kq_scale: float  # mean diagonal entry: > 0 a positive head, < 0 a negative one
    ov_label_share: float  # ||OV[:, label]|| / ||OV||_F: 1 when the head reads only the label


def head_matrices(layout, h: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(KQ, OV) of head h: KQ = W_q,h^T W_k,h (D x D), OV = W_o[:, h] W_v,h (D x D)."""
    d = layout.head_dim
    rows = slice(h * d, (h + 1) * d)
    kv_rows = slice((h * layout.kv // layout.heads) * d, (h * layout.kv // layout.heads + 1) * d)
    kq = layout.q.weight[rows].T @ layout.k.weight[kv_rows]
    ov = layout.o.weight[:, rows] @ layout.v.weight[kv_rows]
    return kq.detach(), ov.detach()


def head_patterns(layout, dim: int) -> tuple[list[HeadPattern], float]:
    """Per-head patterns and the zero-sum residual ||sum_h OV_h[:, label]|| / sum_h ||OV_h[:, label]||
    for tokens whose first ``dim`` entries are the covariates and entry ``dim`` the label."""
    patterns, label_cols = [], []
    for h in range(layout.heads):
        kq, ov = head_matrices(layout, h)
        block = kq[:dim, :dim]
        diag = torch.diagonal(block)
        patterns.append(HeadPattern(
            head=h,
            kq_diagonal=float(diag.norm() / block.norm().clamp_min(1e-12)),
            kq_scale=float(diag.mean()),
            ov_label_share=float(ov[:, dim].norm() / ov.norm().clamp_min(1e-12)),
        ))
        label_cols.append(ov[:, dim])
    cols = torch.stack(label_cols)
    zero_sum = float(cols.sum(0).norm() / cols.norm(dim=1).sum().clamp_min(1e-12))
    return patterns, zero_sum
