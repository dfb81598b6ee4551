"""BAM (Branch-Attend-Mix; Zhang et al. 2024; catalog S10): a parallel-attention
transformer block whose attention *and* FFN are mixtures of experts, upcycled
from dense blocks.

    y = x + sum_e w_e(h) * Attn_e(h) + MoE_FFN(h),   h = LayerNorm(x)

Attention experts are mixed with soft routing (every expert runs, weighted by
the router's softmax w_e per token, as in the paper); FFN experts are top-k
routed (``RoutedMoE``). With ``shared_kv`` the key and value projections are
one set shared by all attention experts (the paper's cheaper variant).

``upcycle(dense, n)`` builds the mixture from dense parts: each expert is a copy
of the dense attention / FFN, everything else (norm) is copied, routers start
random. Since the copies are identical and the mixing weights sum to one, the
upcycled block computes exactly the dense block's function at initialisation.
(BAM upcycles several specialised dense copies; a list of dense blocks may be
given, in which case expert e copies dense block e and norms are averaged.)

Catalog S10, read against the paper. Paper: Branch-Train-MiX extended to
attention: dense seed copies are trained apart (specialised), then both their
FFNs and their attention layers become experts of one MoE model; attention
experts are mixed by soft routing (all run, softmax weights), FFN experts by
top-k routing; optional key/value sharing across attention experts; a
parallel-attention block for throughput. archgram: that block (``bam``) and
``upcycle`` from one or several dense blocks. Differs: the specialised
pre-training of the seeds is the user's (an op cannot train its own seeds);
routers start random as in the paper.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from archgram.errors import ShapeError
from archgram.ops.moe.routed import FFN, RoutedMoE
from archgram.ops.registry import Arg, Op, check_rank, register_op
from archgram.shapes import Shape


class Attention(nn.Module):
    """Multi-head softmax self-attention; ``k``/``v`` projections may be shared modules."""

    def __init__(self, dim: int, heads: int, k: nn.Linear | None = None, v: nn.Linear | None = None):
        super().__init__()
        if dim % heads:
            raise ShapeError(f"attention: heads={heads} must divide the width {dim}")
        self.heads = heads
        self.q, self.o = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.shared = k is not None
        if self.shared:
            self._kv = (k, v)  # not registered here: the owner holds them once
        else:
            self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def kv(self) -> tuple[nn.Module, nn.Module]:
        return self._kv if self.shared else (self.k, self.v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        kp, vp = self.kv()

        def split(t):
            return t.view(b, n, self.heads, d // self.heads).transpose(1, 2)

        q, k, v = split(self.q(x)), split(kp(x)), split(vp(x))
        att = (q @ k.transpose(-1, -2) / math.sqrt(d // self.heads)).softmax(-1)
        return self.o((att @ v).transpose(1, 2).reshape(b, n, d))


class DenseParallelBlock(nn.Module):
    """Dense parallel-attention block: x + Attn(LN x) + FFN(LN x); the seed BAM upcycles."""

    def __init__(self, dim: int, heads: int = 2, hidden: int | None = None):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.ffn = FFN(dim, hidden or 2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        return x + self.attn(h) + self.ffn(h)


class BAMBlock(nn.Module):
    """Parallel block with soft-routed attention experts and top-k routed FFN experts."""

    def __init__(self, dim: int, heads: int = 2, experts: int = 4, k: int = 1, hidden: int | None = None,
                 shared_kv: bool = False):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn_router = nn.Linear(dim, experts, bias=False)
        if shared_kv:
            self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim)
            self.attn_experts = nn.ModuleList(Attention(dim, heads, self.k, self.v) for _ in range(experts))
        else:
            self.attn_experts = nn.ModuleList(Attention(dim, heads) for _ in range(experts))
        self.shared_kv = shared_kv
        self.ffn = RoutedMoE(dim, experts, k, hidden or 2 * dim)

    def attention_weights(self, h: torch.Tensor) -> torch.Tensor:
        """Soft routing weights over attention experts, (B, N, E)."""
        return self.attn_router(h).softmax(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        w = self.attention_weights(h)
        mixed = sum(w[..., e, None] * expert(h) for e, expert in enumerate(self.attn_experts))
        return x + mixed + self.ffn(h)

    @property
    def aux_loss(self) -> torch.Tensor:
        return self.ffn.aux_loss


def _average_into(target: nn.Module, sources: list[nn.Module]) -> None:
    with torch.no_grad():
        for name, p in target.named_parameters():
            p.copy_(torch.stack([dict(s.named_parameters())[name] for s in sources]).mean(0))


def upcycle(dense: nn.Module | list[nn.Module], n_experts: int | None = None, k: int = 1,
            shared_kv: bool = False) -> nn.Module:
    """Upcycle a dense ``FFN`` into a ``RoutedMoE`` or a ``DenseParallelBlock``
    into a ``BAMBlock`` with ``n_experts`` copies (or one expert per dense model
    when a list is given). Routers keep their random initialisation; with
    ``shared_kv`` the shared K/V projections are the average of the seeds'."""
    seeds = list(dense) if isinstance(dense, (list, tuple)) else [dense] * int(n_experts or 0)
    if not seeds:
        raise ValueError("upcycle: give n_experts >= 1 or a list of dense models")
    first = seeds[0]
    if isinstance(first, FFN):
        moe = RoutedMoE(first.fc1.in_features, len(seeds), k, first.fc1.out_features)
        moe.experts = nn.ModuleList(copy.deepcopy(s) for s in seeds)
        return moe
    if not isinstance(first, DenseParallelBlock):
        raise TypeError(f"upcycle: expected FFN or DenseParallelBlock, got {type(first).__name__}")
    dim, heads = first.norm.normalized_shape[0], first.attn.heads
    block = BAMBlock(dim, heads, len(seeds), k, first.ffn.fc1.out_features, shared_kv)
    _average_into(block.norm, [s.norm for s in seeds])
    block.ffn.experts = nn.ModuleList(copy.deepcopy(s.ffn) for s in seeds)
    with torch.no_grad():
        for expert, s in zip(block.attn_experts, seeds, strict=True):
            expert.q.load_state_dict(s.attn.q.state_dict())
            expert.o.load_state_dict(s.attn.o.state_dict())
            if not shared_kv:
                expert.k.load_state_dict(s.attn.k.state_dict())
                expert.v.load_state_dict(s.attn.v.state_dict())
        if shared_kv:
            _average_into(block.k, [s.attn.k for s in seeds])
            _average_into(block.v, [s.attn.v for s in seeds])
    return block


