"""L2ViT: local window attention + enhanced linear global attention (Zheng 2025,
"The Linear Attention Resurrection in Vision Transformer", catalog S54).

The paper alternates two blocks; the op is one such pair, image mode only:

  LWA   t <- t + CPE(t);  t <- t + W-MSA(LN(t));  t <- t + CPE'(t)
        (softmax attention inside non-overlapping ``window`` x ``window`` windows)
  LGA   t <- t + CPE''(t);  t <- t + LinAttn(LN(t));  t <- t + LCM(LN(t))

with (per head, q, k, v from one linear map of the normalised tokens)

  LinAttn   out_i = tau_h * relu(q_i) [sum_j relu(k_j) v_j^T] / max(relu(q_i) . sum_j relu(k_j), floor)
  LCM       DWConv_k(BN(GELU(DWConv_k(x))))   (depth-wise k x k convs over the grid)

ReLU makes every attention weight non-negative (the property of softmax the paper
finds linear attention needs); the LCM adds back the *local concentration*
softmax has and linear attention lacks. tau_h is a learned per-head temperature
(initialised at head_dim^-1/2) applied to the output, and the denominator is
clamped from below at ``floor`` = 100, both as in the official code (the clamp
keeps training stable). Cost is linear in the tokens: O(N w^2 d) + O(N d^2).

Fidelity (S54): the paper's pair (window attention; ReLU linear attention with
the local concentration module) is what the op computes.
Deviations: the paper's FFN after each of the two blocks is optional here
(``mlp_ratio`` 0 leaves the FFN to the grammar); where the grid is not a
multiple of the window, the zero padding added before partitioning is masked out
of the keys (the official code lets padded tokens act as keys).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from archgram.errors import ShapeError
from archgram.ops.registry import Arg, Op, check_rank, register_op
from archgram.shapes import Shape


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: tuple[int, int], window: int,
                     scale: float) -> torch.Tensor:
    """Softmax attention inside non-overlapping ``window`` x ``window`` windows of the
    grid (Swin's W-MSA without shift). q, k, v: (B, heads, N, d), N = H * W row-major.
    The grid is zero-padded to a multiple of the window; padded keys are masked."""
    b, nh, n, d = q.shape
    h, w = grid
    ph, pw = -h % window, -w % window
    hp, wp = h + ph, w + pw

    def windows(x: torch.Tensor) -> torch.Tensor:  # (B, nh, N, d) -> (B, nh, nW, window^2, d)
        x = F.pad(x.view(b, nh, h, w, d), (0, 0, 0, pw, 0, ph))
        x = x.view(b, nh, hp // window, window, wp // window, window, d).transpose(3, 4)
        return x.reshape(b, nh, -1, window * window, d)

    valid = F.pad(torch.ones(h, w, dtype=torch.bool, device=q.device), (0, pw, 0, ph))
    valid = valid.view(hp // window, window, wp // window, window).transpose(1, 2).reshape(-1, 1, window * window)
    logits = windows(q) @ windows(k).transpose(-1, -2) * scale
    logits = logits.masked_fill(~valid, torch.finfo(logits.dtype).min)
    out = torch.softmax(logits, dim=-1) @ windows(v)  # (B, nh, nW, window^2, d)
    out = out.view(b, nh, hp // window, wp // window, window, window, d).transpose(3, 4)
    return out.reshape(b, nh, hp, wp, d)[:, :, :h, :w].reshape(b, nh, n, d)


def enhanced_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, temperature: torch.Tensor,
                              floor: float) -> torch.Tensor:
    """L2ViT's linear global attention, KV first: relu feature maps, per-head output
    temperature (H,), denominator clamped below at ``floor``. q, k, v: (B, H, N, d)."""
    q, k = F.relu(q), F.relu(k)
    denom = (q @ k.sum(-2, keepdim=True).transpose(-1, -2)).clamp(min=floor)  # (B, H, N, 1)
    kv = k.transpose(-1, -2) @ v  # (B, H, d, d)
    return (q @ kv) * temperature.view(1, -1, 1, 1) / denom


class LCM(nn.Module):
    """Local concentration module: DWConv -> GELU -> BatchNorm -> DWConv on the grid."""

    def __init__(self, dim: int, kernel: int):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.bn = nn.BatchNorm2d(dim)
        self.conv2 = nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim)

    def forward(self, t: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        x = _image(t, grid)
        return _tokens(self.conv2(self.bn(F.gelu(self.conv1(x)))))


class CPE(nn.Module):
    """Conditional position encoding: t + DWConv3x3(t) on the grid."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, t: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        return t + _tokens(self.proj(_image(t, grid)))


def _image(t: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    b, n, c = t.shape
    return t.transpose(1, 2).reshape(b, c, *grid)


def _tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)


class _Heads(nn.Module):
    """qkv and output projections shared by both attentions."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def split(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, c = t.shape
        q, k, v = self.qkv(t).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return q, k, v

    def merge(self, o: torch.Tensor) -> torch.Tensor:
        b, h, n, d = o.shape
        return self.proj(o.transpose(1, 2).reshape(b, n, h * d))


def _mlp(dim: int, ratio: float) -> nn.Module | None:
    if ratio <= 0:
        return None
    hidden = max(1, int(dim * ratio))
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


ARGS = {
    "heads": Arg(int, 4, low=1, doc="heads of both attentions"),
    "window": Arg(int, 7, low=1, doc="local window side (LWA)"),
    "kernel": Arg(int, 7, low=1, doc="depth-wise kernel of the local concentration module (odd)"),
    "floor": Arg(float, 100.0, low=0.0, doc="lower clamp of the linear attention denominator (official code: 100)"),
    "cpe": Arg(bool, True, doc="conditional position encodings (3x3 depth-wise convs) around the blocks"),
    "mlp_ratio": Arg(float, 0.0, low=0.0, doc="FFN after each block as in the paper (0: none, leave it to the grammar)"),
}


@register_op("l2vit", family="attention", args=ARGS, refs=("S54",))
class L2ViT(Op):
    """L2ViT block pair: local window attention, then enhanced linear global attention with local concentration."""

    def __init__(self, shape: Shape, heads: int = 4, window: int = 7, kernel: int = 7, floor: float = 100.0,
                 cpe: bool = True, mlp_ratio: float = 0.0):
        super().__init__()
        self.output_shape(shape, heads=heads, kernel=kernel)
        _, dim, h, w = shape
        self.grid, self.window, self.floor = (h, w), window, float(floor)
        self.local_norm, self.global_norm, self.lcm_norm = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.local = _Heads(dim, heads)
        self.glob = _Heads(dim, heads)
        self.temperature = nn.Parameter(torch.full((heads,), self.glob.head_dim ** -0.5))
        self.lcm = LCM(dim, kernel)
        self.cpe = nn.ModuleList([CPE(dim) for _ in range(3)]) if cpe else None
        self.mlp_local, self.mlp_global = _mlp(dim, mlp_ratio), _mlp(dim, mlp_ratio)

    @classmethod
    def output_shape(cls, shape: Shape, **args: Any) -> Shape:
        check_rank("l2vit", shape, 4)
        heads, kernel = args.get("heads", 4), args.get("kernel", 7)
        if heads < 1 or shape[1] % heads:
            raise ShapeError(f"l2vit: {shape[1]} channels do not split into {heads} heads")
        if kernel % 2 == 0:
            raise ShapeError(f"l2vit: the local concentration kernel must be odd (same-size output), got {kernel}")
        return shape

    @classmethod
    def flops(cls, shape, out, params, /, **args) -> int:
        b, c, h, w = shape
        n, heads, window = h * w, args.get("heads", 4), args.get("window", 7)
        d = c // heads
        local = 4 * b * n * min(window * window, n) * c  # q k^T and weights v within windows
        glob = 4 * b * heads * n * d * (d + 1)  # K^T V state and q times it (+ denominator)
        return 2 * params * b * n + local + glob

    def local_attention(self, t: torch.Tensor) -> torch.Tensor:
        """W-MSA on normalised tokens (B, N, C)."""
        q, k, v = self.local.split(t)
        return self.local.merge(window_attention(q, k, v, self.grid, self.window, self.local.head_dim ** -0.5))

    def global_attention(self, t: torch.Tensor) -> torch.Tensor:
        """Enhanced linear attention on normalised tokens (B, N, C)."""
        q, k, v = self.glob.split(t)
        return self.glob.merge(enhanced_linear_attention(q, k, v, self.temperature, self.floor))

    def _cpe(self, i: int, t: torch.Tensor) -> torch.Tensor:
        return t if self.cpe is None else self.cpe[i](t, self.grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = _tokens(x)
        # local window attention block (LWA)
        t = self._cpe(0, t)
        t = t + self.local_attention(self.local_norm(t))
        t = self._cpe(1, t)
        if self.mlp_local is not None:
            t = t + self.mlp_local(t)
        # linear global attention block with local concentration (LGA)
        t = self._cpe(2, t)
        t = t + self.global_attention(self.global_norm(t))
        t = t + self.lcm(self.lcm_norm(t), self.grid)
        if self.mlp_global is not None:
            t = t + self.mlp_global(t)
        return t.transpose(1, 2).reshape(b, c, h, w)


__all__ = ["CPE", "LCM", "L2ViT", "enhanced_linear_attention", "window_attention"]
