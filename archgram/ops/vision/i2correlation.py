"""I2Correlation (Yao et al., ICCV 2023, "Focus the Discrepancy: Intra- and
Inter-Correlation Learning for Image Anomaly Detection"; catalog S07).

FOD replaces a transformer's self-attention with two branches. Anomalous
patches differ from the other patches of their own image (intra-image
discrepancy) and correlate weakly with normal patterns (inter-image
discrepancy), so each is made explicit:

  intra  Y_a = softmax(Q K^T / sqrt(d)) V,          Q, K, V from the patch tokens x
  inter  Y_e = softmax(Q' K_r^T / sqrt(d)) V_r,     Q' from x; K_r, V_r from learned
                                                     reference tokens R (M x C)
  fuse   y   = W_o [Y_a ; Y_e]                      (concatenate, project back to C)

R stands for features of normal images; here it is a learned parameter (the
paper's learnable reference). Multi-head, sequence (B, N, C) or image tokens.

Learning targets (the paper's self-supervision), left in ``aux_loss`` at each
training forward for the trainer to add:

  intra  the RBF-kernel target correlation T_ij = softmax_j(-|p_i - p_j|^2 / 2 sigma_h^2)
         over token positions p (grid coordinates of an image, indices of a
         sequence), sigma_h learned per head; loss = symmetric KL(T_i, A_i)
  inter  the RBF target over feature distances to the references,
         T^e_ij = softmax_j(-|t_i - r_j|^2 / 2 tau^2), tau learned; loss =
         symmetric KL(T^e_i, A^e_i); plus the entropy constraint: the mean
         entropy of each token's attention over the references, pushed down so
         normal tokens bind to few references (no collapse to one diffuse mode)

``discrepancy(x)`` gives each token's anomaly score from the same two terms
(B, N): large where a token's intra-correlation departs from its target and its
inter-correlation is diffuse.

Deviations: ``fuse='add'`` (sum of the two branch outputs, then W_o) is offered
as a cheaper variant; the paper's patch-wise reconstruction branch and its
scoring of several layers are the model's, not this layer's.

Catalog S07, read against the paper. Paper: I2Correlation replaces
self-attention with an intra-image branch and an inter-image branch (attention
to learned references of normal patterns), fuses them, and learns both with
RBF-kernel target correlations and an entropy constraint, so that anomalies
show as discrepancies. archgram: both branches, the fusion, both learning
terms (as ``aux_loss``) and the per-token discrepancy. Differs: the targets'
exact distance measures are our reading of the paper (grid distance for the
intra target, feature distance to the raw reference tokens for the inter
target); the references are learned parameters, not features of stored
normal images.
"""
from __future__ import annotations

import torch
from torch import nn

from archgram.ops.registry import Arg, Op, check_rank, register_op
from archgram.ops.tokens import from_tokens, to_tokens
from archgram.ops.vision._common import divides, tokens_of
from archgram.shapes import Shape

EPS = 1e-8


def split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    return t.view(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)


def attention_map(q: torch.Tensor, k: torch.Tensor, heads: int) -> torch.Tensor:
    """Softmax weights (B, heads, N, M) of q (B, N, C) over k (B, M, C)."""
    d = q.shape[-1] // heads
    return torch.softmax(split_heads(q, heads) @ split_heads(k, heads).transpose(-1, -2) * d**-0.5, dim=-1)


