"""Random-feature attention: kernelized attention with relative positions via FFT
(score ``kernel_rpe``, catalog S59) and the random frozen query/key layout
(layout ``random_qk``, catalog S76)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from archgram.errors import ShapeError
from archgram.ops.attention.layouts import MHA
from archgram.ops.attention.linear import full_or_causal, linear_flops, refuse_bias
from archgram.ops.attention.linear_forms import EPS
from archgram.ops.attention.parts import LAYOUTS, SCORES
from archgram.ops.attention.scores import Score


def toeplitz_fft(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """y_i = sum_j c[i - j] x_j in O(n log n) along axis -2 of ``x`` (..., n, F).

    ``c`` (..., 2n-1) holds the Toeplitz entries for offsets i - j = -(n-1) .. n-1
    (index r + n - 1). The Toeplitz matrix is embedded in a circulant one of size
    2n whose first column is [c_0 .. c_{n-1}, 0, c_{-(n-1)} .. c_{-1}]; a circulant
    matmul is a circular convolution, i.e. a product of FFTs."""
    n = x.shape[-2]
    size = 2 * n
    column = torch.cat((c[..., n - 1 :], c.new_zeros(*c.shape[:-1], 1), c[..., : n - 1]), dim=-1)
    spectrum = torch.fft.rfft(column, n=size, dim=-1)[..., :, None]  # (..., size//2+1, 1)
    xs = torch.fft.rfft(x, n=size, dim=-2)
    return torch.fft.irfft(spectrum * xs, n=size, dim=-2)[..., :n, :]


@SCORES.register
class KernelRPE(Score):
    """Kernelized attention with relative positional encoding (Luo et al. 2021,
    "Stable, Fast and Accurate", catalog S59).

    Softmax attention with an RPE bias, exp(q_i k_j / sqrt(d) + b_{i-j}), factors into
    phi(q_i) . phi(k_j) * c_{i-j} with c = exp(b): positive random features (PRF,
    phi(x) = exp(W x - |x|^2 / 2) / sqrt(m), x scaled by d^-1/4, the paper's stable
    choice) times a Toeplitz matrix C, so
        out_i = phi(q_i) [C (phi(K) (x) V)]_i / phi(q_i) [C phi(K)]_i,
    and C multiplies in O(n log n) by FFT (``toeplitz_fft``). b is learned per head
    for offsets clipped to +-``max_distance`` (zeros: plain Performer); causal sets
    c_{i-j} = 0 for j > i. The random projection W (``features`` rows per head) is
    drawn once from ``seed`` and never trained. No incremental decoding: a new
    query weighs every past token by its own c_{t-j}, so the state is the whole
    history (constant only beyond ``max_distance``).

