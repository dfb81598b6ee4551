"""Staircase adaptive quantization (SAQ) of the KV cache (Li 2024, 'The Nature
of Mathematical Modeling and Probabilistic Optimization Engineering in
Generative AI', catalog S67).

The paper quantizes the key/value cache of multi-query attention in stairs:
the older a cached token, the fewer bits it keeps, so quality degrades
gradually while the cache shrinks. Only the abstract could be read; it names
the staircase but not its schedule or quantizer. Our choices:

* stairs of ``stair`` tokens by age (query position - key position); the
  newest stair keeps ``high`` bits and each older one half the bits of the
  stair before, down to ``low`` (8 -> 4 -> 2 by default: int8/int4/int2);
* per-token asymmetric min-max uniform quantization of each key and value
  vector over the head dim (a token's stored value then depends on its own
  age only); step = (max - min) / (2^bits - 1), so the error is at most
  step / 2;
* a token moving down a stair is re-quantized from its stored value (the full
  precision one is gone): halving the bits nests the grids
  (2^(2b) - 1 = (2^b - 1)(2^b + 1)), so the error stays below the stair's step;
* training passes gradients straight through the rounding.

In the parallel form query i sees key j at the stair of age i - j, exactly what
decoding token by token over such a cache sees (``decode.step`` passes the
cache through ``attend``). The score is softmax; use it with ``layout=mqa`` for
the paper's setting (one shared key/value head, quantized once).
"""
from __future__ import annotations

import torch

from archgram.errors import ShapeError
from archgram.ops.attention.parts import SCORES
from archgram.ops.attention.scores import Softmax


def stair_bits(high: int, low: int) -> list[int]:
    """Bits of stair 0, 1, ...: ``high`` halved per stair, ending at ``low``."""
    bits = [high]
    while bits[-1] > low:
        bits.append(max(low, bits[-1] // 2))
    return bits


def step_size(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Quantization step of each vector (last axis) at ``bits``: (max - min) / (2^bits - 1)."""
    return (x.amax(-1, keepdim=True) - x.amin(-1, keepdim=True)) / (2**bits - 1)


def quantize(x: torch.Tensor, bits: int) -> torch.Tensor:
    """x rounded per vector (last axis) to 2^bits levels between its min and max, dequantized."""
    low = x.amin(-1, keepdim=True)
    step = step_size(x, bits)
    safe = torch.where(step > 0, step, torch.ones_like(step))
    return torch.where(step > 0, torch.round((x - low) / safe) * safe + low, x)


def stairs(x: torch.Tensor, bits: list[int]) -> list[torch.Tensor]:
    """x as stored on each stair: quantized to bits[0], then re-quantized down each stair."""
    out, cur = [], x
    for b in bits:
        cur = quantize(cur, b)
        out.append(x + (cur - x).detach())  # straight-through gradient
    return out


@SCORES.register
class StaircaseQuantized(Softmax):
    """Softmax over a key/value cache quantized in stairs by token age (SAQ, S67)."""

    name = "saq"
    params = ("stair", "high", "low")
    refs = ("S67",)
    #: Decoding may pass the cache through ``attend`` (ages come from its shape).
    decodes_through_attend = True

    def __init__(self, heads: int, stair: int = 16, high: int = 8, low: int = 2):
        super().__init__(heads)
        self.stair, self.bits = stair, stair_bits(high, low)

    @classmethod
    def check(cls, pattern, causal, params):
        if not (causal or pattern.name == "causal" or getattr(pattern, "always_causal", False)):
            raise ShapeError("score 'saq' quantizes a key/value cache by token age: it needs causal attention")
        stair, high, low = params.get("stair", 16), params.get("high", 8), params.get("low", 2)
        for key, value in (("stair", stair), ("high", high), ("low", low)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ShapeError(f"score 'saq': {key} must be an integer >= 1, got {value!r}")
        if not low <= high <= 16:
            raise ShapeError(f"score 'saq': needs 1 <= low <= high <= 16 bits, got low={low}, high={high}")

    def stair_of(self, nq: int, nk: int, device) -> torch.Tensor:
        """(nq, nk) stair index of each key for each query; the queries are the last nq positions."""
        pos = torch.arange(nk - nq, nk, device=device)
        age = (pos[:, None] - torch.arange(nk, device=device)[None, :]).clamp(min=0)
        return (age // self.stair).clamp(max=len(self.bits) - 1)

    def mean_bits(self, n: int) -> float:
        """Bits per cached value averaged over a cache of n tokens (the memory it saves)."""
        return float(torch.tensor(self.bits, dtype=torch.float64)[self.stair_of(1, n, "cpu")].mean())

    def attend(self, q, k, v, mask, bias, scale, causal=False):
        nq, nk = q.shape[-2], k.shape[-2]
        stair = self.stair_of(nq, nk, q.device)
        bits = self.bits[: (nk - 1) // self.stair + 1]  # the stairs the oldest key (age nk - 1) reaches
        logits = torch.zeros(*q.shape[:-1], nk, dtype=q.dtype, device=q.device)
        for s, ks in enumerate(stairs(k, bits)):
            logits = logits + torch.where(stair == s, torch.matmul(q, ks.transpose(-1, -2)), 0.0)
        logits = logits * scale
        if bias is not None:
            logits = logits + bias
        weights = self.weights(logits, mask)
        out = 0
        for s, vs in enumerate(stairs(v, bits)):
            out = out + torch.matmul(torch.where(stair == s, weights, 0.0), vs)
        return out
