"""Routing attention (Roy et al. 2021, "Efficient Content-Based Sparse Attention
with Routing Transformers"; catalog S78).

Paper's defining mechanism: content-based sparse attention. Queries and keys
are routed to ``clusters`` centroids of an online spherical k-means (EMA
updates, no gradient); clusters are balanced by taking, for each centroid, the
w = N / clusters queries and the w keys nearest to it, and attention runs
within each cluster, so with sqrt(N) clusters a layer costs O(N^1.5 d). A
query may so fall in several clusters or in none.

What archgram does: exactly that. Each centroid takes its w = ceil(N / C)
nearest queries and w nearest keys (cosine, top-w); each cluster's queries
attend its keys plus their own key (softmax, C x w x (w + 1) logits, no N x N
matrix); a query in several clusters gets the mean of its clusters' outputs,
a query in none reads its own key only. Centroids move by EMA toward the unit
queries and keys nearest to them, in training only. Under a causal mask later
keys are dropped. Scores other than softmax run the dense masked path, where a
query sees the union of its clusters' keys under one normalisation.

What differs: q and k are put on the unit sphere by an L2 norm where the paper
uses a parameter-free layer norm.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from archgram.errors import ShapeError
from archgram.ops.attention.gathered import gather_keys
from archgram.ops.attention.parts import PATTERNS
from archgram.ops.attention.patterns import Pattern, require_integers


class Centroids(nn.Module):
    """Routing Transformer's per-head k-means centroids on the unit sphere, updated
    online by an exponential moving average (a buffer: no gradient, as in the paper)."""

    def __init__(self, heads: int, head_dim: int, clusters: int, decay: float):
        super().__init__()
        self.decay = decay
        self.register_buffer("centroids", F.normalize(torch.randn(heads, clusters, head_dim), dim=-1))

    def cosines(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, N, C) cosine of each (B, H, N, D) vector to each centroid of its head."""
        return F.normalize(x.float(), dim=-1) @ self.centroids.transpose(-1, -2)[None]

    def assign(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest centroid (cosine) of each (B, H, N, D) vector -> (B, H, N)."""
        return self.cosines(x).argmax(-1)

    @torch.no_grad()
    def update(self, x: torch.Tensor, ids: torch.Tensor) -> None:
        """Move each centroid toward the mean of the unit vectors assigned to it."""
        h, c, d = self.centroids.shape
        x = F.normalize(x.float(), dim=-1).transpose(0, 1).reshape(h, -1, d)
        onehot = F.one_hot(ids.transpose(0, 1).reshape(h, -1), c).float()  # (H, M, C)
        counts = onehot.sum(1)  # (H, C)
        means = (onehot.transpose(1, 2) @ x) / counts.clamp_min(1)[..., None]
        moved = self.decay * self.centroids + (1 - self.decay) * means
        self.centroids.copy_(torch.where(counts[..., None] > 0, F.normalize(moved, dim=-1), self.centroids))


@PATTERNS.register
class Routing(Pattern):
    """Balanced k-means routing: attention within clusters of w queries and w keys."""

    name = "routing"
    params = ("clusters", "decay")
    refs = ("S78",)
    data_dependent = True
    factorised = True  # softmax runs per cluster (``attend``)
    decay = 0.999

    def check(self, n, grid):
        require_integers(self, "clusters")
        if not isinstance(self.decay, (int, float)) or not 0 <= self.decay < 1:
            raise ShapeError(f"routing: decay must be in [0, 1), got {self.decay!r}")

    def module(self, heads, head_dim, tokens):
        self.centroids = Centroids(heads, head_dim, self.clusters, float(self.decay))
        return self.centroids

    def attended_keys(self, n: int) -> int:
        return min(n, -(-n // self.clusters) + 1)  # a balanced cluster plus the query itself

    def mask(self, n, grid, device):
        return None

    def members(self, q, k) -> tuple[torch.Tensor, torch.Tensor]:
        """(queries, keys), each (B, H, C, w): every centroid's w nearest queries and keys
        (the centroids first move by EMA in training)."""
        w = -(-k.shape[-2] // self.clusters)
        with torch.no_grad():
            if self.centroids.training:
                self.centroids.update(torch.cat((q, k), 2), torch.cat((self.centroids.assign(q), self.centroids.assign(k)), 2))
            queries = self.centroids.cosines(q).topk(w, dim=-2).indices.transpose(-1, -2)
            keys = self.centroids.cosines(k).topk(w, dim=-2).indices.transpose(-1, -2)
        return queries, keys

    def cluster_weights(self, q, k, scale: float):
        """(queries, keys, p): members (B, H, C, w) and each cluster's softmax
        (B, H, C, w, w + 1) over its keys and, last, the query's own key."""
        qi, ki = self.members(q, k)
        logits = gather_keys(q, qi) @ gather_keys(k, ki).transpose(-1, -2) * scale  # (B, H, C, w, w)
        own = (gather_keys(q, qi) * gather_keys(k, qi)).sum(-1, keepdim=True) * scale  # (B, H, C, w, 1)
        listed = ki[..., None, :] == qi[..., :, None]  # the query's own key is already in the cluster
        own = own.masked_fill(listed.any(-1, keepdim=True), float("-inf"))
        if self.causal:
            logits = logits.masked_fill(ki[..., None, :] > qi[..., :, None], float("-inf"))
        return qi, ki, torch.softmax(torch.cat((logits, own), -1), -1)

    def attend(self, q, k, v, scale: float) -> torch.Tensor:
        """(B, H, N, Dv): softmax within each cluster (its keys plus the query's own),
        averaged over a query's clusters; a query in none reads its own value."""
        qi, ki, p = self.cluster_weights(q, k, scale)
        out = p[..., :-1] @ gather_keys(v, ki) + p[..., -1:] * gather_keys(v, qi)  # (B, H, C, w, Dv)
        flat = qi.flatten(2)  # (B, H, C * w)
        total = v.new_zeros(*v.shape[:-1], out.shape[-1]).scatter_add(
            2, flat[..., None].expand(*flat.shape, out.shape[-1]), out.flatten(2, 3))
        count = v.new_zeros(v.shape[:-1]).scatter_add(2, flat, torch.ones_like(flat, dtype=v.dtype))[..., None]
        return torch.where(count > 0, total / count.clamp_min(1), v)

    def dense_weights(self, q, k, scale: float) -> torch.Tensor:
        """The (B, H, N, N) matrix ``attend`` applies to v (for analysis)."""
        qi, ki, p = self.cluster_weights(q, k, scale)
        n = k.shape[-2]
        cols = torch.cat((ki[..., None, :].expand(*qi.shape, ki.shape[-1]), qi[..., None]), -1)  # (B, H, C, w, w + 1)
        cells = (qi[..., None] * n + cols).flatten(2)  # row-major cell of each weight
        total = p.new_zeros(*p.shape[:2], n * n).scatter_add(2, cells, p.flatten(2)).unflatten(-1, (n, n))
        count = total.sum(-1, keepdim=True)  # each cluster row sums to 1: the number of clusters
        eye = torch.eye(n, dtype=p.dtype, device=p.device)
        return torch.where(count > 0.5, total / count.clamp_min(1), eye)

    def mask_for(self, q, k, grid):
        """Dense fallback: a query sees the union of its clusters' keys, and itself."""
        qi, ki = self.members(q, k)
        shape = (*qi.shape[:3], k.shape[-2])
        in_q = torch.zeros(shape, device=q.device).scatter(-1, qi, 1.0)  # (B, H, C, N)
        in_k = torch.zeros(shape, device=q.device).scatter(-1, ki, 1.0)
        seen = (in_q.transpose(-1, -2) @ in_k) > 0  # (B, H, N, N)
        return seen | torch.eye(k.shape[-2], dtype=torch.bool, device=q.device)
