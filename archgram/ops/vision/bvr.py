"""BVR: bridging visual representations (Chi, Wei & Hu, NeurIPS 2020,
"RelationNet++: Bridging Visual Representations for Object Detection via
Transformer Decoder"; catalog S39).

A detector's main representation (here: every pixel of the feature map, the
*queries*) is strengthened by attending to a small set of *key instances* of
another representation (corner or centre points). Key sampling keeps the
decoder cheap: only the top-k points of a point heatmap serve as keys. The
weight of key j for query i adds an appearance term and a geometry term of
their relative position:

  heat      s = W_s x                                    (B, 1, H, W) point scores
  keys      the k pixels with the largest s; K_j = x_j * sigmoid(s_j)
  logits    w_ij = (W_q x_i) . (W_k K_j) / sqrt(d) + G(p_i - p_j)    per head
  G         MLP of a sine/cosine embedding of the offset (dy/H, dx/W)
  output    y_i = x_i + W_o sum_j softmax_j(w_ij) W_v K_j

With ``kinds`` > 1 there are that many key sets (the paper's centre and corner
points), each with its own heatmap channel and its own decoder; their outputs add.

Deviations: the paper's heatmaps are trained by their own keypoint losses; here
the sigmoid of the selected scores multiplies the key features so that the
selector learns from the task loss. The geometry MLP is evaluated per offset
(the paper shares a precomputed table over the grid offsets; same function).

Fidelity (S39): Paper: BVR bridges a detector's main representation (anchor
or pixel features) and auxiliary point representations (corner/centre points)
with a transformer-decoder style attention: queries from the main features,
keys from the top-k points of point heatmaps, weights = appearance term +
geometry term of the relative position (cosine/sine embedding), output added
back; archgram: that decoder on one feature map, with ``kinds`` key sets
(own heatmap and decoder each); differs: the point heatmaps are learned from
the task loss through the sigmoid-scaled keys instead of the paper's keypoint
supervision (those losses need ground-truth boxes; an op's forward receives
only its input tensor, and no archgram task carries boxes), so a user loses
supervised keypoints.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from archgram.errors import ShapeError
from archgram.ops.registry import Arg, Op, register_op
from archgram.ops.vision._common import divides, image
from archgram.shapes import Shape

ARGS = {
    "heads": Arg(int, 2, low=1, doc="attention heads"),
    "keys": Arg(int, 8, low=1, doc="key instances kept by the top-k key sampling"),
    "embed": Arg(int, 8, low=2, doc="sine/cosine frequencies per offset axis of the geometry term"),
    "kinds": Arg(int, 1, low=1, doc="key-point sets (the paper: centres and corners), each with its own heatmap and decoder"),
}


def offset_embedding(offsets: torch.Tensor, freqs: int) -> torch.Tensor:
    """Sine/cosine embedding of relative offsets (..., 2) in [-1, 1] -> (..., 4 * freqs)."""
    scales = math.pi * 2.0 ** torch.arange(freqs, dtype=offsets.dtype, device=offsets.device)
    angles = (offsets.unsqueeze(-1) * scales).flatten(-2)  # (..., 2 * freqs)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class KeyDecoder(nn.Module):
    """One key set's attention: queries from every pixel, keys and values from the
    sampled points, appearance logits plus a geometry term of the relative offset."""

    def __init__(self, c: int, heads: int, embed: int):
        super().__init__()
        self.heads, self.embed = heads, embed
        self.q, self.k, self.v, self.out = (nn.Linear(c, c) for _ in range(4))
        self.geometry = nn.Sequential(nn.Linear(4 * embed, c), nn.ReLU(), nn.Linear(c, heads))

    def forward(self, t: torch.Tensor, keys: torch.Tensor, kpos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """t (B, HW, C) pixels, keys (B, k, C) at kpos (B, k, 2) -> (B, HW, C) to add."""
        (b, n, c), (h, w) = t.shape, grid
        nh, d = self.heads, c // self.heads
        rows = torch.arange(h, device=t.device).repeat_interleave(w)
        cols = torch.arange(w, device=t.device).repeat(h)
        qpos = torch.stack([rows, cols], dim=-1)  # (HW, 2)
        rel = (qpos[None, :, None, :] - kpos[:, None, :, :]).to(t.dtype)  # (B, HW, k, 2)
        rel = rel / torch.tensor([h, w], dtype=t.dtype, device=t.device)
        geo = self.geometry(offset_embedding(rel, self.embed)).permute(0, 3, 1, 2)  # (B, heads, HW, k)
        q = self.q(t).view(b, -1, nh, d).transpose(1, 2)
        k = self.k(keys).view(b, -1, nh, d).transpose(1, 2)
        v = self.v(keys).view(b, -1, nh, d).transpose(1, 2)
        a = torch.softmax(q @ k.transpose(-1, -2) * d**-0.5 + geo, dim=-1)
        return self.out((a @ v).transpose(1, 2).reshape(b, n, c))


@register_op("bvr", family="vision", refs=("S39",), args=ARGS)
class BridgingVisualRepresentations(Op):
    """RelationNet++ BVR decoder: every pixel attends to the top-k key points of each
    key set (own heatmap, own decoder) with appearance + geometry weights."""

    def __init__(self, shape: Shape, heads: int = 2, keys: int = 8, embed: int = 8, kinds: int = 1):
        super().__init__()
        _, c, h, w = self.output_shape(shape, heads=heads, keys=keys)
        self.heads, self.keys, self.embed, self.grid = heads, keys, embed, (h, w)
        self.heat = nn.Conv2d(c, kinds, 1)  # one point heatmap per key set
        self.decoders = nn.ModuleList(KeyDecoder(c, heads, embed) for _ in range(kinds))

    @classmethod
    def output_shape(cls, shape: Shape, heads: int = 2, keys: int = 8, **args) -> Shape:
        _, c, h, w = image("bvr", shape)
        divides("bvr", shape, c, heads, "heads")
        if keys > h * w:
            raise ShapeError(f"bvr: {keys} key points exceed the {h * w} pixels of {shape}")
        return shape

    @classmethod
    def count_params(cls, shape: Shape, /, heads: int = 2, keys: int = 8, embed: int = 8, kinds: int = 1) -> int:
        c = shape[1]
        return kinds * ((c + 1) + 4 * (c * c + c) + (4 * embed * c + c) + (c * heads + heads))

    def sample_keys(self, x: torch.Tensor, kind: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(key features (B, k, C) scaled by their sigmoid scores, key positions (B, k, 2) as (row, col))
        of key set ``kind``."""
        b, c, h, w = x.shape
        scores = self.heat(x)[:, kind].flatten(1)  # (B, HW)
        top = scores.topk(self.keys, dim=1)
        feats = x.flatten(2).transpose(1, 2).gather(1, top.indices.unsqueeze(-1).expand(-1, -1, c))
        pos = torch.stack([top.indices // w, top.indices % w], dim=-1)
        return feats * torch.sigmoid(top.values).unsqueeze(-1), pos

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)  # (B, HW, C)
        y = sum(decoder(t, *self.sample_keys(x, i), (h, w)) for i, decoder in enumerate(self.decoders))
        return x + y.transpose(1, 2).reshape(b, c, h, w)