def mha(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Softmax attention of q (B, N, C) over k, v (B, M, C) with ``heads`` heads."""
    b, n, c = q.shape
    return (attention_map(q, k, heads) @ split_heads(v, heads)).transpose(1, 2).reshape(b, n, c)


def token_positions(x: torch.Tensor) -> torch.Tensor:
    """(N, 2) grid coordinates (row, col) of an image's tokens, (N, 1) indices of a sequence's."""
    if x.dim() == 4:
        rows, cols = torch.meshgrid(torch.arange(x.shape[2]), torch.arange(x.shape[3]), indexing="ij")
        return torch.stack([rows.flatten(), cols.flatten()], dim=-1).to(x.dtype)
    return torch.arange(x.shape[1], dtype=x.dtype)[:, None]


def sym_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p||q) + KL(q||p) over the last axis."""
    lp, lq = (p + EPS).log(), (q + EPS).log()
    return ((p - q) * (lp - lq)).sum(-1)


@register_op(
    "i2correlation",
    family="vision",
    refs=("S07",),
    args={
        "heads": Arg(int, 2, low=1, doc="attention heads of both branches"),
        "references": Arg(int, 8, low=1, doc="learned reference tokens M of the inter-image branch"),
        "fuse": Arg(str, "concat", choices=("concat", "add"), doc="how the two branch outputs are combined"),
    },
)
class I2Correlation(Op):
    """FOD I2Correlation: intra-image self-attention plus inter-image attention to learned reference tokens."""

    def __init__(self, shape: Shape, heads: int = 2, references: int = 8, fuse: str = "concat"):
        super().__init__()
        self.output_shape(shape, heads=heads)
        _, c = tokens_of(shape)
        self.heads, self.fuse = heads, fuse
        self.reference = nn.Parameter(torch.randn(references, c) * 0.02)
        self.qkv = nn.Linear(c, 3 * c)
        self.q_inter = nn.Linear(c, c)
        self.kv_ref = nn.Linear(c, 2 * c)
        self.out = nn.Linear(2 * c if fuse == "concat" else c, c)
        self.log_sigma = nn.Parameter(torch.zeros(heads))  # intra RBF target width per head, in grid steps
        self.log_tau = nn.Parameter(torch.zeros(1))  # inter RBF target width, in feature units

    @classmethod
    def output_shape(cls, shape: Shape, heads: int = 2, **args) -> Shape:
        check_rank("i2correlation", shape, 3, 4)
        divides("i2correlation", shape, tokens_of(shape)[1], heads, "heads")
        return shape

    @classmethod
    def count_params(cls, shape: Shape, /, heads: int = 2, references: int = 8, fuse: str = "concat") -> int:
        c = tokens_of(shape)[1]
        fused = 2 * c if fuse == "concat" else c
        return references * c + (3 * c * c + 3 * c) + (c * c + c) + (2 * c * c + 2 * c) + (fused * c + c) + heads + 1

    def maps(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(intra (B, H, N, N), inter (B, H, N, M)) correlation maps for tokens t (B, N, C)."""
        q, k, _ = self.qkv(t).chunk(3, dim=-1)
        k_r = self.kv_ref(self.reference).expand(t.shape[0], -1, -1).chunk(2, dim=-1)[0]
        return attention_map(q, k, self.heads), attention_map(self.q_inter(t), k_r, self.heads)

    def branches(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(intra, inter) branch outputs for tokens t (B, N, C)."""
        q, k, v = self.qkv(t).chunk(3, dim=-1)
        intra = mha(q, k, v, self.heads)
        k_r, v_r = self.kv_ref(self.reference).expand(t.shape[0], -1, -1).chunk(2, dim=-1)
        inter = mha(self.q_inter(t), k_r, v_r, self.heads)
        return intra, inter

    def target(self, positions: torch.Tensor) -> torch.Tensor:
        """RBF target correlation (H, N, N): softmax_j(-|p_i - p_j|^2 / (2 sigma_h^2))."""
        d2 = torch.cdist(positions, positions).pow(2)
        sigma = self.log_sigma.exp().view(-1, 1, 1)
        return torch.softmax(-d2 / (2 * sigma**2), dim=-1)

    def inter_target(self, t: torch.Tensor) -> torch.Tensor:
        """RBF target (B, 1, N, M) over feature distances of tokens t (B, N, C) to the references."""
        d2 = torch.cdist(t, self.reference.expand(t.shape[0], -1, -1)).pow(2)
        return torch.softmax(-d2 / (2 * self.log_tau.exp() ** 2), dim=-1)[:, None]

    def discrepancy(self, x: torch.Tensor) -> torch.Tensor:
        """Per-token terms (B, N): symmetric KL of each correlation to its RBF target, plus the
        entropy of the inter-correlation, averaged over heads."""
        t = to_tokens(x)
        intra, inter = self.maps(t)
        target = self.target(token_positions(x).to(intra.device))
        entropy = -(inter * (inter + EPS).log()).sum(-1)
        inter_kl = sym_kl(self.inter_target(t).expand_as(inter), inter)
        return (sym_kl(target.expand_as(intra), intra) + inter_kl + entropy).mean(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = to_tokens(x)
        intra, inter = self.branches(t)
        if self.training and torch.is_grad_enabled() and not torch.compiler.is_exporting():
            self.aux_loss = self.discrepancy(x).mean()  # the paper's learning targets
        fused = torch.cat([intra, inter], dim=-1) if self.fuse == "concat" else intra + inter
        return from_tokens(self.out(fused), x)
