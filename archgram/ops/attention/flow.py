"""Flowformer's flow-conserving linear attention (Wu et al. 2022, catalog S34):
the non-causal and causal equations as functions, and the ``flow`` score that
serves both and decodes token by token.
"""
from __future__ import annotations

import torch

from archgram.ops.attention.linear import LinearCost, refuse_bias
from archgram.ops.attention.linear_forms import EPS
from archgram.ops.attention.parts import SCORES


def flow_attention(q, k, v) -> torch.Tensor:
    """Flow-Attention (Wu et al. 2022, S34), non-causal, on sigmoid features:
      incoming flow of sink i   I_i = phi(q_i) . sum_j phi(k_j)
      outgoing flow of source j O_j = phi(k_j) . sum_i phi(q_i)
      conserved  I^_i = phi(q_i) . sum_j phi(k_j) / O_j,  O^_j = phi(k_j) . sum_i phi(q_i) / I_i
      competition  V^ = n softmax_j(O^) v,   allocation  out_i = sigmoid(I^_i) phi(q_i) (phi(K)^T V^) / I_i.
    eps and the clamp of O^ to [-1, 1] follow the official code."""
    q, k = torch.sigmoid(q), torch.sigmoid(k)
    n = k.shape[-2]
    incoming = 1.0 / ((q + EPS) @ (k.sum(-2) + EPS)[..., None])[..., 0]  # 1 / I
    outgoing = 1.0 / ((k + EPS) @ (q.sum(-2) + EPS)[..., None])[..., 0]  # 1 / O
    sink = ((q + EPS) @ ((k * outgoing[..., None]).sum(-2) + EPS)[..., None])[..., 0]
    source = ((k + EPS) @ ((q * incoming[..., None]).sum(-2) + EPS)[..., None])[..., 0].clamp(-1.0, 1.0)
    allocation = torch.sigmoid(sink * (q.shape[-2] / n))
    competition = torch.softmax(source, dim=-1) * n
    kv = k.transpose(-1, -2) @ (v * competition[..., None])
    return (q * incoming[..., None]) @ kv * allocation[..., None]


def _flow_causal_terms(q, k, qsum, ksum, count):
    """Per-token flows of the causal form given the running sums up to this token."""
    incoming = count / ((q + EPS) * (ksum + EPS)).sum(-1)
    outgoing = count / ((k + EPS) * (qsum + EPS)).sum(-1)
    return incoming, outgoing


def flow_attention_causal(q, k, v) -> torch.Tensor:
    """Causal Flow-Attention: every sum becomes a prefix sum and each flow is
    rescaled by the number of tokens it saw (t + 1), as in the official code;
    competition is a running softmax, so past weights never change."""
    q, k = torch.sigmoid(q), torch.sigmoid(k)
    count = torch.arange(1, q.shape[-2] + 1, device=q.device, dtype=q.dtype)
    incoming, outgoing = _flow_causal_terms(q, k, q.cumsum(-2), k.cumsum(-2), count)
    sink = ((q + EPS) * ((k * outgoing[..., None]).cumsum(-2) + EPS)).sum(-1) / count
    source = (((k + EPS) * ((q * incoming[..., None]).cumsum(-2) + EPS)).sum(-1) / count).clamp(-1.0, 1.0)
    allocation = torch.sigmoid(sink)
    competition = torch.exp(source) / torch.exp(source).cumsum(-1) * count
    kv = (k[..., :, None] * (v * competition[..., None])[..., None, :]).cumsum(-3)  # (B, H, N, D, Dv)
    out = ((q * (incoming / count)[..., None])[..., None, :] @ kv)[..., 0, :]
    return out * allocation[..., None]


@SCORES.register
class Flow(LinearCost):
    """Flowformer flow-conserving linear attention (catalog S34): source
    competition (softmax over conserved outgoing flow reweights values) and sink
    allocation (sigmoid of conserved incoming flow gates results). Causal form
    from the official code; it decodes recurrently (``step``).

    Fidelity (S34):
      Paper: attention as a flow network: sigmoid features, incoming flow of each
        sink and outgoing flow of each source, conserved flows computed against
        each other, source competition (softmax over conserved outgoing flow,
        scaled by n) reweights values and sink allocation (sigmoid of conserved
        incoming flow) gates outputs; linear cost; causal form with prefix sums.
      archgram: those equations, the causal variant and an O(1)-state decoder.
      Differs: nothing of the mechanism (eps and the clamp of O^ follow the
        official code).
    """

    name = "flow"
    refs = ("S34",)
    takes_bias = False

    def attend(self, q, k, v, mask, bias, scale, causal=False):
        refuse_bias(self, bias)
        return flow_attention_causal(q, k, v) if causal or mask is not None else flow_attention(q, k, v)

    def step(self, state, q_t, k_t, v_t, scale: float | None = None):
        """One token of the causal form; the state holds the running sums."""
        q, k = torch.sigmoid(q_t), torch.sigmoid(k_t)
        if state is None:
            zeros = torch.zeros_like(q)
            state = {"t": 0, "qsum": zeros, "ksum": zeros, "kout": zeros, "qin": zeros,
                     "expsum": zeros[..., 0], "kv": q.new_zeros(*q.shape, v_t.shape[-1])}
        s = dict(state)
        s["t"] += 1
        count = float(s["t"])
        s["qsum"], s["ksum"] = s["qsum"] + q, s["ksum"] + k
        incoming, outgoing = _flow_causal_terms(q, k, s["qsum"], s["ksum"], count)
        s["kout"] = s["kout"] + k * outgoing[..., None]
        s["qin"] = s["qin"] + q * incoming[..., None]
        sink = ((q + EPS) * (s["kout"] + EPS)).sum(-1) / count
        source = (((k + EPS) * (s["qin"] + EPS)).sum(-1) / count).clamp(-1.0, 1.0)
        s["expsum"] = s["expsum"] + torch.exp(source)
        competition = torch.exp(source) / s["expsum"] * count
        s["kv"] = s["kv"] + k[..., :, None] * (v_t * competition[..., None])[..., None, :]
        out = ((q * (incoming / count)[..., None])[..., None, :] @ s["kv"])[..., 0, :]
        return out * torch.sigmoid(sink)[..., None], s
