"""Head layouts: how the input is projected into query/key/value heads and back.

A layout owns the projections. ``qkv`` gives q (B, Hq, N, d) and k, v
(B, Hkv, N, d); ``expand`` repeats key/value heads for the query heads that
share them; ``out`` maps the Hq head outputs back to channels. ``Hq`` is
``attention_heads`` -- the heads the score, pattern and position axes see,
which differs from the op's ``heads`` for layouts that compute fewer (SQA) or
more (TPLA's per-shard heads) attention maps than the model's head split.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from archgram.errors import ShapeError
from archgram.ops.attention.parts import LAYOUTS, Part


def balance_loss(probs: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """MoH's head load-balance loss, E * sum_i f_i P_i, for router probabilities
    ``probs`` (T, E) and a 0/1 ``chosen`` mask (T, E) of the heads each token picked:
    1 when tokens and probability spread evenly, E when every token picks one head."""
    e = probs.shape[-1]
    f = chosen.sum(0) / chosen.sum()
    return e * (f * probs.mean(0)).sum()


class Layout(Part, nn.Module):
    """Projections for ``heads`` query heads and ``kv_heads`` key/value heads."""

    #: True: the constructor also takes ``grid`` (the (H, W) of an image input).
    uses_geometry: ClassVar[bool] = False
    #: True: keys/values come from fewer tokens than the queries (``keys``), so
    #: masks, positions and scores that assume a square n x n map are refused.
    reduces_keys: ClassVar[bool] = False

    @classmethod
    def qk_dim(cls, head_dim: int, dim: int = 0, **params) -> int:
        """Channels per head of queries and keys (values keep ``head_dim``);
        ``dim`` is the op's channel count."""
        return head_dim

    @classmethod
    def frozen_flops(cls, n: int, dim: int, heads: int, head_dim: int, **params) -> int:
        """Forward FLOPs of projections held as buffers (not counted by parameters)."""
        return 0

    @classmethod
    def keys(cls, n: int, grid, **params) -> int:
        """Key/value tokens the queries attend to."""
        return n

    @classmethod
    def check_geometry(cls, n: int, grid, **params) -> None:
        """Refuse (ShapeError) inputs this layout cannot serve (sequences, small grids)."""

    @classmethod
    def attention_heads(cls, heads: int, **params) -> int:
        """Attention maps computed per token (what scores and positions see)."""
        return heads

    @classmethod
    def kv_heads(cls, heads: int, kv_heads: int, **params) -> int:
        return cls.attention_heads(heads, **params)

    @classmethod
    def check(cls, dim: int, heads: int, kv_heads: int, head_dim: int, **params) -> None:
        hq = cls.attention_heads(heads, **params)
        kv = cls.kv_heads(heads, kv_heads, **params)
        if kv < 1 or hq % kv:
            raise ShapeError(f"layout '{cls.name}': {kv} key/value heads must divide {hq} query heads")

    def __init__(self, dim: int, heads: int, kv_heads: int, head_dim: int, **params):
        nn.Module.__init__(self)
        self.heads = self.attention_heads(heads, **params)
        self.kv = self.kv_heads(heads, kv_heads, **params)
        self.head_dim = head_dim
        self.q = nn.Linear(dim, self.heads * head_dim)
        self.k = nn.Linear(dim, self.kv * head_dim)
        self.v = nn.Linear(dim, self.kv * head_dim)
        self.o = nn.Linear(self.heads * head_dim, dim)

    def split(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, heads, self.head_dim).transpose(1, 2)

    def qkv(self, x: torch.Tensor):
        q = self.split(self.q(x), self.heads)
        k = self.split(self.k(x), self.kv)
        v = self.split(self.v(x), self.kv)
        return q, k, v

    def expand(self, kv: torch.Tensor) -> torch.Tensor:
        """Repeat each key/value head for the query heads that share it."""
        return kv.repeat_interleave(self.heads // self.kv, dim=1) if self.kv != self.heads else kv

    def unexpanded(self, kv: torch.Tensor) -> torch.Tensor:
        """Undo ``expand`` as a strided view (no copy), so a GQA kernel reads each
        key/value head once and sums its gradient over the group; a layout that
        overrides ``expand`` keeps its own heads."""
        if type(self).expand is Layout.expand and self.kv != self.heads:
            return kv[:, :: self.heads // self.kv]
        return kv

    def out(self, o: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """Head outputs (B, Hq, N, d) -> (B, N, dim). ``x`` (the layer input) is
        there for layouts whose output depends on it (MoH's router)."""
        b, h, n, d = o.shape
        return self.o(o.transpose(1, 2).reshape(b, n, h * d))

    def kv_cache_per_token(self) -> int:
        """Numbers cached per token per layer at decode time (keys + values)."""
        return 2 * self.kv * self.head_dim


@LAYOUTS.register
class MHA(Layout):
    """Multi-head attention: one key/value head per query head."""

    name = "mha"


@LAYOUTS.register
class GQA(Layout):
    """Grouped-query attention: ``kv_heads`` key/value heads shared by groups of query heads."""

    name = "gqa"

    @classmethod
    def kv_heads(cls, heads, kv_heads, **params):
        return kv_heads or heads


@LAYOUTS.register
class MQA(Layout):
    """Multi-query attention: one key/value head for all query heads."""

    name = "mqa"

    @classmethod
    def kv_heads(cls, heads, kv_heads, **params):
        return 1


@LAYOUTS.register
class SQA(Layout):
    """Sparse Query Attention (Filipek 2025, catalog S42): fewer *query* heads.

    The op's ``heads`` H only splits the channels (head dim = dim / H, as in the
    MHA it replaces); ``query_heads`` Hq < H heads are actually computed, with
    ``kv_heads`` Hkv <= Hq key/value heads repeated GQA-style (0: Hkv = Hq, the
    symmetric sSQA). The query projection has Hq*d outputs and the output
    projection maps Hq*d back to dim, so attention FLOPs fall by Hq/H -- the
    point of SQA, where GQA/MQA only shrink the KV cache. Default Hq = H/2
    (the paper's standard variant); Hq <= H/4 is its 'extreme' xSQA.

    Fidelity: the paper's mechanism (fewer query heads, FLOPs down by Hq/H) is
    what this layout computes; nothing differs.
    """

    name = "sqa"
    params = ("query_heads",)
    refs = ("S42",)

    @classmethod
    def attention_heads(cls, heads, query_heads: int | None = None, **params):
        return query_heads if query_heads is not None else max(1, heads // 2)

    @classmethod
    def kv_heads(cls, heads, kv_heads, **params):
        return kv_heads or cls.attention_heads(heads, **params)

    @classmethod
    def check(cls, dim, heads, kv_heads, head_dim, **params):
        hq = cls.attention_heads(heads, **params)
        if not isinstance(hq, int) or not 1 <= hq <= heads:
            raise ShapeError(f"layout 'sqa': query_heads must be an integer in 1..{heads} (the heads it thins), got {hq!r}")
        if cls.kv_heads(heads, kv_heads, **params) > hq:
            raise ShapeError(f"layout 'sqa': {kv_heads} key/value heads exceed its {hq} query heads")
        super().check(dim, heads, kv_heads, head_dim, **params)


@LAYOUTS.register
class MLA(Layout):
    """Multi-head latent attention (DeepSeek-V2; catalog S68's base).

    Keys and values come from one low-rank latent per token, c = W_dkv x
    (``latent`` numbers), with per-head up-projections k = W_uk c, v = W_uv c;
    only c is cached at decode time, so the cache is ``latent`` numbers per
    token instead of 2 * H * d. Queries are full-rank. Positions act on the
    up-projected q/k (DeepSeek's decoupled-RoPE key and the latent RMSNorm are
    left out).
    """

    name = "mla"
    params = ("latent",)
    refs = ("S68",)

    @classmethod
    def check(cls, dim, heads, kv_heads, head_dim, **params):
        latent = params.get("latent")
        if not isinstance(latent, int) or latent < 1:
            raise ShapeError(f"layout '{cls.name}' needs a positive integer latent size, got {latent!r}")

    def __init__(self, dim, heads, kv_heads, head_dim, latent: int = 0, **params):
        nn.Module.__init__(self)
        self.heads = self.kv = heads
        self.head_dim, self.latent = head_dim, latent
        self.q = nn.Linear(dim, heads * head_dim)
        self.down = nn.Linear(dim, latent, bias=False)  # W_dkv: x -> c
        self.up_k = nn.Linear(latent, heads * head_dim, bias=False)  # W_uk
        self.up_v = nn.Linear(latent, heads * head_dim, bias=False)  # W_uv
        self.o = nn.Linear(heads * head_dim, dim)

    def qkv(self, x):
        c = self.down(x)
        return self.split(self.q(x), self.heads), self.split(self.up_k(c), self.heads), self.split(self.up_v(c), self.heads)

    def kv_cache_per_token(self) -> int:
        return self.latent


@LAYOUTS.register
class TPLA(MLA):
    """Tensor-parallel latent attention (Tang et al. 2025, catalog S68).

    The MLA latent c is cut into ``shards`` equal slices, one per device; on
    shard s every head h attends with its key/value up-projected from that
    slice alone, k_hs = W_uk[h, :, s] c_s, v_hs = W_uv[h, :, s] c_s, softmax
    taken over the shard's partial scores q_h . k_hs, and the shards' outputs
    are summed (the all-reduce). Each head still sees the whole latent across
    shards, and each device caches latent / shards numbers per token. The
    attention axes see heads * shards maps (index h * shards + s); with one
    shard this is exactly MLA. The paper's orthogonal (Hadamard/PCA) transform
    before slicing, a conversion trick for pretrained MLA weights, is left out.

    Paper's defining mechanism: MLA's latent KV cache split across tensor-
    parallel devices, each device attending with its slice and the shards'
    outputs reduced, so each device caches latent/shards per token while every
    head still reads the whole latent (unlike GLA-style head grouping).
    What archgram does: that computation on one device, shards as extra
    attention maps, ``kv_cache_per_device`` = latent / shards.
    What differs: no orthogonal transform before slicing; it only re-expresses
    a pretrained MLA checkpoint so slicing loses less, and a model trained from
    scratch learns W_dkv with any such rotation absorbed. There are no real
    devices or collectives (the sum stands for the all-reduce).
    """

    name = "tpla"
    params = ("latent", "shards")
    refs = ("S68",)

    @classmethod
    def attention_heads(cls, heads, shards: int = 2, **params):
        return heads * shards

    @classmethod
    def check(cls, dim, heads, kv_heads, head_dim, **params):
        super().check(dim, heads, kv_heads, head_dim, **params)
        shards = params.get("shards", 2)
        if not isinstance(shards, int) or shards < 1 or params["latent"] % shards:
            raise ShapeError(f"layout 'tpla': {shards!r} shards must be a positive integer dividing the latent size {params['latent']}")

    def __init__(self, dim, heads, kv_heads, head_dim, latent: int = 0, shards: int = 2):
        super().__init__(dim, heads, kv_heads, head_dim, latent)
        self.shards, self.model_heads = shards, heads
        self.heads = self.kv = heads * shards

    def qkv(self, x):
        b, n, _ = x.shape
        h, s, d = self.model_heads, self.shards, self.head_dim
        c = self.down(x).view(b, n, s, self.latent // s)

        def per_shard(up: nn.Linear) -> torch.Tensor:
            w = up.weight.view(h, d, s, self.latent // s)  # (H*d, r) split by head and latent slice
            return torch.einsum("bnsr,hdsr->bhsnd", c, w).reshape(b, h * s, n, d)

        q = self.split(self.q(x), h).repeat_interleave(s, dim=1)
        return q, per_shard(self.up_k), per_shard(self.up_v)

    def out(self, o, x=None):
        b, _, n, d = o.shape
        return super().out(o.view(b, self.model_heads, self.shards, n, d).sum(2))

    def kv_cache_per_device(self) -> int:
        return self.latent // self.shards


@LAYOUTS.register
class MoH(Layout):
    """Mixture-of-Head attention (Jin et al. 2024, catalog S19).

    Heads are experts: the first ``shared`` heads are always on, and a router
    picks the top-``k`` of the remaining heads per token. Head outputs are
    scaled by their gates before the output projection (a weighted instead of
    a plain sum over heads). Gates follow the paper's two-stage routing:
    routed g_i = a_2 softmax(W_r x)_i over the selected heads (0 elsewhere),
    shared g_i = a_1 softmax(W_s x)_i, [a_1, a_2] = softmax(W_h x). As in the
    official code, each group's gates are renormalised over its active heads
    and scaled by their count (a_1, a_2 by 2), so a uniform router gives every
    active head gate 1 -- a zero-initialised router is exactly MHA over the
    active heads. The paper's load-balance loss over the routed heads,
    L_b = sum_i f_i P_i (f_i the share of tokens that pick head i, P_i its mean
    router probability; scaled here by the routed-head count, so 1 is balanced),
    is left in ``aux_loss`` at each forward for the trainer to add. All heads are
    computed and masked (a reference, not the sparse fast path).

    Catalog S19, read against the paper. Paper: attention heads as experts; a
    router activates the top-k heads per token, shared heads are always on, and
    the output is a weighted (not plain) sum of the active heads; a load-balance
    loss keeps routed heads in use. archgram: all of it, as above. Differs: the
    skipped heads are computed and zeroed rather than skipped, so MoH's
    inference saving is not realised (the output is identical).
    """

    name = "moh"
    params = ("k", "shared")
    refs = ("S19",)

    @classmethod
    def check(cls, dim, heads, kv_heads, head_dim, k: int = 1, shared: int = 0, **params):
        if not isinstance(shared, int) or not 0 <= shared < heads:
            raise ShapeError(f"layout 'moh': shared heads must be in 0..{heads - 1}, got {shared!r}")
        if not isinstance(k, int) or not 1 <= k <= heads - shared:
            raise ShapeError(f"layout 'moh': top-k must be in 1..{heads - shared} (the routed heads), got {k!r}")

    def __init__(self, dim, heads, kv_heads, head_dim, k: int = 1, shared: int = 0):
        super().__init__(dim, heads, kv_heads, head_dim)
        self.top, self.shared = k, shared
        self.route = nn.Linear(dim, heads - shared, bias=False)  # W_r
        self.route_shared = nn.Linear(dim, shared, bias=False) if shared > 1 else None  # W_s
        self.route_groups = nn.Linear(dim, 2, bias=False) if shared else None  # W_h

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, H) per-token head weights; exactly 0 for heads not selected."""
        p = torch.softmax(self.route(x), dim=-1)
        chosen = torch.zeros_like(p).scatter(-1, p.topk(self.top, dim=-1).indices, 1.0)
        routed = p * chosen
        if torch.is_grad_enabled() and not torch.compiler.is_exporting():  # exported: inference only
            self.aux_loss = balance_loss(p.reshape(-1, p.shape[-1]), chosen.reshape(-1, p.shape[-1]))
        routed = routed / routed.sum(-1, keepdim=True).clamp_min(torch.finfo(p.dtype).eps) * self.top
        if not self.shared:
            return routed
        if self.route_shared is None:
            shared = torch.ones(*x.shape[:-1], 1, dtype=x.dtype, device=x.device)
        else:
            shared = torch.softmax(self.route_shared(x), dim=-1) * self.shared
        groups = torch.softmax(self.route_groups(x), dim=-1) * 2
        return torch.cat((shared * groups[..., :1], routed * groups[..., 1:]), dim=-1)

    def out(self, o, x=None):
        if x is None:
            raise ValueError("moh needs the layer input to route heads: call out(o, x)")
        return super().out(o * self.gates(x).transpose(1, 2).unsqueeze(-1))



@LAYOUTS.register
class StripSSA(Layout):
    """Strip Self-Attention (Xu et al. 2025, S2AFormer, catalog S43), image mode only.

    Keys and values come from a spatially reduced map: a depth-wise conv with kernel
    and stride ``reduction`` r turns the H x W grid into (H // r) x (W // r) tokens
    (a learned, per-channel pooling). Queries (from every pixel) and keys (from the
    reduced map) are channel-compressed by 1x1 projections to ``width`` channels per
    head -- the thin "strips" whose product forms the N x N / r^2 attention map --
    while values keep the full head dim. The map costs N^2 / r^2 * width instead of
    N^2 * d. Logits are scaled by 1 / sqrt(width) (the op's scale follows
    ``qk_dim``). The paper's full Hybrid Perception Block (DWConv, LIM, MLP around
    SSA) is left to the grammar; this is the attention itself.

    Fidelity: the paper's SSA (spatially reduced K/V by depth-wise conv,
    channel-compressed Q/K) is what this computes; the HPB around it is a grammar
    choice, so nothing of the attention differs.
    """

    name = "ssa"
    params = ("reduction", "width")
    refs = ("S43",)
    uses_geometry = True
    reduces_keys = True

    @classmethod
    def qk_dim(cls, head_dim, reduction: int = 2, width: int = 1, **params):
        return width

    @classmethod
    def keys(cls, n, grid, reduction: int = 2, width: int = 1, **params):
        return n if grid is None else (grid[0] // reduction) * (grid[1] // reduction)

    @classmethod
    def check(cls, dim, heads, kv_heads, head_dim, reduction: int = 2, width: int = 1, **params):
        for key, value in (("reduction", reduction), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ShapeError(f"layout 'ssa': {key} must be a positive integer, got {value!r}")

    @classmethod
    def check_geometry(cls, n, grid, reduction: int = 2, width: int = 1, **params):
        if grid is None:
            raise ShapeError("layout 'ssa' reduces keys/values spatially: it needs an image (B,C,H,W) input, not a sequence")
        if min(grid) < reduction:
            raise ShapeError(f"layout 'ssa': a {grid[0]}x{grid[1]} grid is smaller than the reduction {reduction}")

    def __init__(self, dim, heads, kv_heads, head_dim, reduction: int = 2, width: int = 1, grid=None):
        nn.Module.__init__(self)
        self.heads = self.kv = heads
        self.head_dim, self.width, self.reduction, self.grid = head_dim, width, reduction, grid
        self.reduce = nn.Conv2d(dim, dim, reduction, stride=reduction, groups=dim)  # spatial reduction of K, V
        self.q = nn.Linear(dim, heads * width)  # channel compression of Q
        self.k = nn.Linear(dim, heads * width)  # ... and of K
        self.v = nn.Linear(dim, heads * head_dim)
        self.o = nn.Linear(heads * head_dim, dim)

    def reduced(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens (B, N, dim) -> reduced tokens (B, N / r^2, dim)."""
        b, n, c = x.shape
        h, w = self.grid
        return self.reduce(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)

    def qkv(self, x):
        b, n, _ = x.shape
        r = self.reduced(x)
        m = r.shape[1]
        q = self.q(x).view(b, n, self.heads, self.width).transpose(1, 2)
        k = self.k(r).view(b, m, self.heads, self.width).transpose(1, 2)
        v = self.v(r).view(b, m, self.heads, self.head_dim).transpose(1, 2)
        return q, k, v

    def kv_cache_per_token(self) -> int:
        return self.heads * (self.width + self.head_dim)


@LAYOUTS.register
class Minimal(Layout):
    """The projection-free layout of "Reducing the Transformer Architecture to a
    Minimum" (Bermeitinger et al. 2024, catalog S45): W_Q, W_K, W_V and W_O are
    dropped, q = k = v = x split into heads and the head outputs are concatenated.

    With ``score=symmetric`` the logits are x_h W_h x_h^T with one symmetric W_h
    per head -- the paper's collapsed W_Q W_K^T (its symmetric, half-parameter
    variant) -- and the value is the token itself (no W_V); with ``softmax`` the
    logits are plain x_h . x_h. Leaving out the MLP is the grammar's choice (a
    block that is only attention). Needs heads * head_dim = channels; keys are
    the queries, so ``kv_heads`` is ignored.
    """

    name = "minimal"
    refs = ("S45",)

    @classmethod
    def check(cls, dim, heads, kv_heads, head_dim, **params):
        if heads * head_dim != dim:
            raise ShapeError(f"layout 'minimal' has no projections: heads x head_dim = {heads} x {head_dim} "
                             f"must equal the {dim} channels")

    @classmethod
    def kv_heads(cls, heads, kv_heads, **params):
        return heads

    def __init__(self, dim: int, heads: int, kv_heads: int, head_dim: int, **params):
        nn.Module.__init__(self)
        self.heads = self.kv = heads
        self.head_dim = head_dim

    def qkv(self, x: torch.Tensor):
        h = self.split(x, self.heads)
        return h, h, h

    def out(self, o: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        b, h, n, d = o.shape
        return o.transpose(1, 2).reshape(b, n, h * d)
