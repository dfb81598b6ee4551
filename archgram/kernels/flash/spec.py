"""One attention configuration for the flash kernels: score, mask and their
parameters, validated once, so forward, backward and the reference agree on
what each keyword means.

Scores (``KERNEL_SCORES``): softmax; sigmoid (w = sigmoid(s + b), b = -log Nk by
default, no normalisation); softcap (cap * tanh(s / cap), then softmax);
softplus (catalog S38: f = softplus(log(N_i) * s) ** power, w = f / sum f,
N_i the keys query i sees); clipped (catalog S31: clip((zeta - gamma) *
softmax(s) + gamma, 0, 1), masked keys 0).

Masks, intersected: ``causal`` (j <= i); ``window`` (|i - j| <= window) with
``dilation`` d (d divides i - j: Longformer's dilated window);
``neighborhood`` k (NATTEN/DiNAT 1D, catalog S37: k keys of i's dilation
group, the window shifted inward at the borders; needs Nq == Nk); with
``grid`` (H, W) the neighborhood is 2D (NATTEN 2D, S37): tokens are the H x W
grid flattened row-major and (r, c) sees the k x k keys whose row is among
r's 1D row neighbours and column among c's column neighbours (the same rule
per axis, same dilation; needs Nq = Nk = H * W, no ``window`` or ``causal``);
``block_mask`` (Nq / bq, Nk / bk) bool over token blocks of ``block`` = (bq,
bk), whose empty tiles the kernels skip.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from archgram.errors import ShapeError
from archgram.registry import unknown

KERNEL_SCORES = ("softmax", "sigmoid", "softcap", "softplus", "clipped")
SCORE_IDS = {name: i for i, name in enumerate(KERNEL_SCORES)}


class FlashArgumentError(ShapeError):
    """The flash kernels cannot serve these arguments."""


@dataclass(frozen=True)
class Spec:
    score: str = "softmax"
    causal: bool = False
    window: int | None = None
    dilation: int = 1
    neighborhood: int | None = None
    grid: tuple[int, int] | None = None
    block_mask: torch.Tensor | None = None
    block: tuple[int, int] | None = None
    scale: float | None = None
    sigmoid_bias: float | None = None
    cap: float = 50.0
    power: float = 2.0
    gamma: float = -0.025
    zeta: float = 1.0

    @property
    def masked(self) -> bool:
        """Whether any mask pattern applies (picks the tile config)."""
        return bool(self.causal) or self.window is not None or self.neighborhood is not None \
            or self.block_mask is not None

    def resolved(self, nk: int, d: int) -> tuple[float, float]:
        """(scale, sigmoid bias) with their defaults 1/sqrt(d), -log(nk)."""
        scale = 1.0 / math.sqrt(d) if self.scale is None else float(self.scale)
        bias = -math.log(nk) if self.sigmoid_bias is None else float(self.sigmoid_bias)
        return scale, bias


def _positive_int(name: str, value, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise FlashArgumentError(f"flash attention: {name} must be an integer >= {low}, got {value!r}")
    return value


def _check_grid(spec: Spec, n: int) -> None:
    if spec.neighborhood is None:
        raise FlashArgumentError("flash attention: grid (H, W) shapes a 2D neighborhood; set neighborhood too")
    if not isinstance(spec.grid, tuple) or len(spec.grid) != 2:
        raise FlashArgumentError(f"flash attention: grid must be a pair (H, W), got {spec.grid!r}")
    gh, gw = (_positive_int("grid", g) for g in spec.grid)
    if gh * gw != n:
        raise FlashArgumentError(f"flash attention: grid {spec.grid} holds {gh * gw} tokens, the sequence has {n}")
    if spec.window is not None or spec.causal:
        raise FlashArgumentError("flash attention: a 2D neighborhood (grid) does not combine with window or causal")


def make_spec(nq: int, nk: int, **kw) -> Spec:
    """A validated Spec for Nq queries and Nk keys; FlashArgumentError says what is wrong."""
    extra = set(kw) - set(Spec.__dataclass_fields__)
    if extra:
        raise FlashArgumentError(f"flash attention: unknown keyword(s) {', '.join(sorted(extra))}")
    spec = Spec(**kw)
    if spec.score not in KERNEL_SCORES:
        raise FlashArgumentError(f"flash attention: {unknown('score', spec.score, KERNEL_SCORES)}")
    if spec.window is not None:
        _positive_int("window", spec.window, low=0)
    _positive_int("dilation", spec.dilation)
    if spec.neighborhood is not None:
        _positive_int("neighborhood", spec.neighborhood)
        if nq != nk:
            raise FlashArgumentError(f"flash attention: neighborhood needs as many queries as keys, got {nq} and {nk}")
    if spec.grid is not None:
        _check_grid(spec, nq)
    if spec.dilation > 1 and spec.window is None and spec.neighborhood is None:
        raise FlashArgumentError("flash attention: dilation applies to a window or a neighborhood; set one")
    if (spec.block_mask is None) != (spec.block is None):
        raise FlashArgumentError("flash attention: block_mask and block (bq, bk) go together")
    if spec.block_mask is not None:
        bq, bk = (_positive_int("block", b) for b in spec.block)
        want = (-(-nq // bq), -(-nk // bk))
        if spec.block_mask.dim() != 2 or tuple(spec.block_mask.shape) != want:
            raise FlashArgumentError(f"flash attention: block_mask must be {want} for blocks {spec.block}, "
                                     f"got {tuple(spec.block_mask.shape)}")
    if spec.score == "softcap" and not spec.cap > 0:
        raise FlashArgumentError(f"flash attention: softcap needs cap > 0, got {spec.cap}")
    if spec.score == "softplus" and not spec.power >= 1:
        raise FlashArgumentError(f"flash attention: softplus needs power >= 1, got {spec.power}")
    if spec.score == "clipped" and not (spec.gamma <= 0 and spec.zeta >= 1):
        raise FlashArgumentError(f"flash attention: clipped needs gamma <= 0 <= 1 <= zeta, got {spec.gamma}, {spec.zeta}")
    return spec
