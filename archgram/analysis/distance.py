"""Attention distance: how far, in tokens or pixels, a head looks on average
(the "mean attention distance" of ViT, Dosovitskiy et al. 2021, Fig. 7)."""
from __future__ import annotations

import torch


def distance_matrix(nq: int, nk: int, grid, device=None) -> torch.Tensor | None:
    """|i - j| between token positions: along the sequence, or Euclidean pixel
    distance on an (H, W) grid; None when queries and keys differ in number
    (layouts with reduced keys have no common coordinates)."""
    if nq != nk:
        return None
    idx = torch.arange(nq, device=device, dtype=torch.float32)
    if grid is None:
        return (idx[:, None] - idx[None, :]).abs()
    w = grid[1]
    r, c = torch.div(idx, w, rounding_mode="floor"), idx % w
    return torch.sqrt((r[:, None] - r[None, :]) ** 2 + (c[:, None] - c[None, :]) ** 2)


def row_distances(weights: torch.Tensor, dmat: torch.Tensor) -> torch.Tensor:
    """(B, H, Nq) weighted mean distance per query, sum_j |w_ij| d_ij / sum_j |w_ij|;
    NaN for rows with no weight. Absolute values: a few scores give signed weights."""
    w = weights.abs().float()
    mass = w.sum(-1)
    return torch.where(mass > 0, (w * dmat).sum(-1) / mass.clamp(min=1e-30), torch.full_like(mass, float("nan")))


def strength_by_distance(weights: torch.Tensor, dmat: torch.Tensor, bins: int) -> torch.Tensor:
    """(H, bins) attention strength at each distance: the |weight| a query puts
    on keys whose distance rounds to d (d = 0 .. bins - 1, the last bin holding
    everything further), averaged over batch and queries (Li et al. 2023's
    attention strength against spatial distance, catalog S69)."""
    w = weights.abs().float()
    idx = dmat.round().long().clamp(max=bins - 1).to(w.device)  # (Nq, Nk)
    per_bin = torch.zeros(*w.shape[:-1], bins, dtype=w.dtype, device=w.device)
    per_bin.scatter_add_(-1, idx.expand_as(w), w)  # (B, H, Nq, bins)
    return per_bin.mean((0, 2))
