"""Power-law graph attention (Gokden 2024, PLDR-LLM, catalog S66): a deep learner
turns the query metric into the energy-curvature tensor G; logits q G k^T.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from archgram.ops.attention.parts import SCORES
from archgram.ops.attention.scores import Score, masked_fill_min, masked_zero, refuse


def _iswiglu(x: torch.Tensor) -> torch.Tensor:
    """SwiGLU with identity weights: x * silu(x) >= 0 (makes the metric positive)."""
    return x * F.silu(x)


class _ResGLU(nn.Module):
    """Residual unit of the metric learner: LayerNorm(GLU(A) + A) on the last axis."""

    def __init__(self, dim: int):
        super().__init__()
        self.gate, self.up, self.down = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return self.norm(self.down(F.silu(self.gate(a)) * self.up(a)) + a)


@SCORES.register
class PowerLaw(Score):
    """Power-law graph attention (Gokden 2024, PLDR-LLM, catalog S66). Per head, a
    d x d metric A = LayerNorm(Q^T Q) is refined by ``layers`` residual GLU units;
    A_LM = iSwiGLU(W A + b) + 1e-9 > 0; the energy-curvature tensor
    G = a (A_LM ** P) + b_a, with P a learned elementwise power-law exponent;
    logits_ij = scale * q_i G k_j^T, then softmax. G = I recovers dot-product
    attention (the paper's special case).

    The paper sums Q^T Q over the whole sequence, which leaks future tokens into
    a causal model; when the mask never lets a query see a later key (causal),
    each query i uses the metric of its prefix (sum over t <= i), so the op
    stays causal at O(N d^2) memory per head. Other patterns keep the
    whole-sequence metric (the paper has no patterns), so a window limits whose
    values are mixed, not which tokens shape G. Initialised as in the authors'
    code: W, a, P Xavier-normal; b, b_a zero.

    Paper's defining mechanism (the S66 paper, "PLDR-LLMs learn a
    generalizable tensor operator ..."): power-law graph attention whose deep
    learner turns the query metric into the energy-curvature tensor G_LM, and
    the finding that a trained G_LM is (nearly) input-invariant, so a G-cache
    holding the once-inferred G_LM replaces that deep network at inference;
    G_LM = I is scaled dot-product attention.
    What archgram does: the equations above; ``g_cache(True)`` arms the
    G-cache: the next call stores the G of its first sample (whole-sequence
    metric), later calls use it and skip the metric and its learner until
    ``g_cache(False)``.
    What differs: the per-prefix metric under a causal mask (the paper's
    whole-sequence Q^T Q would leak the future); the cache holds one G per
    head, filled from the first sample of the arming call, with no KV-cache
    companion (this score has no token-by-token decode)."""

    name = "power_law"
    params = ("layers",)
    refs = ("S66",)

    def __init__(self, heads: int, head_dim: int, layers: int = 1):
        super().__init__(heads)
        shape = (heads, head_dim, head_dim)
        self.norm = nn.LayerNorm(head_dim)
        self.learner = nn.ModuleList(_ResGLU(head_dim) for _ in range(layers))
        self.weight = nn.Parameter(nn.init.xavier_normal_(torch.empty(shape)))
        self.bias = nn.Parameter(torch.zeros(shape))
        self.power = nn.Parameter(nn.init.xavier_normal_(torch.empty(shape)))
        self.coupling = nn.Parameter(nn.init.xavier_normal_(torch.empty(shape)))
        self.coupling_bias = nn.Parameter(torch.zeros(shape))

    takes_head_dim = True

    @classmethod
    def check(cls, pattern, causal, params):
        layers = params.get("layers", 1)
        refuse(cls.name, isinstance(layers, int) and layers >= 0, f"layers must be a non-negative integer, got {layers!r}")

    #: G-cache: None (off), "fill" (armed: the next call stores its G) or the cached (1, H, d, d) G
    _g_cache: torch.Tensor | str | None = None

    def g_cache(self, on: bool = True) -> None:
        """Arm (the next call fills it) or clear the G-cache."""
        self._g_cache = "fill" if on else None

    def curvature(self, q: torch.Tensor, prefix: bool) -> torch.Tensor:
        """G: (B, H, d, d), or (B, H, N, d, d) from each query's prefix."""
        if prefix:
            a = torch.cumsum(q[..., :, None] * q[..., None, :], dim=-3)  # (B, H, N, d, d)
        else:
            a = torch.matmul(q.transpose(-1, -2), q)
        a = self.norm(a)
        for unit in self.learner:
            a = unit(a)
        extra = (slice(None),) + (None,) * (a.dim() - 4)  # per-head params over (N,) if prefix
        aw = _iswiglu(torch.matmul(self.weight[extra], a) + self.bias[extra]) + 1e-9
        return torch.matmul(self.coupling[extra], aw.pow(self.power[extra])) + self.coupling_bias[extra]

    def attend(self, q, k, v, mask, bias, scale, causal=False):
        if isinstance(self._g_cache, torch.Tensor):
            g, prefix = self._g_cache, False
        else:
            prefix = mask is not None and not bool(mask.triu(1).any())
            g = self.curvature(q, prefix)
            if self._g_cache == "fill":
                self._g_cache = (g[:1, :, -1] if prefix else g[:1]).detach()
        if prefix:
            logits = torch.einsum("bhid,bhide,bhje->bhij", q, g, k) * scale
        else:
            logits = torch.matmul(torch.matmul(q, g), k.transpose(-1, -2)) * scale
        if bias is not None:
            logits = logits + bias
        return torch.matmul(self.weights(logits, mask), v)

    def weights(self, logits, mask):
        return masked_zero(torch.softmax(masked_fill_min(logits, mask), dim=-1), mask)
