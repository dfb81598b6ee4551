"""Host-side choices every kernel family makes the same way when it launches:
whether Triton runs interpreted on the CPU, block sizes rounded to powers of
two, the device's SM count, the matmul precision and the fast-approximation
switch for an input dtype."""
from __future__ import annotations

import functools
import os

import torch
import triton


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def pow2(n: int, low: int = 16) -> int:
    """n rounded up to a power of two, at least ``low`` (tl.dot's minimum)."""
    return max(low, triton.next_power_of_2(n))


@functools.cache
def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device; 4 stands in for the CPU interpreter."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot's input precision: exact fp32 products for fp32 inputs."""
    return "ieee" if dtype == torch.float32 else "tf32"


def fast_approx(dtype: torch.dtype) -> bool:
    """Single-instruction tanh / lg2 approximations (~2^-11 / 2^-22 error) for
    half-precision inputs on a GPU; exact formulas for fp32 and the interpreter."""
    return dtype != torch.float32 and not interpreting()


_FITTING: dict = {}


def launch_fitting(key, cfg, shrink, run):
    """``run(cfg)``, stepping ``cfg`` down through ``shrink`` while the compiled
    kernel needs more shared memory than the GPU has (Triton's OutOfResources);
    the config that fits is remembered under ``key`` so later calls start there.
    The tile tables are tuned for 2-byte inputs on one GPU; this keeps a larger
    dtype or a smaller GPU working (more slowly) instead of failing."""
    from triton.runtime.errors import OutOfResources

    start = cfg
    cfg = _FITTING.get((key, start), start)
    while True:
        try:
            out = run(cfg)
        except OutOfResources:
            cfg = shrink(cfg)
            if cfg is None:
                raise
            continue
        _FITTING[(key, start)] = cfg
        return out
