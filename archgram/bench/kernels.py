"""Kernels suite: our Triton kernels against the PyTorch / library baselines in
one process, causal, over lengths (batch x N = a fixed token count).

  prefill  flash (ours, forward; forward+backward once
           ``archgram.kernels.flash.flash_attention`` exists), torch SDPA
           (flash backend), FlexAttention (torch.compile'd, causal block mask);
  linear   chunked linear attention (ours, per-head decay) vs
           flash-linear-attention's ``chunk_simple_gla`` (the same math: a
           constant log-gate per head), where ``fla`` imports;
  decode   split-KV decode (ours, GQA 4) vs SDPA, one query token over a cache of N.

Each case states why it is skipped (no CUDA, library missing). Errors are
results. ``relerr`` compares our output with the baseline named in ``vs``.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from archgram.bench.base import BenchConfig, Suite, is_oom, measure, register_suite

CHUNK = 64  # the linear kernel's chunk, for its FLOP count
DECODE_GROUP = 4


def _flex():
    """The compiled FlexAttention (one compile per length: raise dynamo's limit,
    else later lengths silently fall back to the unfused eager path)."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    torch._dynamo.config.recompile_limit = 256
    torch._dynamo.config.cache_size_limit = 256
    return torch.compile(flex_attention, dynamic=False), create_block_mask


def _flash_with_backward():
    try:
        return importlib.import_module("archgram.kernels.flash").flash_attention
    except (ImportError, AttributeError):
        return None


def _fla():
    try:
        return importlib.import_module("fla.ops.simple_gla").chunk_simple_gla
    except Exception:  # not installed, or its import fails on this stack
        return None


def _fwd_bwd(fn, inputs):
    def run():
        out = fn()
        out.backward(torch.ones_like(out))
        for t in inputs:
            t.grad = None
    return run


class Case:
    """One timed thing: a name, a group (mask column), a FLOP count and a callable."""

    def __init__(self, name: str, mask: str, make: Callable[[int, BenchConfig], tuple[Callable, float]],
                 needs_cuda: bool = True, missing: str | None = None, vs: str | None = None):
        self.name, self.mask, self.make, self.needs_cuda, self.missing, self.vs = name, mask, make, needs_cuda, missing, vs


