"""Hierarchical self-attention over a nested token tree (Amizadeh et al. 2025,
"Hierarchical Self-Attention: Generalizing Neural Attention Mechanics to
Multi-Scale Problems", HSA, catalog S73).

The input is read as a nested signal: tokens are the leaves of a regular tree
whose nodes are blocks of ``branch`` consecutive tokens (sequences) or
``branch`` x ``branch`` windows (images, a quadtree), blocks of blocks, and so
on for ``levels`` levels; the root's children are the coarsest blocks. Two
tokens i, j interact through the siblings that separate them: if their lowest
common ancestor is u, with i in child A of u and j in child B, the energy is
the mean of the leaf energies over the block,

    e_ij = mean_{a in A, b in B} q_a . k_b / sqrt(d) = q_A . k_B / sqrt(d),

q_A, k_B the mean query of A and key of B (tokens in the same finest block, and
a token with itself, use their own q_i . k_j). The paper derives this block
constraint -- every leaf pair across two siblings shares one energy -- as the
entropy-minimising attention closest to softmax (replacing a block of energies
by its mean is the KL projection of the exponent). Weights are the softmax of
e_ij over all tokens j, and out_i = sum_j w_ij v_j.

Because e_ij is constant over j in B, node B enters query i's softmax once, with
multiplicity |B| and value mean v_B. The computation is therefore the paper's
dynamic programme bottom-up: at every level, pooled queries attend to their
sibling nodes only (``branch`` or ``branch**2`` of them, the root's children to
each other), partial softmaxes are merged across levels by log-sum-exp and
broadcast back to the tokens -- O(N * branch * levels) energies instead of N^2.
With levels = 1 the root's children are the tokens and this is exactly
softmax attention.

Deviations: the paper builds the tree from the data's own structure (documents,
paragraphs, modalities); a grammar op has only the tensor, so the hierarchy is a
fixed regular grouping of positions. We could read only the abstract and
secondary summaries of the paper: the mean-energy block rule above is our
reading of its "closest to softmax under the hierarchy's block constraints".

In three parts: Paper's defining mechanism: attention over a nested signal
derived by entropy minimisation -- the KL-closest attention to softmax under
the hierarchy's block constraints -- computed by a dynamic programme over the
tree. What archgram does: that attention (block energies as means of the leaf
energies) by the bottom-up programme, on a regular tree of sequence blocks or
image quadtree windows. What differs: the tree is a fixed regular grouping of
positions, not each input's own structure (documents, modalities), since an
op's forward receives only the feature tensor, with no per-example structure.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from archgram.errors import ShapeError
from archgram.ops.registry import Arg, Op, check_rank, register_op
from archgram.shapes import IMAGE_RANK, Shape

ARGS = {
    "heads": Arg(int, 4, low=1, doc="attention heads"),
    "levels": Arg(int, 2, low=1, doc="tree levels above the tokens, root included (1: plain softmax attention)"),
    "branch": Arg(int, 2, low=2, doc="children per node along each axis (sequence blocks, image windows)"),
}


def _grid(shape: Shape) -> tuple[int, int, int]:
    """(H, W, channels) of the token grid; a sequence is a 1 x N grid."""
    if len(shape) == IMAGE_RANK:
        return shape[2], shape[3], shape[1]
    return 1, shape[1], shape[2]


def _check(shape: Shape, heads: int, levels: int, branch: int) -> None:
    check_rank("hierarchical_attention", shape, 3, 4)
    h, w, c = _grid(shape)
    if heads < 1 or c % heads:
        raise ShapeError(f"hierarchical_attention: {c} channels do not split into {heads} heads")
    if levels < 1 or branch < 2:
        raise ShapeError("hierarchical_attention needs levels >= 1 and branch >= 2")
    size = branch ** (levels - 1)  # tokens per side of a coarsest block
    image = len(shape) == IMAGE_RANK
    if w % size or (image and h % size):
        grid = f"{h} x {w} grid" if image else f"{w} tokens"
        raise ShapeError(f"hierarchical_attention: {levels} levels of branch {branch} need blocks of {size} "
                         f"{'x ' + str(size) + ' ' if image else ''}tokens, which do not tile the {grid}")


def _pool(x: torch.Tensor, fh: int, fw: int) -> torch.Tensor:
    """Mean over fh x fw windows of a (B, H, h, w, d) node grid."""
    b, nh, h, w, d = x.shape
    return x.reshape(b, nh, h // fh, fh, w // fw, fw, d).mean((3, 5))


def _group(x: torch.Tensor, fh: int, fw: int) -> torch.Tensor:
    """(B, H, h, w, d) -> (B, H, G, fh*fw, d): nodes grouped by parent window."""
    b, nh, h, w, d = x.shape
    x = x.reshape(b, nh, h // fh, fh, w // fw, fw, d).permute(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(b, nh, (h // fh) * (w // fw), fh * fw, d)


def _ungroup(x: torch.Tensor, h: int, w: int, fh: int, fw: int) -> torch.Tensor:
    """Inverse of ``_group`` on (B, H, G, fh*fw, ...) -> (B, H, h, w, ...)."""
    b, nh = x.shape[:2]
    rest = x.shape[4:]
    x = x.reshape(b, nh, h // fh, w // fw, fh, fw, *rest).permute(0, 1, 2, 4, 3, 5, *range(6, 6 + len(rest)))
    return x.reshape(b, nh, h, w, *rest)


def _spread(x: torch.Tensor, fh: int, fw: int) -> torch.Tensor:
    """Broadcast a node grid (B, H, h, w, ...) to its tokens (B, H, h*fh, w*fw, ...)."""
    return x.repeat_interleave(fh, dim=2).repeat_interleave(fw, dim=3)


def hierarchical_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: tuple[int, int],
                           levels: int, branch: int, scale: float) -> torch.Tensor:
    """HSA output for (B, H, N, d) q, k, v on a row-major ``grid`` (h, w), N = h * w.

    Level l holds nodes of branch**l tokens per side (1 along the height of a
    sequence grid, h = 1); the nodes of level l attend to their siblings (same
    parent window; at the top level, all of them), excluding themselves for
    l >= 1 (a node meets itself at the finer levels), with log-multiplicity
    bias; the partial softmaxes (max, sum, weighted values) merge across levels."""
    b, nh, n, d = q.shape
    h, w = grid
    fh, fw = (branch, branch) if h > 1 else (1, branch)
    qs, ks, vs = (t.reshape(b, nh, h, w, d) for t in (q, k, v))
    neg = torch.finfo(q.dtype).min
    parts = []  # per level, token-grid (max, sum, weighted values)
    for level in range(levels):
        top = level == levels - 1
        nh_l, nw_l = qs.shape[2], qs.shape[3]
        gh, gw = (nh_l, nw_l) if top else (fh, fw)
        qg, kg, vg = (_group(t, gh, gw) for t in (qs, ks, vs))
        logits = torch.matmul(qg, kg.transpose(-1, -2)) * scale  # (B, H, G, s, s)
        siblings = qg.shape[-2]
        if level:
            logits = logits + math.log((fh * fw) ** level)  # multiplicity of each sibling node
            visible = ~torch.eye(siblings, dtype=torch.bool, device=q.device)
            logits = logits.masked_fill(~visible, neg)
        m = logits.amax(-1, keepdim=True).detach()  # any per-row constant; the merge removes it
        e = torch.exp(logits - m)
        if level:
            e = torch.where(visible, e, torch.zeros((), dtype=e.dtype, device=e.device))
        s, o = e.sum(-1, keepdim=True), torch.matmul(e, vg)
        if level and siblings == 1:  # a lone child has no siblings at this level
            m = torch.full_like(m, neg)
        node = (_ungroup(t, nh_l, nw_l, gh, gw) for t in (m, s, o))
        parts.append(tuple(_spread(t, fh ** level, fw ** level) for t in node))
        if not top:
            qs, ks, vs = (_pool(t, fh, fw) for t in (qs, ks, vs))
    top_m = torch.stack([p[0] for p in parts]).amax(0)
    total_s = sum(p[1] * torch.exp(p[0] - top_m) for p in parts)
    total_o = sum(p[2] * torch.exp(p[0] - top_m) for p in parts)
    return (total_o / total_s).reshape(b, nh, n, d)


@register_op("hierarchical_attention", family="attention", args=ARGS, refs=("S73",))
class HierarchicalAttention(Op):
    """Hierarchical self-attention: tokens meet through the mean energies of the sibling blocks that separate them."""

    def __init__(self, shape: Shape, heads: int = 4, levels: int = 2, branch: int = 2):
        super().__init__()
        _check(shape, heads, levels, branch)
        h, w, c = _grid(shape)
        self.grid, self.heads, self.levels, self.branch = (h, w), heads, levels, branch
        self.head_dim = c // heads
        self.qkv = nn.Linear(c, 3 * c)
        self.out = nn.Linear(c, c)

    @classmethod
    def output_shape(cls, shape: Shape, **args: Any) -> Shape:
        _check(shape, args.get("heads", 4), args.get("levels", 2), args.get("branch", 2))
        return shape

    @classmethod
    def count_params(cls, shape: Shape, /, **args: Any) -> int:
        c = _grid(shape)[2]
        return 4 * c * c + 4 * c

    @classmethod
    def flops(cls, shape, out, params, /, **args) -> int:
        h, w, c = _grid(shape)
        branch, levels = args.get("branch", 2), args.get("levels", 2)
        siblings = branch * branch if len(shape) == IMAGE_RANK else branch
        return 2 * params * shape[0] * h * w + 4 * shape[0] * h * w * c * siblings * levels

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v (B, H, N, d) from tokens (B, N, C)."""
        b, n, _ = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = x.dim() == IMAGE_RANK
        if image:
            b, c, h, w = x.shape
            x = x.flatten(2).transpose(1, 2)
        q, k, v = self.project(x)
        o = hierarchical_attention(q, k, v, self.grid, self.levels, self.branch, 1.0 / math.sqrt(self.head_dim))
        y = self.out(o.transpose(1, 2).reshape(x.shape))
        if image:
            y = y.transpose(1, 2).reshape(b, c, h, w)
        return y

    def extra_repr(self) -> str:
        return f"heads={self.heads}, levels={self.levels}, branch={self.branch}"


__all__ = ["HierarchicalAttention", "hierarchical_attention"]
