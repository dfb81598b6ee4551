"""Third-order (Kronecker) attention (Alman & Song 2024, catalog S63): each query
attends to pairs of keys, in the exact O(N^3) form.
"""
from __future__ import annotations

import torch
from torch import nn

from archgram.ops.attention.parts import SCORES
from archgram.ops.attention.scores import LengthLimited, masked_fill_min, masked_zero


@SCORES.register
class TripleWise(LengthLimited):
    """Third-order attention (Alman & Song 2024, "How to Capture Higher-order
    Correlations? Generalizing Matrix Softmax Attention to Kronecker
    Computation", catalog S63): each query attends to pairs of keys,
    out = D^-1 exp(Q (K1 (/) K2)^T) (V1 (/) V2), (/) the column-wise Kronecker
    product, i.e. logit_i(j, l) = scale * sum_c q_ic k1_jc k2_lc and value
    v1_j * v2_l (elementwise). K1, V1 are the layout's k, v; K2 = K W_k, V2 = V W_v
    with per-head d x d maps starting at the identity. A pair is visible only if
    both keys are; position biases add for both keys. This is the naive O(N^3)
    form (the paper's almost-linear algorithm for bounded entries is a
    polynomial-method approximation, not implemented), so inputs longer than
    ``max_len`` are refused at shape time.

    Paper's defining mechanism: tensor (third-order) attention, a softmax over
    pairs of keys with logit <q_i, k1_j * k2_l> and value v1_j * v2_l written
    with column-wise Kronecker products, plus the complexity result: with
    entries bounded by o(cbrt(log n)) an almost-linear-time approximation
    exists, above that bound no sub-cubic one does (under SETH).
    What archgram does: the exact pairwise softmax above, K2/V2 as learned maps
    of the layout's K/V, masks and position biases applied to both keys.
    What differs: the bounded-entry almost-linear algorithm is absent; it is a
    polynomial-method construction whose degree grows with log n and whose
    constants make it an existence proof rather than a usable kernel, so the
    op is the cubic form on short sequences (max_len)."""

    name = "triplewise"
    params = ("max_len",)
    refs = ("S63",)

    def __init__(self, heads: int, head_dim: int, max_len: int = 32):
        super().__init__(heads)
        eye = torch.eye(head_dim).repeat(heads, 1, 1)
        self.key_map = nn.Parameter(eye.clone())
        self.value_map = nn.Parameter(eye.clone())

    takes_head_dim = True

    default_max_len = 32
    too_long = "the naive O(N^3) form is limited to {m} tokens, got {n} (raise max_len)"

    def attend(self, q, k, v, mask, bias, scale, causal=False):
        k2, v2 = torch.matmul(k, self.key_map), torch.matmul(v, self.value_map)
        logits = torch.einsum("bhic,bhjc,bhlc->bhijl", q, k, k2) * scale
        if bias is not None:
            logits = logits + bias[..., :, :, None] + bias[..., :, None, :]
        pair = None if mask is None else mask[..., :, :, None] & mask[..., :, None, :]
        b, h, n, m, _ = logits.shape
        flat = masked_fill_min(logits, pair).reshape(b, h, n, m * m)
        w = masked_zero(torch.softmax(flat, dim=-1).view(b, h, n, m, m), pair)
        return torch.einsum("bhijl,bhjc,bhlc->bhic", w, v, v2)
