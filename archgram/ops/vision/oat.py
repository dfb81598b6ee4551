"""OAT object decoder (Fang, Yu, Zhang, van der Lans & Shi, ECCV 2024, "OAT:
Object-Level Attention Transformer for Gaze Scanpath Prediction"; catalog S16).

OAT predicts a gaze scanpath as a sequence of *object* fixations rather than a
pixel saliency map. Objects are tokens (appearance + an encoding of where the
object is); a transformer decoder reads the fixations so far, attends to the
object tokens, and points at the next object to fixate:

  objects   o_n = x_n + PE(x_n[:2])             channels 0, 1 of a token are read
                                                 as its (x, y) position (coords=True)
  PE        the paper's distance-based encoding: PE(p) . PE(q) = exp(-|p - q|^2 / 2 s^2),
            a Gaussian of the objects' distance, so nearby objects have similar
            encodings. The paper fits a table of per-axis grid encodings to that
            target; objects here sit at continuous coordinates, where random
            Fourier features of the Gaussian kernel give the same similarity
            (PE(p) = sqrt(2 / C) cos(p Omega + b), Omega ~ N(0, 1 / s^2), frozen;
            the dot product matches the Gaussian up to O(1 / sqrt(C))); s is
            ``sigma``
  decoder   h_1..t = LN(h + CrossAttn(h, o)),  h = LN(z + CausalSelfAttn(z)),
            z = [start, o_f1, ..., o_f(t-1)] + step embeddings
  pointer   f_t = argmax_n (W_p h_t) . o_n       the next fixated object
  output    (B, steps, C): the decoder state of each fixation step, or with
            output="fixations" the pointer logits (B, steps, N): step t's
            distribution over the objects to fixate, the paper's prediction
            (a scanpath task scores it with cross-entropy against human
            fixations, as OAT is trained)

Input: a sequence (B, N objects, C).

Deviations: fixations are decoded greedily (argmax, not sampled); the paper
trains the pointer with a fixation loss, here a straight-through estimator
(the argmax object forward, the softmax's gradient backward) lets a task loss
reach it; no FFN sublayers (the grammar adds them).

Catalog S16, read against the paper. Paper: scanpaths as sequences of object
fixations: an encoder embeds objects (appearance + a distance-based 2-D
position encoding) and the search target; a causal decoder reads the fixations
so far, cross-attends to the objects, and predicts the next fixated object,
trained with cross-entropy on human fixations. archgram: the decoder, with the
fixation distribution as an output (``output=fixations``) or its states; the
searched body is the encoder, and the target can be one of its tokens; the
distance-based encoding as random Fourier features (the same Gaussian-of-
distance similarity, for continuous coordinates). Differs: greedy decoding; no
explicit target token or termination output.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from archgram.errors import ShapeError
from archgram.ops.registry import Arg, Op, check_rank, register_op
from archgram.ops.vision._common import divides
from archgram.shapes import Shape

ARGS = {
    "steps": Arg(int, 4, low=1, doc="fixations to predict"),
    "heads": Arg(int, 2, low=1, doc="attention heads"),
    "coords": Arg(bool, True, doc="read channels 0, 1 as object (x, y) and add their position encoding"),
    "sigma": Arg(float, 0.5, low=1e-3, doc="distance scale of the position encoding's Gaussian similarity"),
    "output": Arg(str, "states", choices=("states", "fixations"),
                  doc="decoder states (B, steps, C), or the fixation logits over the N objects (B, steps, N)"),
}


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, causal: bool = False) -> torch.Tensor:
    """Softmax attention (B, T, C) x (B, S, C) -> (B, T, C), optionally causal."""
    b, t, c = q.shape
    d = c // heads

    def split(z: torch.Tensor) -> torch.Tensor:
        return z.view(b, -1, heads, d).transpose(1, 2)

    logits = split(q) @ split(k).transpose(-1, -2) * d**-0.5
    if causal:
        future = torch.ones(t, k.shape[1], dtype=torch.bool, device=q.device).triu(1)
        logits = logits.masked_fill(future, float("-inf"))
    return (torch.softmax(logits, dim=-1) @ split(v)).transpose(1, 2).reshape(b, t, c)


@register_op("oat_decoder", family="vision", refs=("S16",), args=ARGS)
class ObjectAttentionDecoder(Op):
    """OAT decoder: object tokens with position encoding; a causal decoder points at the next fixated object."""

    def __init__(self, shape: Shape, steps: int = 4, heads: int = 2, coords: bool = True, sigma: float = 0.5,
                 output: str = "states"):
        super().__init__()
        self.output_shape(shape, steps=steps, heads=heads, coords=coords)
        c = shape[2]
        self.steps, self.heads, self.coords, self.output = steps, heads, coords, output
        # Frozen random Fourier features of the Gaussian kernel of width sigma (buffers, not trained).
        self.register_buffer("omega", torch.randn(2, c) / sigma if coords else None)
        self.register_buffer("phase", 2 * math.pi * torch.rand(c) if coords else None)
        self.start = nn.Parameter(torch.randn(c) * 0.02)
        self.step_embedding = nn.Parameter(torch.randn(steps, c) * 0.02)
        self.self_qkv, self.self_out = nn.Linear(c, 3 * c), nn.Linear(c, c)
        self.cross_q, self.cross_kv, self.cross_out = nn.Linear(c, c), nn.Linear(c, 2 * c), nn.Linear(c, c)
        self.norm1, self.norm2 = nn.LayerNorm(c), nn.LayerNorm(c)
        self.pointer = nn.Linear(c, c)
        self.last_fixations: torch.Tensor | None = None

    @classmethod
    def output_shape(cls, shape: Shape, steps: int = 4, heads: int = 2, coords: bool = True, sigma: float = 0.5,
                     output: str = "states") -> Shape:
        check_rank("oat_decoder", shape, 3)
        divides("oat_decoder", shape, shape[2], heads, "heads")
        if coords and shape[2] < 2:
            raise ShapeError(f"oat_decoder: coords=true reads channels 0 and 1 as (x, y), got {shape}")
        return (shape[0], steps, shape[1] if output == "fixations" else shape[2])

    @classmethod
    def count_params(cls, shape: Shape, /, steps: int = 4, heads: int = 2, coords: bool = True, sigma: float = 0.5,
                     output: str = "states") -> int:
        c = shape[2]
        linears = (3 * c * c + 3 * c) + 4 * (c * c + c) + (2 * c * c + 2 * c)
        return c + steps * c + linears + 4 * c

    @classmethod
    def flops(cls, shape, out, params, /, steps: int = 4, heads: int = 2, coords: bool = True, sigma: float = 0.5,
              output: str = "states") -> int:
        b, n, c = shape
        per_step = 2 * params + 4 * steps * c + 4 * n * c  # projections + attention over prefix and objects
        return b * steps * steps * per_step

    def position_encoding(self, xy: torch.Tensor) -> torch.Tensor:
        """PE (..., C) of positions xy (..., 2): PE(p) . PE(q) ~ exp(-|p - q|^2 / 2 sigma^2)."""
        c = self.omega.shape[1]
        return math.sqrt(2.0 / c) * torch.cos(xy @ self.omega.to(xy.dtype) + self.phase.to(xy.dtype))

    def objects(self, x: torch.Tensor) -> torch.Tensor:
        """Object tokens with their position encoding (B, N, C)."""
        if self.omega is None:
            return x
        return x + self.position_encoding(x[..., :2])

    def decode(self, z: torch.Tensor, objects: torch.Tensor) -> torch.Tensor:
        """Decoder states (B, t, C) of the fixation inputs z (B, t, C)."""
        z = z + self.step_embedding[: z.shape[1]]
        q, k, v = self.self_qkv(z).chunk(3, dim=-1)
        h = self.norm1(z + self.self_out(attention(q, k, v, self.heads, causal=True)))
        k, v = self.cross_kv(objects).chunk(2, dim=-1)
        return self.norm2(h + self.cross_out(attention(self.cross_q(h), k, v, self.heads)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        objects = self.objects(x)
        b = x.shape[0]
        z = self.start.expand(b, 1, -1)
        fixations, logits = [], []
        for t in range(self.steps):
            h = self.decode(z, objects)
            scores = self.pointer(h[:, -1:]) @ objects.transpose(1, 2)  # (B, 1, N)
            logits.append(scores)
            if t == self.steps - 1:
                break
            chosen = scores.argmax(dim=-1)  # (B, 1)
            fixations.append(chosen)
            # straight-through: the argmax object's features, with the softmax's gradient for the pointer
            p = torch.softmax(scores, dim=-1)
            hard = torch.zeros_like(p).scatter_(-1, chosen.unsqueeze(-1), 1.0)
            z = torch.cat([z, (hard + p - p.detach()) @ objects], dim=1)
        self.last_fixations = torch.cat(fixations, dim=1) if fixations else None
        return torch.cat(logits, dim=1) if self.output == "fixations" else h
