"""Which attention-op configurations the flash kernels serve, and the kernel
keywords for each: registries from the op's score / pattern / position classes
to kernel arguments. A part missing from its registry (or a mapper returning
None) means the op runs its PyTorch path.

The op's softmax gives a query that sees no key uniform weights; the kernels
give zeros. Every pattern served here lets each query see itself, so no row is
ever empty (block-sparse layouts must include their diagonal).
"""
from __future__ import annotations

import torch

from archgram.kernels.fallbacks import record
from archgram.ops.attention import layouts, patterns, positions, scores

SCORES = {
    scores.Softmax: lambda s: {"score": "softmax"},
    scores.Sigmoid: lambda s: None if s.qk_norm else {"score": "sigmoid", "sigmoid_bias": s.bias},
    scores.SoftCap: lambda s: {"score": "softcap", "cap": s.cap},
    scores.SoftplusReweight: lambda s: {"score": "softplus", "power": s.power},
    scores.ClippedSoftmax: lambda s: {"score": "clipped", "gamma": s.gamma, "zeta": s.zeta},
}


def _block_sparse(p, n: int, grid, device):
    nb = -(-n // p.block)
    layout = p.layout(nb, device)
    if not bool(layout.diagonal().all()):
        return None  # a query block that sees no key block: the op's softmax differs
    return {"block_mask": layout, "block": (p.block, p.block)}


# (pattern, tokens, image grid (H, W) or None, device) -> kernel mask keywords
PATTERNS = {
    patterns.Full: lambda p, n, grid, device: {},
    patterns.Causal: lambda p, n, grid, device: {"causal": True},
    patterns.Window: lambda p, n, grid, device: {"window": p.size // 2 * p.dilation, "dilation": p.dilation},
    patterns.Neighborhood: lambda p, n, grid, device: {"neighborhood": p.size, "dilation": p.dilation},
    patterns.Neighborhood2D: lambda p, n, grid, device: {"neighborhood": p.size, "dilation": p.dilation,
                                                         "grid": (int(grid[0]), int(grid[1]))},
    patterns.BlockSparse: _block_sparse,
}

# positions applied before the kernel (rotations) or as its ALiBi / learned relative bias
POSITIONS = {
    positions.NoPosition: lambda p: {},
    positions.RoPE: lambda p: {},
    positions.ALiBi: lambda p: {"alibi_slopes": p.slopes()},
    positions.RoPEALiBi: lambda p: {"alibi_slopes": p.slopes()},
    positions.RelativeBias: lambda p: {"rel_bias": p.table},
}


def kernel_kwargs(op, n: int, device) -> dict | None:
    """Keywords for ``dispatch.attention`` serving this op, or None (the reason
    recorded: ``archgram.kernels.fallbacks``)."""
    parts = {"score": (SCORES, op.score), "pattern": (PATTERNS, op.pattern), "position": (POSITIONS, op.position)}
    for kind, (registry, part) in parts.items():
        if type(part) not in registry:
            record("flash", f"{kind} {type(part).__name__} has no kernel")
            return None
    mask = PATTERNS[type(op.pattern)](op.pattern, n, getattr(op, "grid", None), device)
    if mask is None:
        record("flash", f"pattern {type(op.pattern).__name__}: a query block sees no key block")
        return None
    score_kw = SCORES[type(op.score)](op.score)
    if score_kw is None:
        record("flash", f"score {type(op.score).__name__}: this configuration has no kernel (sigmoid's QK-norm)")
        return None
    kw = {**score_kw, **mask, **POSITIONS[type(op.position)](op.position), "scale": op.scale}
    if op.causal:
        kw["causal"] = True
    return kw


def shared_kv(layout, kv: torch.Tensor) -> torch.Tensor:
    """Undo the layout's GQA repeat (a strided view, no copy), so the kernel reads
    each key/value head once and sums its gradient over the group."""
    if type(layout).expand is layouts.Layout.expand and layout.kv != layout.heads:
        return kv[:, :: layout.heads // layout.kv]
    return kv