@register_op(
    "bam",
    family="moe",
    refs=("S10",),
    args={
        "heads": Arg(int, 2, low=1),
        "experts": Arg(int, 4, low=1, high=32),
        "k": Arg(int, 1, low=1),
        "mult": Arg(int, 2, low=1, high=8, doc="FFN expert hidden width = mult * D"),
        "shared_kv": Arg(bool, False, doc="one K/V projection shared by the attention experts"),
    },
)
class BAM(Op):
    """BAM block: soft mixture of attention experts + routed FFN experts, in parallel (sequences)."""

    def __init__(self, shape: Shape, heads: int = 2, experts: int = 4, k: int = 1, mult: int = 2,
                 shared_kv: bool = False):
        super().__init__()
        d = shape[-1]
        self.block = BAMBlock(d, heads, experts, k, mult * d, shared_kv)

    @classmethod
    def output_shape(cls, shape: Shape, heads: int = 2, experts: int = 4, k: int = 1, mult: int = 2,
                     shared_kv: bool = False) -> Shape:
        check_rank("bam", shape, 3)
        if shape[-1] % heads:
            raise ShapeError(f"bam: heads={heads} must divide the width {shape[-1]}")
        if k > experts:
            raise ShapeError(f"bam: k={k} exceeds experts={experts}")
        return shape

    @classmethod
    def count_params(cls, shape: Shape, /, heads: int = 2, experts: int = 4, k: int = 1, mult: int = 2,
                     shared_kv: bool = False) -> int:
        d = shape[-1]
        h = mult * d
        lin = d * d + d
        attn = experts * (2 * lin if shared_kv else 4 * lin) + (2 * lin if shared_kv else 0)
        ffn = d * experts + experts * (2 * d * h + h + d)
        return 2 * d + d * experts + attn + ffn

    @property
    def aux_loss(self) -> torch.Tensor:
        return self.block.aux_loss

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)