def graphed(fn):
    """fn captured once in a CUDA graph; timing its replay measures the GPU work
    without Python's launch cost (what a serving loop that graphs its decode
    step pays). Only for forward-only calls."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()  # compile and warm up outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def _graph_case(make, n, cfg):
    fn, flops = make(n, cfg)
    return graphed(fn), flops


def _qkv(b, h, n, d, cfg, grad=False, hkv=None):
    g = torch.Generator(device=cfg.device).manual_seed(n)
    q = torch.randn(b, h, n, d, device=cfg.device, dtype=cfg.dtype, generator=g)
    k, v = (torch.randn(b, hkv or h, n, d, device=cfg.device, dtype=cfg.dtype, generator=g) for _ in range(2))
    return [t.requires_grad_(grad) for t in (q, k, v)]


def _softmax_flops(b, h, n, d):
    return 4 * b * h * d * n * (n + 1) / 2


def _linear_flops(b, h, n, d):
    return b * h * n * (4 * CHUNK * d + 4 * d * d)


def _dims(cfg: BenchConfig) -> tuple[int, int]:
    """(heads, head dim) of every case."""
    return cfg.heads, cfg.width // cfg.heads


# Each maker builds one case's inputs for length n and returns (callable, FLOPs).
# ------------------------------------------------------------ softmax prefill
def flash_fwd(n, cfg):
    from archgram.kernels.flash.forward import flash_forward

    h, d = _dims(cfg)
    q, k, v = _qkv(cfg.batch(n), h, n, d, cfg)
    return (lambda: flash_forward(q, k, v, causal=True)[0]), _softmax_flops(cfg.batch(n), h, n, d)


def flash_fwd_bwd(n, cfg):
    fa = _flash_with_backward()
    h, d = _dims(cfg)
    qkv = _qkv(cfg.batch(n), h, n, d, cfg, grad=True)
    return _fwd_bwd(lambda: fa(*qkv, causal=True), qkv), 3.5 * _softmax_flops(cfg.batch(n), h, n, d)


def sdpa(n, cfg, grad=False):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    h, d = _dims(cfg)
    qkv = _qkv(cfg.batch(n), h, n, d, cfg, grad=grad)
    backends = [SDPBackend.FLASH_ATTENTION] if cfg.device.type == "cuda" else [SDPBackend.MATH]

    def fn():
        with sdpa_kernel(backends):
            return F.scaled_dot_product_attention(*qkv, is_causal=True)
    flops = _softmax_flops(cfg.batch(n), h, n, d)
    return (_fwd_bwd(fn, qkv), 3.5 * flops) if grad else (fn, flops)


def flex(n, cfg, grad=False):
    compiled, block_mask = _flex()
    h, d = _dims(cfg)
    qkv = _qkv(cfg.batch(n), h, n, d, cfg, grad=grad)
    bm = block_mask(lambda b_, h_, i, j: i >= j, None, None, n, n, device=cfg.device)

    def fn():
        return compiled(*qkv, block_mask=bm)
    flops = _softmax_flops(cfg.batch(n), h, n, d)
    return (_fwd_bwd(fn, qkv), 3.5 * flops) if grad else (fn, flops)


# ------------------------------------------------------- linear (decayed)
def _log_decays(h: int) -> torch.Tensor:
    """RetNet-style per-head log decays, the same for ours and fla."""
    return torch.log(1 - torch.exp2(-5.0 - torch.arange(h, dtype=torch.float32)))


def linear(n, cfg, grad=False):
    from archgram.kernels.linear.chunk import linear_attention

    h, d = _dims(cfg)
    q, k, v = _qkv(cfg.batch(n), h, n, d, cfg, grad=grad)
    ld = _log_decays(h).to(cfg.device)
    scale = d ** -0.5

    def fn():
        return linear_attention(q, k, v, log_decay=ld, scale=scale)
    flops = _linear_flops(cfg.batch(n), h, n, d)
    return (_fwd_bwd(fn, [q, k, v]), 4 * flops) if grad else (fn, flops)


def fla(n, cfg, grad=False):
    gla = _fla()
    h, d = _dims(cfg)
    b = cfg.batch(n)
    q, k, v = (t.transpose(1, 2).contiguous().requires_grad_(grad) for t in _qkv(b, h, n, d, cfg))
    g = _log_decays(h).to(cfg.device).view(1, 1, h).expand(b, n, h).contiguous()

    def fn():
        o = gla(q, k, v, g=g, scale=d ** -0.5)
        o = o[0] if isinstance(o, tuple) else o
        return o.transpose(1, 2)
    flops = _linear_flops(b, h, n, d)
    return (_fwd_bwd(fn, [q, k, v]), 4 * flops) if grad else (fn, flops)


# ---------------------------------------------------------------- decode
def decode(n, cfg):
    from archgram.kernels.decode.split import decode_attention

    h, d = _dims(cfg)
    b = cfg.batch(n)
    q = _qkv(b, h, 1, d, cfg)[0]
    _, k, v = _qkv(b, h // DECODE_GROUP, n, d, cfg)
    lengths = torch.full((b,), n, device=cfg.device, dtype=torch.int32)
    return (lambda: decode_attention(q, k, v, lengths)), 4 * b * h * n * d


def sdpa_decode(n, cfg):
    h, d = _dims(cfg)
    b = cfg.batch(n)
    q = _qkv(b, h, 1, d, cfg)[0]
    _, k, v = _qkv(b, h // DECODE_GROUP, n, d, cfg)
    return (lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True)), 4 * b * h * n * d


def cases(cfg: BenchConfig) -> list[Case]:
    """The suite's cases in row order, each baseline before the case compared with it."""
    fla_missing = None if _fla() is not None else "flash-linear-attention (fla) not importable"
    flash_missing = None if _flash_with_backward() else "archgram.kernels.flash.flash_attention not there yet"
    return [
        Case("sdpa-flash fwd", "causal", sdpa, needs_cuda=False),
        Case("flash (ours) fwd", "causal", flash_fwd, vs="sdpa-flash fwd"),
        Case("flex fwd", "causal", flex, vs="sdpa-flash fwd"),
        Case("sdpa-flash fwd+bwd", "causal", lambda n, c: sdpa(n, c, True), needs_cuda=False),
        Case("flash (ours) fwd+bwd", "causal", flash_fwd_bwd, missing=flash_missing),
        Case("flex fwd+bwd", "causal", lambda n, c: flex(n, c, True)),
        Case("fla simple_gla fwd", "causal, decay", fla, missing=fla_missing),
        Case("linear (ours) fwd", "causal, decay", linear, vs="fla simple_gla fwd"),
        Case("fla simple_gla fwd+bwd", "causal, decay", lambda n, c: fla(n, c, True), missing=fla_missing),
        Case("linear (ours) fwd+bwd", "causal, decay", lambda n, c: linear(n, c, True)),
        Case("sdpa decode", "decode 1 token, GQA 4", sdpa_decode, needs_cuda=False),
        Case("split-KV decode (ours)", "decode 1 token, GQA 4", decode, vs="sdpa decode"),
        Case("sdpa decode, graphed", "decode 1 token, GQA 4", lambda n, c: _graph_case(sdpa_decode, n, c)),
        Case("split-KV decode (ours), graphed", "decode 1 token, GQA 4", lambda n, c: _graph_case(decode, n, c),
             vs="sdpa decode, graphed"),
    ]


