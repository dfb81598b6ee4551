"""Sparsifiner (catalog S24): a learned connectivity predictor picks top-k keys
per query and the op attends over the gathered keys only."""
from __future__ import annotations

import math

import torch
from torch import nn

from archgram.ops.attention.content import _causal_fill
from archgram.ops.attention.gathered import selection_mask
from archgram.ops.attention.parts import PATTERNS
from archgram.ops.attention.patterns import Pattern, require_integers


class ConnectivityPredictor(nn.Module):
    """Steps 1-3 above: q, k (B, H, N, d) -> approximate attention A~ (B, H, N, N)."""

    #: Inference-time sparsification of the basis and of the coefficients (the
    #: authors' defaults BASIS_THRESHOLD = 2e-2, BASIS_COEF.TOPK = 8).
    basis_threshold = 0.02
    coef_top = 8

    def __init__(self, head_dim: int, tokens: int, rank: int, reduce: int):
        super().__init__()
        channels = max(1, head_dim // reduce)
        self.proj_q = nn.Linear(head_dim, channels)
        self.proj_k = nn.Linear(head_dim, channels)
        self.down = nn.Parameter(torch.randn(tokens, rank) * 0.02)  # token down-projection W_down
        self.up = nn.Parameter(torch.randn(rank, tokens) * 0.02)  # up-projection basis W_up
        self.scale = 1.0 / math.sqrt(channels)
        #: Distillation loss of the last training forward; the trainer adds it.
        self.aux_loss: torch.Tensor | None = None

    def basis(self) -> torch.Tensor:
        """(n_down, N) non-negative basis; sparse (small entries zeroed) at inference."""
        b = self.up.abs()
        return b if self.training else b * (b > self.basis_threshold)

    def coefficients(self, q, k) -> torch.Tensor:
        """(B, H, N, n_down) softmax over the down-projected keys."""
        qc, kc = self.proj_q(q), self.proj_k(k)
        k_down = torch.einsum("bhnc,nr->bhrc", kc, self.down.to(kc.dtype))
        coef = (qc @ k_down.transpose(-1, -2) * self.scale).softmax(-1)
        if not self.training and coef.shape[-1] > self.coef_top:
            top = coef.topk(self.coef_top, dim=-1)
            coef = torch.zeros_like(coef).scatter(-1, top.indices, top.values)
        return coef

    def forward(self, q, k) -> torch.Tensor:
        return self.coefficients(q, k) @ self.basis().to(q.dtype)


@PATTERNS.register
class Sparsifiner(Pattern):
    """Sparsifiner (Wei et al., CVPR 2023, catalog S24): instance-dependent,
    unstructured sparse attention chosen by a learned low-rank connectivity predictor.

    Paper mechanism (Sec. 3 and the authors' code):
      1. channel reduction: q_c = q P_q, k_c = k P_k (head_dim -> head_dim / reduce);
      2. token down-projection of the keys: K_down = W_down^T k_c (N -> n_down keys,
         Linformer-style), cheap logits q_c K_down^T, coefficients C = softmax(.);
      3. sparse up-projection: the approximate attention A~ = C B with the basis
         B = |W_up| (n_down x N), pruned to a sparse matrix (|w| <= 0.02 -> 0) and C
         kept to its top 8 entries per row at inference;
      4. connectivity mask: each query keeps the top_k keys of its row of A~
         (binarised, no gradient);
      5. sparse attention: exact softmax(q k^T) evaluated only at the kept pairs;
      6. the predictor learns by distillation: A~ regresses the dense attention map.

    What archgram does: all six steps. The attention core gathers the kept keys per
    query (``gathered.py``: O(N top_k d), no N x N logit matrix) whenever the score
    uses the default dot-product contraction; other scores and reweighting
    positions get the same selection as a dense boolean mask. In training the op
    stores the distillation loss ``sum_j (A~_ij - A_ij)^2`` (mean over queries,
    heads and batch; A the layer's own dense attention, detached) in the
XX

    Differences: the target is the layer's own dense attention (the paper's
    "attention self-distillation" loss), not a separate pretrained teacher, since
    a grammar op has no teacher model; the paper's CLS row (always dense) has no
    counterpart because an op does not know which token is a class token; the
    predictor's own N x n_down x N product runs as a dense matmul over the zeroed
    basis rather than a sparse kernel (same numbers, not the paper's predictor
    speed). Untrained, the predictor is a random projection whose top-k recall is
    near chance: the sparsity is only meaningful after it has learned.

    ``top_k`` keys per query, ``rank`` = n_down down-projected keys, ``reduce``
    the predictor's channel reduction factor (paper: 2)."""

    name = "sparsifiner"
    params = ("top_k", "rank", "reduce")
    refs = ("S24",)
    data_dependent = True
    #: Selects keys per query: the op gathers them instead of masking.
    gathers = True
    rank = 8
    reduce = 2

    def check(self, n, grid):
        require_integers(self, "top_k", "rank", "reduce")

    def module(self, heads, head_dim, tokens):
        self.predictor = ConnectivityPredictor(head_dim, tokens, self.rank, self.reduce)
        return self.predictor

    def attended_keys(self, n: int) -> int:
        return min(self.top_k, n)

    def _distill(self, approx, q, k) -> None:
        """Store the predictor's regression loss to the dense (detached) attention."""
        with torch.no_grad():
            full = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
            target = (_causal_fill(full) if self.causal else full).float().softmax(-1)
        per_row = (approx.float() - target).pow(2).sum(-1)
        self.predictor.aux_loss = per_row.mean()

    def select(self, q, k, grid) -> tuple[torch.Tensor, torch.Tensor]:
        """(idx, valid), both (B, H, N, top_k): the keys each query keeps, and
        which of them are real (False only for causal queries with fewer
        visible keys than top_k)."""
        approx = self.predictor(q, k)
        if self.predictor.training and torch.is_grad_enabled():
            self._distill(approx, q, k)
        scores = approx.detach().float()
        if self.causal:
            scores = _causal_fill(scores)
        top = scores.topk(self.attended_keys(scores.shape[-1]), dim=-1)
        return top.indices, torch.isfinite(top.values)

    def mask_for(self, q, k, grid):
        idx, valid = self.select(q, k, grid)
        return selection_mask(idx, valid, k.shape[-2])
