"""Long-context suite (catalog S14 long-context benchmark, S46 unified view of
long-sequence models): every token mixer the registries hold, built as the
real archgram op inside one template

    y = x + mixer(LayerNorm(x)),   x (B, N, width)

with the same width and heads, timed (forward, no grad) over lengths and masks.

Candidates come from the registries, never from a list here: one attention row
per registered score (pattern full) and per registered pattern (score
softmax), and one row per registered unary op of a token-mixing family. A
candidate is skipped, with the reason in its cell, when its shape rule refuses
(N, width) or the mask, when it has required arguments, when its FLOPs grow
quadratically (measured from its own ``flops`` rule at N and 2N) past
``quadratic_cap``, or when it runs out of memory.

Fidelity (S46): the paper's unified template and length sweep is this suite;
its model zoo is whatever the registries hold.

Catalog S14, read against the paper. Paper: one benchmark for long-context
attention on two axes: single-device kernels (dense and sparse attention
implementations) over mask patterns (full, causal, document/varlen, sparse) and
lengths, and context parallelism over devices (ring attention, all-to-all /
Ulysses, and hybrids such as USP) for distributed training.
archgram: this suite (every registered score and pattern, plus token mixers,
over lengths and the full/causal masks, skipping with reasons; the
``document(docs, seed)`` pattern is the packed varlen mask), the kernels suite
(our Triton kernels against torch SDPA's flash backend and FlexAttention), and
``archgram.distributed`` (ring, Ulysses and the USP hybrid, contiguous and
zig-zag shards, checked against single-process attention).
Differs: the kernel list is what torch ships plus ours (no cuDNN or
FlashAttention-3 builds); the document mask runs as a dense mask (no varlen
kernel) with lengths drawn per op, not per batch; LoongTrain's double ring is
absent (a schedule of the same ring maths); sparse patterns appear as their own
rows rather than as masks of one kernel.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from archgram.bench.base import BenchConfig, Suite, is_oom, measure, register_suite
from archgram.errors import ArchgramError

#: Op families whose unary (B, N, D) -> (B, N, D) ops mix tokens.
MIXER_FAMILIES = ("attention", "mixers", "memory", "moe", "conv")
MASKS = ("full", "causal")
MAX_PARAMS = 200_000_000  # mixers whose weights grow with N (MLP-Mixer) stop here
#: Parameters for the patterns that need them (the shipped attention grammar's values);
#: patterns not named here are built with none.
PATTERN_PARAMS = {
    "window": {"size": 257}, "neighborhood": {"size": 257}, "block_sparse": {"block": 64, "pattern": "bigbird"},
    "strip": {"width": 2}, "halo": {"block": 2, "halo": 1}, "circular": {"radius": 2},
    "shifted_sparse": {"group": 8, "sinks": 1}, "landmark": {"_0": 64, "_1": 2}, "token_select": {"_0": 256},
    "sparsifiner": {"_0": 64, "_1": 8}, "routing": {"_0": 4}, "combiner": {"_0": 64},
    "document": {"docs": 8}, "landmark_tokens": {"_0": 64, "_1": 2},
}


@dataclass
class Candidate:
    label: str
    op: str
    args: dict


class Template(nn.Module):
    """The one token-mixing block every mixer is measured in (pre-norm residual)."""

    def __init__(self, mixer: nn.Module, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mixer = mixer

    def forward(self, x):
        return x + self.mixer(self.norm(x))


def candidates(heads: int) -> list[Candidate]:
    from archgram.ops.attention import PATTERNS, SCORES
    from archgram.ops.registry import all_ops

    out = [Candidate(f"attention score={s}", "attention", {"heads": heads, "score": {"name": s}}) for s in SCORES.names()]
    out += [Candidate(f"attention pattern={p}", "attention", {"heads": heads, "pattern": {"name": p, **PATTERN_PARAMS.get(p, {})}})
            for p in PATTERNS.names() if p != "full"]
    for spec in all_ops():
        if spec.family in MIXER_FAMILIES and spec.kind == "unary" and spec.name != "attention":
            out.append(Candidate(spec.name, spec.name, {"heads": heads} if "heads" in spec.args else {}))
    return out


def _mask_args(spec, args: dict, mask: str) -> dict:
    """The candidate's arguments under ``mask``; ArchgramError if it has no causal form."""
    if mask == "full":
        return args
    if "causal" not in spec.args:
        raise ArchgramError("no causal form (the op has no causal argument)")
    return {**args, "causal": True}


