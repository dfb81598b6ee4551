"""Combiner (catalog S27): full attention support at sub-quadratic cost, by
direct attention inside a block plus one learned summary per other block."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from archgram.ops.attention.parts import PATTERNS
from archgram.ops.attention.patterns import Pattern, require_integers


class LocalExpectation(nn.Module):
    """q(j | block) = softmax over the block's tokens of w_h . k_j, one learned
    vector per head; w = 0 (the start) is the uniform mean."""

    def __init__(self, heads: int, head_dim: int):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(heads, head_dim))

    def weights(self, k: torch.Tensor, blocks: torch.Tensor, nb: int) -> torch.Tensor:
        """(B, H, N): each token's probability within its own block."""
        s = torch.einsum("bhnd,hd->bhn", k, self.w.to(k.dtype))
        top = s.new_full((*s.shape[:2], nb), float("-inf")).scatter_reduce(-1, blocks.expand_as(s), s, "amax")
        e = torch.exp(s - top[..., blocks])
        total = e.new_zeros(*s.shape[:2], nb).index_add_(-1, blocks, e)
        return e / total[..., blocks]

    def summaries(self, k, v, blocks, nb) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(key summaries (B, H, nb, D), value summaries (B, H, nb, Dv), q(j|block) (B, H, N))."""
        p = self.weights(k, blocks, nb)
        ks = k.new_zeros(*k.shape[:2], nb, k.shape[-1]).index_add_(2, blocks, k * p[..., None])
        vs = v.new_zeros(*v.shape[:2], nb, v.shape[-1]).index_add_(2, blocks, v * p[..., None])
        return ks, vs, p


@PATTERNS.register
class Combiner(Pattern):
    """Combiner (Ren et al., NeurIPS 2021), fixed-block factorisation.

    Paper mechanism: attention is a conditional expectation; Combiner factorises
    p(j | i) so every query reaches every key at sub-quadratic cost: directly for
    the keys of its own region (block), and through one abstraction per other
    region Omega_r, p(j | i) = p(Omega_r | i) q(j | Omega_r), where q(j | Omega_r)
    is a learned local expectation inside the region; with blocks of sqrt(N)
    this costs O(N sqrt N) (Combiner-Fixed). Causal: only earlier regions.

    What archgram does: ``block`` tokens per region; q(j | block) =
    softmax_j(w_h . k_j) per head (w = 0 at init: the uniform mean); each other
    block is one summary with key sum_j q(j|block) k_j and value
    sum_j q(j|block) v_j; one softmax over the own-block logits and the summary
    logits. With the softmax score and no logit bias the op runs this compact
    form (``attend``: O(N (block + N / block) d), no N x N matrix; analysis
    reads its N x N equivalent from ``dense_weights``). Otherwise
    the same distribution is written exactly as an additive bias on the dense
    logits (``bias_for``: key j in block r gets q . kbar_r + log q(j|r) in place
    of q . k_j), for positions that add biases; other scores see those logits
    but not Combiner's normalisation.

    What differs: the region key is the q-weighted mean of the keys; the paper's
    experiments pool the region key (max-pooling, as we read it), which has no
    exact per-key form, so a user loses that pooling choice. Only the Fixed
    factorisation is offered (not Logsparse or Axial)."""

    name = "combiner"
    params = ("block",)
    refs = ("S27",)
    factorised = True

    def check(self, n, grid):
        require_integers(self, "block")

    def module(self, heads, head_dim, tokens):
        self.expectation = LocalExpectation(heads, head_dim)
        return self.expectation

    def attended_keys(self, n: int) -> int:
        return min(n, self.block + math.ceil(n / self.block) - 1)

    def mask(self, n, grid, device):
        return None

    def _blocks(self, n: int, device) -> tuple[torch.Tensor, int]:
        blocks = torch.arange(n, device=device) // self.block
        return blocks, int(blocks[-1]) + 1

    def bias_for(self, q, k, grid):
        """Dense exact form: additive logits that turn each far key into its block's summary."""
        n = q.shape[-2]
        blocks, nb = self._blocks(n, q.device)
        ks, _, p = self.expectation.summaries(k, k[..., :1], blocks, nb)
        scale = 1.0 / math.sqrt(q.shape[-1])
        swap = (q @ ks[..., blocks, :].transpose(-1, -2) - q @ k.transpose(-1, -2)) * scale
        swap = swap + p.clamp_min(torch.finfo(p.dtype).tiny).log()[..., None, :]
        own = blocks[:, None] == blocks[None, :]
        return swap.masked_fill(own, 0.0)

    def _weights(self, q, k, ks, blocks, nb: int, scale: float) -> torch.Tensor:
        """(B, H, N, block + nb): one softmax per query over its own block's keys
        (slot c: key block_start + c) and, after them, every block's summary
        (own and, if causal, later blocks at weight 0)."""
        n, b = q.shape[-2], self.block
        pad = nb * b - n
        qb, kb = (F.pad(t, (0, 0, 0, pad)).unflatten(-2, (nb, b)) for t in (q, k))
        local = qb @ kb.transpose(-1, -2) * scale  # (B, H, nb, b, b)
        pos = torch.arange(nb * b, device=q.device).view(nb, b)
        ok = (pos < n)[:, None, :].expand(nb, b, b)  # padded keys
        if self.causal:
            ok = ok & (pos[:, None, :] <= pos[:, :, None])
        local = local.masked_fill(~ok, float("-inf")).flatten(-3, -2)[..., :n, :]  # (B, H, N, b)
        far = q @ ks.transpose(-1, -2) * scale  # (B, H, N, nb)
        ids = torch.arange(nb, device=q.device)
        seen = (ids[None, :] < blocks[:, None]) if self.causal else (ids[None, :] != blocks[:, None])
        far = far.masked_fill(~seen, float("-inf"))
        return torch.softmax(torch.cat((local, far), -1), -1)

    def attend(self, q, k, v, scale: float) -> torch.Tensor:
        """Compact softmax over (own-block keys, other-block summaries): (B, H, N, Dv)."""
        n, b = q.shape[-2], self.block
        blocks, nb = self._blocks(n, q.device)
        ks, vs, _ = self.expectation.summaries(k, v, blocks, nb)
        w = self._weights(q, k, ks, blocks, nb, scale)
        pad = nb * b - n
        vb = F.pad(v, (0, 0, 0, pad)).unflatten(-2, (nb, b))
        near = F.pad(w[..., :b], (0, 0, 0, pad)).unflatten(-2, (nb, b)) @ vb  # (B, H, nb, b, Dv)
        return near.flatten(-3, -2)[..., :n, :] + w[..., b:] @ vs

    def dense_weights(self, q, k, scale: float) -> torch.Tensor:
        """The (B, H, N, N) matrix ``attend`` applies to v (for analysis): an
        own-block key gets its direct weight; a key j of another block r gets
        p(block r | i) q(j | r), the summary's weight spread by the local expectation."""
        n, b = q.shape[-2], self.block
        blocks, nb = self._blocks(n, q.device)
        ks, _, p = self.expectation.summaries(k, k[..., :1], blocks, nb)
        w = self._weights(q, k, ks, blocks, nb, scale)
        far = w[..., b:][..., blocks] * p[..., None, :]  # own block's summary has weight 0
        cols = (blocks[:, None] * b + torch.arange(b, device=q.device)).expand(*w.shape[:-1], b)
        near = w.new_zeros(*w.shape[:-1], nb * b).scatter(-1, cols, w[..., :b])[..., :n]  # padded slots dropped
        return near + far
