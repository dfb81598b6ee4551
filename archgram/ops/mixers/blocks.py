"""Whole MetaFormer-style blocks (token mixing and channel MLP, each with norm and residual).

They return their input shape, so a grammar stacks them directly; the token mixing of each
is what the papers vary: a static MLP over tokens (MLP-Mixer), average pooling (PoolFormer),
a gated depthwise conv (MambaOut), gated linear units (Activator), a token-mixing MLP that
generates an elementwise gate (NiNformer).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from archgram.ops.mixers.common import Mixer, depthwise, hidden, to_channels_first
from archgram.ops.registry import Arg, register_op
from archgram.ops.tokens import from_tokens, to_tokens
from archgram.shapes import IMAGE_RANK, Shape, channels, positions

RATIO = {"token_ratio": Arg(float, 0.5, low=0.01, doc="hidden width of the token MLP / N"),
         "channel_ratio": Arg(float, 4.0, low=0.01, doc="hidden width of the channel MLP / D")}


def mlp(i: int, h: int, o: int) -> nn.Sequential:
    """Two-layer GELU MLP (the transformer FFN)."""
    return nn.Sequential(nn.Linear(i, h), nn.GELU(), nn.Linear(h, o))


class TokenMLP(nn.Module):
    """An MLP applied along the token axis of (B, N, D), shared by all channels."""

    def __init__(self, n: int, h: int):
        super().__init__()
        self.mlp = mlp(n, h, n)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(t.transpose(1, 2)).transpose(1, 2)


class MixerLayer(nn.Module):
    """t + TokenMLP(LN t), then t + ChannelMLP(LN t), on (B, N, D) tokens."""

    def __init__(self, n: int, d: int, token_ratio: float, channel_ratio: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.tokens = TokenMLP(n, hidden(n, token_ratio))
        self.channels = mlp(d, hidden(d, channel_ratio), d)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t = t + self.tokens(self.norm1(t))
        return t + self.channels(self.norm2(t))


@register_op("mlp_mixer", family="mixers", args=RATIO, refs=("S57",))
class MLPMixer(Mixer):
    """MLP-Mixer block (Tolstikhin et al. 2021): token-mixing MLP across positions, then
    channel-mixing MLP, each pre-LayerNorm with a residual. Images mix their H*W positions.
    The token MLP has fixed weights per position, so the block is tied to one N (or H x W)."""

    def __init__(self, shape: Shape, token_ratio: float = 0.5, channel_ratio: float = 4.0):
        super().__init__()
        self.layer = MixerLayer(positions(shape), channels(shape), token_ratio, channel_ratio)

    def forward(self, x):
        return from_tokens(self.layer(to_tokens(x)), x)


@register_op(
    "poolformer",
    family="mixers",
    args={"k": Arg(int, 3, low=1, doc="pooling window"), "channel_ratio": Arg(float, 4.0, low=0.01),
          "layer_scale": Arg(float, 1e-5, low=0.0, doc="LayerScale init of both branches (paper 1e-5); 0 = none")},
    refs=("S26",),
)
class PoolFormer(Mixer):
    """PoolFormer block (Yu et al., 'MetaFormer Is Actually What You Need for Vision', 2022).

    x = x + s1 * (AvgPool(GN(x)) - GN(x)); x = x + s2 * MLP(GN(x)). The token mixer is stride-1
    average pooling without counting padding; subtracting the input makes it a pure mixer (the
    residual already carries x). GN is GroupNorm with one group (normalises C and all positions);
    sequences pool along N. s1, s2 are the paper's per-channel LayerScale, initialised to
    ``layer_scale`` (1e-5); ``layer_scale=0`` drops them (plain residual branches).

    Fidelity (S26): Paper: MetaFormer is x + TokenMixer(Norm x), x + MLP(Norm x),
    with the token mixer left abstract; PoolFormer's mixer is stride-1 average
    pooling minus the input; archgram: this block, and the general MetaFormer with
    a searched mixer as the `metaformer` rule of grammars/mixers.pcfg, with the
    paper's one-group GroupNorm and LayerScale (1e-5); differs: nothing.
    """

    def __init__(self, shape: Shape, k: int = 3, channel_ratio: float = 4.0, layer_scale: float = 1e-5):
        super().__init__()
        self.output_shape(shape, k=k)
        c = channels(shape)
        spatial = (1,) * (len(shape) - 2)
        self.scales = nn.ParameterList(
            nn.Parameter(torch.full((c, *spatial), float(layer_scale))) for _ in range(2 if layer_scale else 0))
        image = len(shape) == IMAGE_RANK
        pool = nn.AvgPool2d if image else nn.AvgPool1d
        conv = nn.Conv2d if image else nn.Conv1d
        self.pool = pool(k, 1, k // 2, count_include_pad=False)
        self.norm1, self.norm2 = nn.GroupNorm(1, c), nn.GroupNorm(1, c)
        h = hidden(c, channel_ratio)
        self.mlp = nn.Sequential(conv(c, h, 1), nn.GELU(), conv(h, c, 1))

    @classmethod
    def check(cls, shape, k=3, **args):
        cls.need_odd(shape, k)

    def forward(self, x):
        y = to_channels_first(x)
        n = self.norm1(y)
        s1, s2 = self.scales if len(self.scales) else (1.0, 1.0)
        y = y + s1 * (self.pool(n) - n)
        y = y + s2 * self.mlp(self.norm2(y))
        return to_channels_first(y)


@register_op(
    "gated_cnn",
    family="mixers",
    args={
        "k": Arg(int, 7, low=1, doc="depthwise kernel"),
        "ratio": Arg(float, 8 / 3, low=0.1, doc="hidden width / D"),
        "conv_ratio": Arg(float, 1.0, low=0.0, high=1.0, doc="share of D on which the conv acts"),
    },
    refs=("S49",),
)
class GatedCNN(Mixer):
    """Gated CNN block of MambaOut (Yu & Wang 2024): a Mamba block without its SSM.

    LN, then fc1 to (gate g, identity part i, conv part c) with |g| = |i|+|c| = hidden and
    |c| = conv_ratio * D; c passes a k x k depthwise conv (1D along N for sequences); the
    output is fc2(GELU(g) * [i, conv(c)]) plus the shortcut.

    Fidelity (S49): the paper's block is exactly this (a Mamba block with the SSM
    removed, conv on part of the channels); archgram follows it, sequences get a
    1D depthwise conv; nothing differs.
    """

    def __init__(self, shape: Shape, k: int = 7, ratio: float = 8 / 3, conv_ratio: float = 1.0):
        super().__init__()
        self.output_shape(shape, k=k, ratio=ratio, conv_ratio=conv_ratio)
        d = channels(shape)
        self.hidden = hidden(d, ratio)
        self.conv_channels = min(round(d * conv_ratio), self.hidden)
        self.norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, 2 * self.hidden)
        self.conv = depthwise(self.conv_channels, k, len(shape)) if self.conv_channels else None
        self.fc2 = nn.Linear(self.hidden, d)

    @classmethod
    def check(cls, shape, k=7, **args):
        cls.need_odd(shape, k)

    def forward(self, x):
        t = to_tokens(x)
        ident = self.hidden - self.conv_channels
        g, i, c = self.fc1(self.norm(t)).split([self.hidden, ident, self.conv_channels], dim=-1)
        if self.conv is not None:
            c = to_channels_first(from_tokens(c, x))  # (B,c,H,W) or (B,c,N)
            c = to_tokens(to_channels_first(self.conv(c)))
        return from_tokens(t + self.fc2(F.gelu(g) * torch.cat([i, c], dim=-1)), x)


class GLU(nn.Module):
    """Gated linear unit map i -> o: W_o (act(W_g u) * W_v u) (GEGLU / SwiGLU / GLU)."""

    ACTS = {"gelu": F.gelu, "silu": F.silu, "relu": F.relu, "sigmoid": torch.sigmoid}

    def __init__(self, i: int, h: int, o: int, act: str):
        super().__init__()
        self.gate, self.value, self.out = nn.Linear(i, h), nn.Linear(i, h), nn.Linear(h, o)
        self.act = self.ACTS[act]

    def forward(self, u):
        return self.out(self.act(self.gate(u)) * self.value(u))


@register_op(
    "glu_block",
    family="mixers",
    args={**RATIO, "channel_ratio": Arg(float, 2.0, low=0.01),
          "act": Arg(str, "gelu", choices=("gelu", "silu", "relu", "sigmoid"), doc="GEGLU, SwiGLU, ReGLU, GLU"),
          "second": Arg(str, "glu", choices=("glu", "mlp", "none"), doc="the channel stage after the token GLU")},
    refs=("S17",),
)
class GLUBlock(Mixer):
    """Activator block (Abdullah & Aydin, 'Activator: GLU Activation Function as the Core
    Component of a Vision Transformer', 2024): attention replaced by a GLU MLP.

    t = t + TokenGLU(LN t), a gated linear unit W_o (act(W_g u) * W_v u) along the N positions
    (shared across channels), does the token mixing attention did; then the channel stage
    t = t + ChannelGLU(LN t) (second=glu), the plain GELU MLP (second=mlp), or nothing
    (second=none: the paper's variant without the second MLP). Tied to one N (or H x W).

    Catalog S17, read against the paper. Paper: attention is replaced by a GLU-gated MLP
    that mixes tokens (GEGLU, SwiGLU, ReGLU variants), followed by the usual MLP, or by
    nothing in the reduced variant. archgram: both, with the activation and the second
    stage as arguments. Differs: nothing in the mechanism.
    """

    def __init__(self, shape: Shape, token_ratio=0.5, channel_ratio=2.0, act="gelu", second="glu"):
        super().__init__()
        n, d = positions(shape), channels(shape)
        self.norm1 = nn.LayerNorm(d)
        self.tokens = GLU(n, hidden(n, token_ratio), n, act)
        self.norm2 = nn.LayerNorm(d) if second != "none" else None
        if second == "glu":
            self.channels = GLU(d, hidden(d, channel_ratio), d, act)
        elif second == "mlp":
            self.channels = mlp(d, hidden(d, channel_ratio), d)
        else:
            self.channels = None

    def forward(self, x):
        t = to_tokens(x)
        t = t + self.tokens(self.norm1(t).transpose(1, 2)).transpose(1, 2)
        if self.channels is not None:
            t = t + self.channels(self.norm2(t))
        return from_tokens(t, x)


@register_op("ninformer", family="mixers", args=RATIO, refs=("S11",))
class NiNformer(Mixer):
    """NiNformer block (Abdullah & Aydin 2024): attention replaced by a network-in-network unit.

    The inner network, an MLP-Mixer layer on LN(t), produces a dynamic elementwise gate G; the
    outer network is a token-wise linear map V = W_v LN(t); the unit returns W_o (G * V) as a
    residual, followed by the usual channel MLP with its residual. Tied to one N (or H x W).

    Catalog S11, read against the paper. Paper: a network-in-network block in place of
    attention: an inner MLP-Mixer layer (token then channel mixing) generates a dynamic
    elementwise gate, the outer network is token-wise and multiplies its projection by
    that gate; then the usual MLP. archgram: that block. Differs: the outer token-wise
    network is two linear maps around the gate (W_o (G * W_v u)), not an MLP with its own
    activation.
    """

    def __init__(self, shape: Shape, token_ratio: float = 0.5, channel_ratio: float = 4.0):
        super().__init__()
        n, d = positions(shape), channels(shape)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.gate = MixerLayer(n, d, token_ratio, channel_ratio)
        self.value, self.out = nn.Linear(d, d), nn.Linear(d, d)
        self.mlp = mlp(d, hidden(d, channel_ratio), d)

    def forward(self, x):
        t = to_tokens(x)
        u = self.norm1(t)
        t = t + self.out(self.gate(u) * self.value(u))
        t = t + self.mlp(self.norm2(t))
        return from_tokens(t, x)


__all__ = ["GLU", "GLUBlock", "GatedCNN", "MLPMixer", "MixerLayer", "NiNformer", "PoolFormer", "TokenMLP"]