def _flops(spec, shape, bound) -> int:
    out = spec.cls.output_shape(shape, **bound)
    return int(spec.cls.flops(shape, out, spec.param_count(shape, bound), **bound))


def plan(cand: Candidate, mask: str, n: int, cfg: BenchConfig) -> tuple[object, dict, tuple, int]:
    """(spec, bound args, input shape, forward FLOPs) or ArchgramError with the skip reason."""
    from archgram.ops.registry import get_op

    spec = get_op(cand.op)
    required = [a for a, arg in spec.args.items() if arg.required and a not in cand.args]
    if required:
        raise ArchgramError(f"needs argument(s) {', '.join(required)}")
    args = _mask_args(spec, cand.args, mask)
    try:
        bound = spec.bind(args)
    except TypeError as exc:
        raise ArchgramError(str(exc)) from None
    shape = (cfg.batch(n), n, cfg.width)
    out = spec.cls.output_shape(shape, **bound)  # ShapeError says why not
    if tuple(out) != shape:
        raise ArchgramError(f"changes the shape to {tuple(out)}")
    params = spec.param_count(shape, bound)
    if params > MAX_PARAMS:
        raise ArchgramError(f"{params / 1e6:.0f}M parameters at this length")
    flops = _flops(spec, shape, bound)
    if n > cfg.quadratic_cap:  # FLOPs at 8k and 16k tokens: projections no longer hide the n^2 term
        if _flops(spec, (1, 16384, cfg.width), bound) > 3 * _flops(spec, (1, 8192, cfg.width), bound):
            raise ArchgramError(f"quadratic in N, past the cap {cfg.quadratic_cap}")
    return spec, bound, shape, flops


def run_one(cand: Candidate, mask: str, n: int, cfg: BenchConfig) -> dict:
    row = {"case": cand.label, "op": cand.op, "args": cand.args, "mask": mask, "n": n, "batch": cfg.batch(n)}
    try:
        spec, bound, shape, flops = plan(cand, mask, n, cfg)
    except ArchgramError as exc:
        return {**row, "status": "skip", "reason": str(exc)}
    except Exception as exc:  # a shape rule that crashes is a finding, not a crash of the run
        return {**row, "status": "error", "reason": f"shape rule: {type(exc).__name__}: {str(exc)[:100]}"}
    model = x = None
    try:
        torch.manual_seed(0)
        with torch.device(cfg.device):
            model = Template(spec.build(shape, bound), cfg.width)
        model = model.to(cfg.dtype).eval()
        x = torch.randn(shape, device=cfg.device, dtype=cfg.dtype)

        def fwd(model=model, x=x):
            with torch.no_grad():
                return model(x)

        y = fwd()
        if not torch.isfinite(y).all():
            return {**row, "status": "error", "reason": "non-finite output"}
        m = measure(fwd, cfg)
        return {**row, "status": "ok", **m, "flops": flops, "tflops": flops / m["ms"] / 1e9 if m["ms"] else None}
    except Exception as exc:  # a failed case is a result, not a crash
        if is_oom(exc):
            return {**row, "status": "oom", "reason": "out of memory"}
        return {**row, "status": "error", "reason": f"{type(exc).__name__}: {str(exc)[:120]}"}
    finally:
        del model, x
        if cfg.device.type == "cuda":
            torch.cuda.empty_cache()


@register_suite
class LongContext(Suite):
    """Every registered token mixer in one template over lengths and masks."""

    name = "long-context"
    refs = ("S14", "S46")

    def rows(self, cfg: BenchConfig) -> Iterator[dict]:
        masks = cfg.extra.get("masks", MASKS)
        for cand in candidates(cfg.heads):
            for mask in masks:
                for n in cfg.lengths:
                    yield run_one(cand, mask, n, cfg)
