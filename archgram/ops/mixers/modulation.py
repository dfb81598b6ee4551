"""Convolutional token mixers that keep attention's query/context structure:
focal modulation (FocalNet) and FFNified attention (MetaMixer / FFNet)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from archgram.ops.mixers.common import Mixer, depthwise, to_channels_first
from archgram.ops.registry import Arg, register_op
from archgram.shapes import Shape, channels


@register_op(
    "focal_modulation",
    family="mixers",
    args={"levels": Arg(int, 2, low=1, high=4, doc="focal levels L"),
          "window": Arg(int, 3, low=1, doc="kernel of the first level; level l uses window + 2l")},
    refs=("S13",),
)
class FocalModulation(Mixer):
    """Focal modulation (Yang et al., 'Focal Modulation Networks', 2022).

    A linear map gives query q, context z_0 and L+1 gates. Hierarchical contexts
    z_l = GELU(DWConv_{k_l}(z_{l-1})) grow the receptive field level by level, a global level
    z_{L+1} = GELU(mean over positions of z_L) adds the whole input; gated aggregation
    Z = sum_l gate_l * z_l is mapped by a 1x1 map h to the modulator, and the output is
    proj(q * h(Z)). Images use 2D depthwise convs, sequences 1D ones along N.

    Catalog S13, read against the paper. Paper: focal modulation replaces
    self-attention's query-key interaction by (1) hierarchical contextualisation
    with stacked depthwise convs of growing kernels plus a global pooled level,
    (2) gated aggregation of the levels with input-dependent gates, (3) a
    modulator h(Z) multiplied elementwise into the query. archgram: exactly those
    three steps. Differs: FocalNet's optional normalisation of the aggregate by
    L + 1 and its post-modulation LayerNorm variant are not offered.
    """

    def __init__(self, shape: Shape, levels: int = 2, window: int = 3):
        super().__init__()
        self.output_shape(shape, levels=levels, window=window)
        c = channels(shape)
        self.levels = levels
        self.f = nn.Linear(c, 2 * c + levels + 1)
        self.contexts = nn.ModuleList(depthwise(c, window + 2 * i, len(shape), bias=False) for i in range(levels))
        self.h = nn.Linear(c, c)
        self.proj = nn.Linear(c, c)

    @classmethod
    def check(cls, shape, levels=2, window=3):
        cls.need_odd(shape, window)

    def forward(self, x):
        y = to_channels_first(x)  # (B, C, *positions)
        c = y.shape[1]
        q, z, gates = self.f(y.movedim(1, -1)).movedim(-1, 1).split([c, c, self.levels + 1], dim=1)
        agg = torch.zeros_like(z)
        for level, conv in enumerate(self.contexts):
            z = F.gelu(conv(z))
            agg = agg + z * gates[:, level : level + 1]
        glob = F.gelu(z.flatten(2).mean(-1)).view(*z.shape[:2], *[1] * (z.dim() - 2))
        agg = agg + glob * gates[:, self.levels :]
        modulator = self.h(agg.movedim(1, -1))
        out = self.proj(q.movedim(1, -1) * modulator).movedim(-1, 1)
        return to_channels_first(out)


@register_op(
    "metamixer",
    family="mixers",
    args={"k": Arg(int, 7, low=1, doc="large depthwise kernel (query-key interaction)"),
          "k_value": Arg(int, 3, low=1, doc="depthwise kernel of the coefficient-value interaction"),
          "ratio": Arg(float, 1.0, low=0.1, doc="expansion of the query projection")},
    refs=("S15",),
)
class MetaMixer(Mixer):
    """FFNified attention (Yun et al., 'MetaMixer Is All You Need' / FFNet, 2024).

    Attention's query-key-value framework with FFN-like sub-operations: the query is a 1x1
    projection of the input; the query-key interaction is a large-kernel depthwise conv
    (its weights are the 'keys', a spatial key-value memory); GELU replaces softmax; the
    coefficient-value interaction is a second depthwise conv; a 1x1 map projects back.
    Spatial operations where ConvNeXt's FFN is channel-wise and vice versa. Images use 2D
    convs, sequences 1D ones along N. (FFNet's reparameterised multi-kernel branches are
    folded into single kernels here.)

    Catalog S15, read against the paper. Paper: MetaMixer is the query-key-value
    framework itself, not self-attention's sub-operations; FFNification keeps it
    but uses FFN-like parts: query projection, large-kernel depthwise conv as the
    query-key interaction, GELU in place of softmax, a depthwise conv as the
    value interaction. archgram: those four parts. Differs: the training-time
    multi-branch reparameterisation is a single kernel from the start (the same
    function class at inference; training dynamics differ).
    """

    def __init__(self, shape: Shape, k: int = 7, k_value: int = 3, ratio: float = 1.0):
        super().__init__()
        self.output_shape(shape, k=k, k_value=k_value)
        c = channels(shape)
        h = max(1, round(c * ratio))
        self.query = nn.Linear(c, h)
        self.key = depthwise(h, k, len(shape))
        self.value = depthwise(h, k_value, len(shape))
        self.out = nn.Linear(h, c)

    @classmethod
    def check(cls, shape, k=7, k_value=3, **args):
        cls.need_odd(shape, k)
        cls.need_odd(shape, k_value)

    def forward(self, x):
        y = to_channels_first(x)
        q = self.query(y.movedim(1, -1)).movedim(-1, 1)
        a = F.gelu(self.key(q))
        v = self.value(a)
        return to_channels_first(self.out(v.movedim(1, -1)).movedim(-1, 1))


__all__ = ["FocalModulation", "MetaMixer"]
