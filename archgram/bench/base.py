"""The suite registry, the run configuration and the measuring helpers every
suite shares (timing, peak memory, environment)."""
from __future__ import annotations

import platform
import re
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from archgram.errors import ArchgramError
from archgram.registry import Registry, import_submodules, unknown

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
_LENGTH = re.compile(r"^(\d+)([kK]?)$")


class BenchError(ArchgramError):
    """Bad benchmark input: unknown suite, malformed length, unknown dtype."""


def parse_lengths(text: str) -> list[int]:
    """'1k,4k,16k' -> [1024, 4096, 16384]; plain integers are tokens."""
    out = []
    for item in (p.strip() for p in text.split(",")):
        m = _LENGTH.match(item)
        if not m or int(m.group(1)) == 0:
            raise BenchError(f"--lengths: {item!r} is not a positive length (write e.g. 512, 1k, 16k)")
        out.append(int(m.group(1)) * (1024 if m.group(2) else 1))
    return sorted(set(out))


def parse_dtype(text: str) -> torch.dtype:
    if text not in DTYPES:
        raise BenchError(f"--dtype: {unknown('dtype', text, DTYPES)}")
    return DTYPES[text]


@dataclass
class BenchConfig:
    lengths: list[int]
    dtype: torch.dtype
    device: torch.device
    tokens: int = 0  # batch * length per call (0: the suite's default)
    width: int = 512
    heads: int = 8
    quadratic_cap: int = 16384  # skip n x n mixers past this length
    warmup_ms: float = 25.0
    rep_ms: float = 100.0
    cpu_reps: int = 3  # timed calls on the CPU (median)
    extra: dict[str, Any] = field(default_factory=dict)

    def batch(self, n: int) -> int:
        tokens = self.tokens or (32768 if self.device.type == "cuda" else max(self.lengths))
        return max(1, tokens // n)


class Suite:
    """A named set of measurements; ``rows`` yields one dict per (case, length)."""

    name: ClassVar[str] = ""
    refs: ClassVar[tuple[str, ...]] = ()
    doc: ClassVar[str] = ""

    def rows(self, cfg: BenchConfig) -> Iterator[dict]:
        raise NotImplementedError


#: Every suite by name; the first lookup imports each module of archgram.bench
#: (a suite module registers itself with ``@register_suite``).
SUITES: Registry[type[Suite]] = Registry("suite", error=BenchError, loader=lambda: import_submodules("archgram.bench"))
register_suite = SUITES.decorator()


def get_suite(name: str) -> Suite:
    return SUITES.get(name)()


# ----------------------------------------------------------------- measuring
def measure(fn: Callable[[], Any], cfg: BenchConfig) -> dict:
    """{'ms': median milliseconds, 'peak_mib': peak memory of one call or None}."""
    if cfg.device.type == "cuda":
        import triton

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        ms = triton.testing.do_bench(fn, warmup=cfg.warmup_ms, rep=cfg.rep_ms, return_mode="median")
        return {"ms": float(ms), "peak_mib": float(peak)}
    fn()  # warm-up
    times = []
    for _ in range(cfg.cpu_reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"ms": statistics.median(times), "peak_mib": None}


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def environment(device: torch.device) -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(), "device_type": device.type}
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    if device.type == "cuda":
        env["device"] = torch.cuda.get_device_name(device)
    else:
        env["device"] = platform.processor() or platform.machine() or "cpu"
    return env
