"""Incremental decoding with the attention op: one token at a time.

Softmax-family scores keep a key/value cache; linear scores (those with a
``step`` method) keep their recurrent state. Decoding equals the causal
parallel form exactly where the mechanism allows; ``decoding_support`` says
where it does not, and why:

* the op must be causal (``causal=True`` or ``pattern=causal``) on a sequence;
* the pattern must not depend on the sequence's final length or on content:
  ``full``, ``causal`` and ``window`` decode; NAT neighbourhoods shift their
  windows at the far border (unknown while decoding) and content-based patterns
  select among all keys;
* positions that re-weight the whole matrix (URPE, GPSA) are not decodable here;
* scores that override ``attend`` without a ``step`` (agent, kernel_rpe) are not,
  unless they read the whole cache in ``attend`` (``decodes_through_attend``:
  SAQ's staircase-quantized cache).

This is the readable reference: the cache keeps raw keys and re-applies the
position rotation each step (O(t) per token), which any ``rotate`` supports.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from archgram.errors import ShapeError
from archgram.ops.attention.op import Attention
from archgram.ops.attention.scores import Score

DECODABLE_PATTERNS = ("full", "causal", "window")


def decoding_support(attn: Attention) -> str | None:
    """None if ``attn`` can decode token by token, else the reason it cannot."""
    if attn.grid is not None:
        return "decoding needs a sequence input, not an image"
    if not (attn.causal or attn.pattern.name == "causal"):
        return "decoding needs causal attention (causal=true or pattern=causal)"
    if attn.pattern.name not in DECODABLE_PATTERNS:
        return f"pattern '{attn.pattern.name}' depends on the final length or on content"
    if attn.position.reweights:
        return f"position '{attn.position.name}' re-weights the whole attention matrix"
    score = type(attn.score)
    reads_cache = getattr(score, "decodes_through_attend", False)
    if score.attend is not Score.attend and not hasattr(score, "step") and not reads_cache:
        return f"score '{attn.score.name}' has no recurrent form"
    return None


@dataclass
class DecodeState:
    """What decoding carries between tokens."""

    t: int = 0
    keys: torch.Tensor | None = None  # raw (unrotated) keys, (B, H, t, d)
    values: torch.Tensor | None = None
    recurrent: object = None  # a linear score's own state
    extra: dict = field(default_factory=dict)


def step(attn: Attention, x_t: torch.Tensor, state: DecodeState | None = None) -> tuple[torch.Tensor, DecodeState]:
    """Attend from token ``x_t`` (B, 1, D) over all earlier tokens; return its output and the new state."""
    reason = decoding_support(attn)
    if reason:
        raise ShapeError(f"attention cannot decode incrementally: {reason}")
    state = state or DecodeState()
    q, k, v = attn.layout.qkv(x_t)
    k, v = attn.layout.expand(k), attn.layout.expand(v)
    keys = k if state.keys is None else torch.cat((state.keys, k), dim=2)
    values = v if state.values is None else torch.cat((state.values, v), dim=2)
    t = state.t
    # Rotate as the parallel form does: q at position t, keys at 0..t.
    padded_q = torch.zeros_like(keys[:, : q.shape[1]]).expand(q.shape[0], q.shape[1], t + 1, q.shape[-1]).clone()
    padded_q[..., -1:, :] = q
    q_rot, keys_rot = attn.position.rotate(padded_q, keys, None)
    q_t = q_rot[..., -1:, :]
    if hasattr(type(attn.score), "step") and type(attn.score).attend is not Score.attend:
        out, recurrent = attn.score.step(state.recurrent, q_t[..., 0, :], keys_rot[..., -1, :], v[..., 0, :], attn.scale)
        out = out[..., None, :]
    else:
        recurrent = None
        out = _split_kv(attn, q_t, keys_rot, values)
    if out is None:
        mask = attn.mask(t + 1, x_t.device)
        mask_row = None if mask is None else mask[t : t + 1]
        bias = attn.position.bias(t + 1, t + 1, x_t.device)
        bias_row = None if bias is None else bias[..., t : t + 1, :]
        out = attn.score.attend(q_t, keys_rot, values, mask_row, bias_row, attn.scale)
    if attn.gate is not None:
        out = out * attn.gate(x_t)
    y = attn.layout.out(out, x_t)
    return y, DecodeState(t + 1, keys, values, recurrent)


def _split_kv(attn: Attention, q_t, keys, values) -> torch.Tensor | None:
    """The Lean Attention decode kernel (archgram/kernels/decode, S25) for plain softmax
    over the whole cache (pattern full or causal, no logit bias) on CUDA; None
    where it does not apply (the readable path below runs)."""
    from archgram.kernels import fallbacks
    from archgram.kernels.decode import dispatch
    from archgram.ops.attention.scores import Softmax

    if type(attn.score) is not Softmax or attn.pattern.name not in ("full", "causal"):
        fallbacks.record("decode", f"score {type(attn.score).__name__} / pattern {attn.pattern.name}: "
                                   "split-KV decode serves softmax over the whole cache")
        return None
    if attn.position.bias(1, 1, q_t.device) is not None:
        fallbacks.record("decode", f"position {type(attn.position).__name__} adds a logit bias")
        return None
    return dispatch.attention(q_t, keys, values, scale=attn.scale)


def decode(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """Run ``step`` over every token of ``x`` (B, N, D); equals ``attn(x)`` for decodable configurations."""
    state = None
    outs = []
    for i in range(x.shape[1]):
        y, state = step(attn, x[:, i : i + 1], state)
        outs.append(y)
    return torch.cat(outs, dim=1)
