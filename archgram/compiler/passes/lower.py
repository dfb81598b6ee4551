"""Lower matched attention cascades to one fused attention call (catalog row S55).

``FusedAttention`` replaces the compiled ``Branch`` of a match. It keeps the
branch's submodules under the same names (split, arms, merge), so the
state_dict is unchanged and the projections are the very same parameters; its
forward runs the arms that compute Q, K^T and V as before, then one fused
attention instead of matmul -> scale -> softmax -> matmul: PyTorch's
scaled_dot_product_attention by default (its flash / memory-efficient kernels
on CUDA, which also train), or with ``backend="flash"`` archgram's Triton flash
kernel where its dispatch accepts the call (CUDA, equal K/V head dims, ...;
SDPA otherwise). Neither materialises the i x j score matrix. SDPA is the default
because it measured faster on an H100 for one head and in fp32
(experiments/fusion/README.md).

Fidelity (S55). Paper: attention as a cascade of extended einsums, computed in
one pass (online softmax) and mapped onto a spatial accelerator. archgram:
einsum cascades found in derivations run as one fused one-pass attention call.
Differs: no accelerator mapping (no such target here).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from archgram.compiler.modules import Branch
from archgram.compiler.passes import register_pass
from archgram.compiler.passes.attention import AttentionMatch, HeadsMatch, find_fusions
from archgram.errors import CompileError
from archgram.grammar.derivation import BranchNode, Derivation, Node, RuleNode
from archgram.registry import unknown

#: How FusedAttention computes: "sdpa" = torch scaled_dot_product_attention;
#: "flash" = archgram's Triton kernel where dispatch supports it, else SDPA.
BACKENDS = ("sdpa", "flash")


def _as4d(t: torch.Tensor) -> torch.Tensor:
    """(B, H, N, D) view: a sequence gets one head, more batch axes are flattened."""
    if t.dim() == 4:
        return t
    return t.reshape((-1, 1) + tuple(t.shape[-2:])) if t.dim() > 2 else t.reshape((1, 1) + tuple(t.shape))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, backend: str = "sdpa") -> torch.Tensor:
    """softmax(scale * q k^T) v over the last two axes, any equal batch axes in front."""
    q4, k4, v4 = _as4d(q), _as4d(k), _as4d(v)
    out = None
    if backend == "flash":
        from archgram.kernels.flash.dispatch import attention

        out = attention(q4, k4, v4, scale=scale)
    if out is None:
        out = F.scaled_dot_product_attention(q4, k4, v4, scale=scale)
    return out.reshape(tuple(q.shape[:-1]) + (v.shape[-1],))


class FusedAttention(Branch):
    """An attention cascade of primitives, computed by one fused attention call."""

    def __init__(self, branch: Branch, match: AttentionMatch, prefix: list[nn.Module], scores: Branch,
                 backend: str = "sdpa"):
        nn.Module.__init__(self)
        self.split, self.arms, self.merge = branch.split, branch.arms, branch.merge
        # Plain tuples: these modules are registered already, inside self.arms.
        self._prefix, self._scores = tuple(prefix), (scores,)
        self.p_arm, self.transposed = match.p_arm, match.transposed
        self.scale, self.out_scale = match.scale, match.out_scale
        self.backend = backend
        self.where = match.path

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Q (.., i, d), K (.., j, d), V (.., j, e) from the original arms."""
        parts = self.split(x)
        h = parts[self.p_arm]
        for module in self._prefix:
            h = module(h)
        scores = self._scores[0]
        a, b = scores.split(h)
        q, kt = scores.arms[0](a), scores.arms[1](b)
        v = self.arms[1 - self.p_arm](parts[1 - self.p_arm])
        return q, kt.transpose(-1, -2), (v.transpose(-1, -2) if self.transposed else v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = attend(*self.qkv(x), self.scale, self.backend)
        if self.transposed:
            out = out.transpose(-1, -2)
        return out * self.out_scale if self.out_scale != 1.0 else out

    def extra_repr(self) -> str:
        t = ", transposed" if self.transposed else ""
        return f"fused attention at {self.where}: scale={self.scale:.4g}{t}, backend={self.backend}"


class FusedHeads(Branch):
    """Multi-head attention written as n attention arms concatenated on the last
    axis: each head's Q, K, V come from its own arms, then one fused call over a
    head axis replaces n attention calls and the concat."""

    def __init__(self, branch: Branch, match: HeadsMatch, heads: list[FusedAttention], backend: str = "sdpa"):
        nn.Module.__init__(self)
        self.split, self.arms, self.merge = branch.split, branch.arms, branch.merge
        self._heads = tuple(heads)  # registered already, inside self.arms
        self.scale, self.out_scale = match.heads[0].scale, match.heads[0].out_scale
        self.backend = backend
        self.where = match.path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qs, ks, vs = zip(*(head.qkv(part) for head, part in zip(self._heads, self.split(x), strict=True)))
        out = attend(torch.stack(qs, -3), torch.stack(ks, -3), torch.stack(vs, -3), self.scale, self.backend)
        out = out.movedim(-3, -2).flatten(-2)  # (.., h, i, e) -> (.., i, h*e): the concat
        return out * self.out_scale if self.out_scale != 1.0 else out

    def extra_repr(self) -> str:
        return f"fused {len(self._heads)}-head attention at {self.where}: scale={self.scale:.4g}, backend={self.backend}"


def _pair(node: Node, module: nn.Module, path: str, parent: nn.Module, key: str, table: dict) -> None:
    """path -> (node, module, parent, key): the compiled module of every derivation node."""
    table[path] = (node, module, parent, key)
    if isinstance(node, RuleNode):
        if len(module) != len(node.children):
            raise CompileError(f"{path}: module tree does not follow the derivation (<{node.symbol}>)")
        for i, child in enumerate(node.children):
            _pair(child, module[i], f"{path}/{i}", module, str(i), table)
    elif isinstance(node, BranchNode):
        if not isinstance(module, Branch) or len(module.arms) != len(node.arms):
            raise CompileError(f"{path}: module tree does not follow the derivation (branch)")
        for i, arm in enumerate(node.arms):
            _pair(arm, module.arms[i], f"{path}/arm{i}", module.arms, str(i), table)


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise CompileError(unknown("attention backend", backend, BACKENDS))


@register_pass("fuse_attention", find=find_fusions, refs=("S55",))
def fuse_attention(network: nn.Module, derivation: Derivation,
                   backend: str = "sdpa") -> list[AttentionMatch | HeadsMatch]:
    """Replace every attention cascade of primitives by one fused attention call."""
    _check_backend(backend)
    matches = find_fusions(derivation)
    table: dict = {}
    _pair(derivation.root, network.body, "root", network, "body", table)
    for m in matches:  # innermost first: an outer match picks up already fused inner modules
        node, branch, parent, key = table[m.path]
        if isinstance(m, HeadsMatch):
            fused = FusedHeads(branch, m, [table[h.path][1] for h in m.heads], backend)
        else:
            prefix = [table[p][1] for p in m.prefix_paths]
            fused = FusedAttention(branch, m, prefix, table[m.scores_path][1], backend)
        setattr(parent, key, fused)
        table[m.path] = (node, fused, parent, key)
    return matches


def set_backend(network: nn.Module, backend: str) -> int:
    """Switch every FusedAttention in ``network`` to ``backend``; how many there are."""
    _check_backend(backend)
    fused = [m for m in network.modules() if isinstance(m, (FusedAttention, FusedHeads))]
    for m in fused:
        m.backend = backend
    return len(fused)