def _relerr(a, b) -> float | None:
    if a is None or b is None or a.shape != b.shape:
        return None
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@register_suite
class Kernels(Suite):
    """Our Triton kernels vs SDPA, FlexAttention and fla, same process."""

    name = "kernels"

    def rows(self, cfg: BenchConfig) -> Iterator[dict]:
        if cfg.width % cfg.heads or (cfg.width // cfg.heads) not in (16, 32, 64, 128):
            from archgram.bench.base import BenchError

            raise BenchError(f"kernels suite: width / heads = {cfg.width}/{cfg.heads} must be a head dim of 16, 32, 64 or 128")
        for n in cfg.lengths:
            outputs: dict[str, torch.Tensor] = {}
            for case in cases(cfg):
                row = {"case": case.name, "mask": case.mask, "n": n, "batch": cfg.batch(n)}
                if case.needs_cuda and cfg.device.type != "cuda":
                    yield {**row, "status": "skip", "reason": "needs CUDA"}
                    continue
                if case.missing:
                    yield {**row, "status": "skip", "reason": case.missing}
                    continue
                yield self._run(case, n, cfg, row, outputs)
                if cfg.device.type == "cuda":
                    torch.cuda.empty_cache()

    @staticmethod
    def _run(case: Case, n: int, cfg: BenchConfig, row: dict, outputs: dict) -> dict:
        try:
            fn, flops = case.make(n, cfg)
            first = fn()
            if isinstance(first, torch.Tensor):
                outputs[case.name] = first.detach()
                if not torch.isfinite(first).all():
                    return {**row, "status": "error", "reason": "non-finite output"}
            m = measure(fn, cfg)
            res = {**row, "status": "ok", **m, "flops": flops, "tflops": flops / m["ms"] / 1e9 if m["ms"] else None}
            if case.vs:
                res["vs"] = case.vs
                res["relerr"] = _relerr(outputs.get(case.name), outputs.get(case.vs))
            return res
        except Exception as exc:  # a failed case is a result
            if is_oom(exc):
                return {**row, "status": "oom", "reason": "out of memory"}
            return {**row, "status": "error", "reason": f"{type(exc).__name__}: {str(exc)[:150]}"}