Fidelity: the paper's mechanism (PRF kernel times an exp(RPE) Toeplitz factor by
FFT) is what this computes; the clipped-offset parameterisation of b is ours."""

    name = "kernel_rpe"
    params = ("features", "max_distance", "seed")
    refs = ("S59",)
    takes_bias = False

    @classmethod
    def flops(cls, n, head_dim, heads, batch, *, keys=None, qk_dim=None, features=64, **params):
        """Random-feature linear attention plus the FFT Toeplitz products
        (about 5 * 2n log2(2n) per column of phi(K) (x) [V, 1])."""
        m = int(features)
        fft = 5 * 2 * n * max(1, math.ceil(math.log2(2 * n))) * m * (head_dim + 1)
        return linear_flops(n, n if keys is None else keys, m, head_dim, heads, batch) + batch * heads * fft

    def __init__(self, heads, features: int = 64, max_distance: int = 64, seed: int = 0):
        super().__init__(heads)
        self.n_features, self.max_distance, self.seed = int(features), int(max_distance), int(seed)
        self.rel_bias = nn.Parameter(torch.zeros(heads, 2 * self.max_distance + 1))
        self._omega: dict = {}

    @classmethod
    def check(cls, pattern, causal, params):
        full_or_causal(cls.name, pattern)
        if int(params.get("features", 64)) < 1 or int(params.get("max_distance", 64)) < 0:
            raise ShapeError("kernel_rpe needs features >= 1 and max_distance >= 0")

    def omega(self, head_dim: int, like: torch.Tensor) -> torch.Tensor:
        """(H, m, d) Gaussian projection, the same for every call (seeded, cached)."""
        key = (head_dim, like.device, like.dtype)
        if key not in self._omega:
            g = torch.Generator().manual_seed(self.seed)
            w = torch.randn(self.heads, self.n_features, head_dim, generator=g, dtype=torch.float64, device="cpu")
            self._omega[key] = w.to(device=like.device, dtype=like.dtype)
        return self._omega[key]

    def features(self, q: torch.Tensor, k: torch.Tensor):
        """Positive random features of q and k (B, H, N, m). Stabilisers (a max per
        query row, one max per key set) cancel in the normalised ratio."""
        d = q.shape[-1]
        w = self.omega(d, q)[None]  # (1, H, m, d)
        q, k = q * d**-0.25, k * d**-0.25
        wq = q @ w.transpose(-1, -2) - q.pow(2).sum(-1, keepdim=True) / 2
        wk = k @ w.transpose(-1, -2) - k.pow(2).sum(-1, keepdim=True) / 2
        wq = wq - wq.amax(-1, keepdim=True).detach()
        wk = wk - wk.amax((-1, -2), keepdim=True).detach()
        m = self.n_features
        return torch.exp(wq) / math.sqrt(m), torch.exp(wk) / math.sqrt(m)

    def toeplitz(self, n: int, causal: bool, like: torch.Tensor) -> torch.Tensor:
        """(H, 2n-1) entries c_r = exp(b_clip(r)), r = i - j from -(n-1) to n-1."""
        r = torch.arange(-(n - 1), n, device=like.device)
        idx = r.clamp(-self.max_distance, self.max_distance) + self.max_distance
        c = torch.exp(self.rel_bias.to(like)[:, idx])
        return c * (r >= 0) if causal else c

    def attend(self, q, k, v, mask, bias, scale, causal=False):
        refuse_bias(self, bias)
        causal = causal or mask is not None
        fq, fk = self.features(q, k)
        b, h, n, m = fk.shape
        v1 = torch.cat((v, torch.ones_like(v[..., :1])), dim=-1)  # denominator as a value column
        kv = (fk[..., :, None] * v1[..., None, :]).reshape(b, h, n, -1)  # (B, H, N, m * (Dv+1))
        ckv = toeplitz_fft(self.toeplitz(n, causal, q), kv).reshape(b, h, n, m, -1)
        out = (fq[..., None, :] @ ckv)[..., 0, :]
        return out[..., :-1] / (out[..., -1:] + EPS)


class FrozenLinear(nn.Module):
    """y = x W^T with W ~ N(0, 1/in) kept as a buffer: saved and moved with the
    model, never a parameter, so no optimiser ever sees it."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.register_buffer("weight", torch.randn(dim_out, dim_in) / math.sqrt(dim_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


@LAYOUTS.register
class RandomQK(MHA):
    """Single attention layer via random features (Fu, Guo, Bai, Mei 2023,
    catalog S76).

    Paper: a layer of M heads whose query-key form W_m (the product of query
    and key matrix, a d x d matrix over the token width d) is sampled once,
    Gaussian, and frozen; only the value side trains, so the layer is a
    random-feature model: linear in its trainable weights, able to fit
    functions of the query token and the key set that are invariant to key
    order, with error falling as heads are added.
    Here: head m scores tokens i, j by x_i^T W_m x_j with W_m a frozen buffer of
    i.i.d. N(0, 1/d) entries (full rank d, one per head), times the op's
    1/sqrt(d), so logits start at unit scale; values and the output
    projection train. Queries are the tokens themselves and keys are W_m x_j,
    so the q/k width is the model width d, not head_dim. Any score runs on top
    (softmax in archgram's grammars).
    Differs: the paper analyses one query token against N keys with a 1/N sum
    of an activation and a value vector per head; here every token is a query
    (self-attention) under the chosen score, and values are the usual per-head
    projection followed by the output projection (a linear map after a linear
    map: the same function class). The paper's non-zero-mean sampling of W_m is
    not offered."""

    name = "random_qk"
    refs = ("S76",)

    @classmethod
    def qk_dim(cls, head_dim, dim=0, **params):
        return dim

    @classmethod
    def frozen_flops(cls, n: int, dim: int, heads: int, head_dim: int, **params) -> int:
        """Multiply-adds of the frozen key forms W_m x_j (buffers, not parameters)."""
        return 2 * n * heads * dim * dim

    def __init__(self, dim, heads, kv_heads, head_dim, **params):
        super().__init__(dim, heads, kv_heads, head_dim, **params)
        del self.q, self.k  # the tokens are the queries; W_m makes the keys
        self.register_buffer("forms", torch.randn(self.heads, dim, dim) / math.sqrt(dim))

    def form(self, head: int) -> torch.Tensor:
        """Head ``head``'s frozen bilinear form W_m (d x d): logit_ij = x_i^T W_m x_j * scale."""
        return self.forms[head]

    def qkv(self, x):
        b, n, d = x.shape
        q = x.unsqueeze(1).expand(b, self.heads, n, d)
        k = torch.einsum("bjd,hed->bhje", x, self.forms)
        return q, k, self.split(self.v(x), self.kv)


__all__ = ["FrozenLinear", "KernelRPE", "RandomQK", "toeplitz_fft"]
