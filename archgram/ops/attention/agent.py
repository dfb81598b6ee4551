"""Agent attention (Han et al. 2024, catalog S40): a few agent tokens pooled from
the queries aggregate the values and broadcast them back, at linear cost.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from archgram.errors import ShapeError
from archgram.ops.attention.linear import refuse_bias
from archgram.ops.attention.parts import SCORES
from archgram.ops.attention.scores import Score


@SCORES.register
class Agent(Score):
    """Agent attention (Han et al. 2024, catalog S40): ``agents`` agent tokens A,
    average-pooled from the queries along the token axis, first aggregate
    (V_A = softmax(A K^T s + B1) V) and then broadcast
    (out = softmax(Q A^T s + B2) V_A), cost O(n a d); plus DWC(V), a depthwise
    convolution of the values (kernel ``dwc``, over the image grid or the
    sequence; 0 drops it) that restores the feature diversity the few agents
    lose. B1 (agents x keys) and B2 (queries x agents) are the learned agent
    biases, per head, zero at init. Non-causal only (the agents summarise every
    query), so it has no incremental decoding.

    Fidelity (S40): faithful -- Paper: the agent attention module
    O = softmax(Q A^T + B2) softmax(A K^T + B1) V + DWC(V) with pooled agent
    tokens and position-aware agent biases; archgram: that module, the biases
    sized for the op's token count (the op hands over its geometry); differs:
    the paper builds each bias from row, column and block components to save
    parameters on large images; here each is one full (agents x tokens) table,
    the same family of biases at a higher parameter cost."""

    name = "agent"
    params = ("agents", "dwc")
    refs = ("S40",)
    takes_bias = False
    takes_head_dim = True
    #: The op passes ``tokens`` and ``grid`` (the biases and DWC follow the input's geometry).
    uses_geometry = True

    @classmethod
    def flops(cls, n, head_dim, heads, batch, *, keys=None, qk_dim=None, agents=16, dwc=3, **params):
        """Two a-query softmax attentions (agents over the keys, queries over the
        agents) plus the depthwise conv of the values."""
        keys = n if keys is None else keys
        attention = 2 * batch * heads * int(agents) * (keys + n) * ((qk_dim or head_dim) + head_dim)
        return attention + 2 * batch * heads * head_dim * keys * int(dwc) ** 2

    def __init__(self, heads, head_dim, agents: int = 16, dwc: int = 3, tokens: int | None = None, grid=None,
                 value_dim: int | None = None):
        super().__init__(heads)
        self.agents, self.grid = int(agents), grid
        #: agent biases, built when the op gives its token count
        self.agent_bias = nn.Parameter(torch.zeros(heads, self.agents, tokens)) if tokens else None
        self.query_bias = nn.Parameter(torch.zeros(heads, tokens, self.agents)) if tokens else None
        channels = heads * (value_dim or head_dim)  # the values' head dim (a layout may widen q/k, e.g. random_qk)
        conv = nn.Conv2d if grid is not None else nn.Conv1d
        self.dwc = conv(channels, channels, int(dwc), padding=int(dwc) // 2, groups=channels) if dwc else None

    @classmethod
    def check(cls, pattern, causal, params):
        if causal or pattern.name != "full":
            raise ShapeError("score 'agent' pools agents from all queries: it serves only the full, non-causal pattern")
        if int(params.get("agents", 16)) < 1:
            raise ShapeError("agent attention needs at least one agent token")
        dwc = params.get("dwc", 3)
        if isinstance(dwc, bool) or not isinstance(dwc, int) or dwc < 0 or (dwc and dwc % 2 == 0):
            raise ShapeError(f"agent attention: dwc is 0 (off) or an odd kernel size, got {dwc!r}")

    def agent_tokens(self, q: torch.Tensor) -> torch.Tensor:
        b, h, n, d = q.shape
        pooled = F.adaptive_avg_pool1d(q.reshape(b * h, n, d).transpose(1, 2), self.agents)
        return pooled.transpose(1, 2).reshape(b, h, self.agents, d)

    def value_conv(self, v: torch.Tensor) -> torch.Tensor:
        """DWC(V): v (B, H, N, d) convolved depthwise over the grid (or the sequence)."""
        b, h, n, d = v.shape
        x = v.permute(0, 1, 3, 2).reshape(b, h * d, n)
        if self.grid is not None:
            x = x.view(b, h * d, *self.grid)
        return self.dwc(x).reshape(b, h, d, n).permute(0, 1, 3, 2)

    def attend(self, q, k, v, mask, bias, scale, causal=False):
        refuse_bias(self, bias)
        if causal or mask is not None:
            raise ShapeError("score 'agent' cannot be causal")
        a = self.agent_tokens(q)
        gather, broadcast = a @ k.transpose(-1, -2) * scale, q @ a.transpose(-1, -2) * scale
        if self.agent_bias is not None:
            gather, broadcast = gather + self.agent_bias.to(gather.dtype), broadcast + self.query_bias.to(broadcast.dtype)
        out = torch.softmax(broadcast, dim=-1) @ (torch.softmax(gather, dim=-1) @ v)
        return out if self.dwc is None else out + self.value_conv(v)
