"""Deconstructing attention (Xue et al. 2025, catalog S09): scores that each relax
one principle of attention -- input-independent mixing (``fixed_mixing``) and a
non-dot-product similarity (``l2``). The earlier-layer queries/keys relaxation
is the merge op in earlier_qk.py.
"""
from __future__ import annotations

import torch
from torch import nn

from archgram.ops.attention.parts import SCORES
from archgram.ops.attention.scores import LengthLimited, Score, masked_fill_min, masked_zero


@SCORES.register
class FixedMixing(LengthLimited):
    """Input-independent token mixing (Xue et al. 2025, "Deconstructing Attention",
    catalog S09): the sequence-dependence relaxation. Each head learns an
    ``max_len`` x ``max_len`` logit table; weights = softmax(T_h[:N, :N] + bias)
    over the visible keys, the same for every input. The layout's q and k
    projections are unused (only v is mixed). Starts as a uniform average
    (zero logits: under a causal mask, a running mean). Inputs longer than
    ``max_len`` are refused at shape time.

    Catalog S09, read against the paper. Paper: attention bundles four principles
    (mixing across positions, sequence-dependent weights, the dot-product +
    softmax form, queries/keys tied to the current hidden state); controlled
    variants relax each, uniformly or in hybrid stacks that keep standard
    attention in some layers. archgram: input-independent mixing (this score),
    a non-dot-product similarity (``l2``), queries/keys from an earlier layer
    (the ``earlier_qk_attention`` merge op) and hybrid stacks (``attention.pcfg``
    mixes scores per layer and offers the earlier-layer hybrid). Differs: the
    paper's static-embedding variant takes queries/keys from the input
    embeddings at every layer; a tree grammar reaches one layer back (the
    branch point), so only the layer after a split sees an earlier state."""

    name = "fixed_mixing"
    params = ("max_len",)
    refs = ("S09",)

    def __init__(self, heads: int, max_len: int = 64):
        super().__init__(heads)
        self.table = nn.Parameter(torch.zeros(heads, max_len, max_len))

    default_max_len = 64
    too_long = "learned {m} x {m} mixing weights cannot serve {n} tokens (raise max_len)"

    def logits(self, q, k, scale):
        n, m = q.shape[-2], k.shape[-2]
        return self.table[:, :n, :m].expand(q.shape[0], -1, -1, -1)

    def weights(self, logits, mask):
        return masked_zero(torch.softmax(masked_fill_min(logits, mask), dim=-1), mask)


@SCORES.register
class L2Distance(Score):
    """Non-dot-product similarity (Xue et al. 2025, catalog S09): logits are negative
    squared Euclidean distances, -scale * ||q_i - k_j||^2, then softmax. Unlike
    the dot product, a token is always most similar to an identical key."""

    name = "l2"
    refs = ("S09",)

    def logits(self, q, k, scale):
        qq = q.pow(2).sum(-1, keepdim=True)
        kk = k.pow(2).sum(-1, keepdim=True).transpose(-1, -2)
        return -(qq + kk - 2 * torch.matmul(q, k.transpose(-1, -2))).clamp(min=0) * scale

    def weights(self, logits, mask):
        return masked_zero(torch.softmax(masked_fill_min(logits, mask), dim=-1), mask)
