"""Visual attention redistribution (Kang et al. 2025, "See What You Are Told: Visual
Attention Sink in Large Multimodal Models", VAR, catalog S71).

Some tokens receive a large share of attention whatever the query -- sink
tokens. The paper finds them by a massive activation in a few fixed hidden
dimensions (phi(x) = max_{d in D_sink} |x_d| / rms(x) > tau, tau = 20), shows
that removing them does not hurt, and so treats the attention they receive as a
surplus budget: in image-centric heads (rows whose attention is not dominated by
sinks, sink share <= rho) it keeps a fraction p of every sink weight and hands
the freed (1 - p) * sink mass to the non-sink tokens in proportion to their
current weights. Rows stay normalised; masked keys stay zero (they get 0 of the
budget because they had 0 weight).

Here ``ratio`` = 1 - p is the fraction moved (paper default p = 0.6, ratio 0.4),
``rho`` the head (row) selection threshold, and sinks are detected either
  * ``by=attention`` (default): a key is a sink if it receives more than
    ``threshold`` times the attention uniform weights would give it (averaged
    over heads and queries of each example) -- the defining symptom; or
  * ``by=activation``: the paper's massive-activation test phi > ``threshold`` on
    the keys, phi = max_d |k_d| / rms(k) per head, a sink if any head's key fires.
    phi <= sqrt(head_dim), so a threshold at or above it is refused at shape time.

Deviations: the paper's test reads the residual-stream hidden state in model-
specific dimensions D_sink; a score part sees q, k, v only, so the activation
test reads the head's key and all its dimensions. The paper redistributes only to
image tokens and selects heads by their image attention (>= 0.2); an op of one
modality has only "image" tokens, so every non-sink visible key receives and the
image-attention condition always holds. The paper applies VAR training-free to a
trained LMM; here it is a fixed post-softmax transform that a searched model
trains through (the selection is not differentiated).

In three parts: Paper's defining mechanism: detect visual sink tokens by
massive hidden activations, select image-centric heads, and recycle a fixed
fraction of the sinks' attention to the image tokens, row sums kept.
What archgram does: sink detection by attention share or by the key's
massive activation, row selection by sink share, the proportional
redistribution of ``ratio`` of the sink mass. What differs: detection reads
the head's keys, not the residual-stream dimensions D_sink (those belong to one
pretrained LMM, found by inspecting it; a model searched from scratch has none
known, and a score sees only q, k, v); tensors carry no modality labels, so
every non-sink key receives and every row passes the image-attention test.
"""
from __future__ import annotations

import math

import torch

from archgram.errors import ShapeError
from archgram.ops.attention.parts import SCORES
from archgram.ops.attention.scores import Score, masked_fill_min, masked_zero

DETECTORS = ("attention", "activation")


def attention_sinks(weights: torch.Tensor, mask: torch.Tensor | None, threshold: float) -> torch.Tensor:
    """(B, Nk) bool: keys receiving more than ``threshold`` times their uniform share.

    ``weights`` (B, H, Nq, Nk); the uniform share of key j is sum_i 1/|visible_i|
    over the queries i that can see j, so a causal mask's early keys are not
    flagged merely for being visible to more queries."""
    w = weights.detach()
    if mask is None:
        expected = torch.full(w.shape[-1:], w.shape[-2] / w.shape[-1], dtype=w.dtype, device=w.device)
        expected = expected.expand(w.shape[0], -1) * w.shape[1]
    else:
        m = mask.to(w.dtype).expand_as(w)
        expected = (m / m.sum(-1, keepdim=True).clamp(min=1)).sum((1, 2))
    received = w.sum((1, 2))
    return (received > threshold * expected) & (expected > 0)


def activation_sinks(k: torch.Tensor, threshold: float) -> torch.Tensor:
    """(B, N) bool: tokens whose key has a massive activation in some head,
    max_d |k_d| / rms(k) > ``threshold`` (the paper's phi, on keys)."""
    k = k.detach()
    rms = k.pow(2).mean(-1).sqrt().clamp(min=torch.finfo(k.dtype).tiny)
    phi = k.abs().amax(-1) / rms  # (B, H, N)
    return (phi > threshold).any(1)


def redistribute(weights: torch.Tensor, sinks: torch.Tensor, ratio: float, rho: float = 0.5) -> torch.Tensor:
    """Move ``ratio`` of the sink weight of each selected row to its non-sink keys,
    in proportion to their weights. ``weights`` (B, H, Nq, Nk); ``sinks`` (B, Nk)
    bool. A row is selected when its sink share is at most ``rho`` (a head that
    is mostly sink is left alone, as in the paper) and it has sink and non-sink
    weight. Row sums are unchanged."""
    s = sinks[:, None, None, :].to(weights.dtype)
    sink = weights * s
    rest = weights - sink
    sink_mass, rest_mass = sink.sum(-1, keepdim=True), rest.sum(-1, keepdim=True)
    total = sink_mass + rest_mass
    selected = (sink_mass > 0) & (rest_mass > 0) & (sink_mass <= rho * total)
    budget = ratio * sink_mass
    moved = weights - ratio * sink + budget * rest / rest_mass.clamp(min=torch.finfo(weights.dtype).tiny)
    return torch.where(selected, moved, weights)


@SCORES.register
class SinkRedistribute(Score):
    """Softmax attention with VAR (catalog S71): detect sink keys, move ``ratio`` of
    their weight to the other visible keys in rows not dominated by sinks."""

    name = "sink_redistribute"
    params = ("ratio", "threshold", "rho", "by")
    refs = ("S71",)

    def __init__(self, heads: int, ratio: float = 0.4, threshold: float = 4.0, rho: float = 0.5, by: str = "attention"):
        super().__init__(heads)
        self.ratio, self.threshold, self.rho, self.by = float(ratio), float(threshold), float(rho), by
        self._key_sinks: torch.Tensor | None = None

    @classmethod
    def check(cls, pattern, causal, params):
        def number(key, default, low, high):
            v = params.get(key, default)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not low <= v <= high:
                raise ShapeError(f"score 'sink_redistribute': {key} must be a number in [{low}, {high}], got {v!r}")

        number("ratio", 0.4, 0.0, 1.0)
        number("rho", 0.5, 0.0, 1.0)
        number("threshold", 4.0, 0.0, math.inf)
        if params.get("by", "attention") not in DETECTORS:
            raise ShapeError(f"score 'sink_redistribute': by must be one of {', '.join(DETECTORS)}")

    @classmethod
    def check_shape(cls, n, head_dim, params):
        t = params.get("threshold", 4.0)
        if params.get("by", "attention") == "activation" and t >= math.sqrt(head_dim):
            raise ShapeError(f"score 'sink_redistribute': max|k|/rms(k) <= sqrt({head_dim}) = {math.sqrt(head_dim):.2f}, "
                             f"so threshold {t} never flags a sink (lower it or widen the heads)")

    def logits(self, q, k, scale):
        if self.by == "activation":  # the keys are only seen here; weights() reads the result next
            self._key_sinks = activation_sinks(k, self.threshold)
        return super().logits(q, k, scale)

    def sinks(self, w: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.by == "attention":
            return attention_sinks(w, mask, self.threshold)
        if self._key_sinks is None:
            raise RuntimeError("sink_redistribute(by=activation) reads the keys in logits(); call it before weights()")
        sinks, self._key_sinks = self._key_sinks, None
        return sinks

    def weights(self, logits, mask):
        w = masked_zero(torch.softmax(masked_fill_min(logits, mask), dim=-1), mask)
        return redistribute(w, self.sinks(w, mask), self.ratio, self.rho)


__all__ = ["SinkRedistribute", "activation_sinks", "attention_sinks", "redistribute"]
