"""Run one suite and write its report: the one entry point the CLI and the
experiment scripts share."""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from archgram.bench import report
from archgram.bench.base import BenchConfig, environment, get_suite
from archgram.kernels import fallbacks


def run(suite: str, cfg: BenchConfig, out: Path, command: str | None = None,
        on_row: Callable[[dict], None] | None = None) -> tuple[list[dict], dict[str, Path]]:
    """(rows, written paths). ``on_row`` sees each row as it is measured. The
    report lists every kernel fallback of the run (``archgram.kernels.fallbacks``):
    where a row ran PyTorch instead of a kernel, and why."""
    bench = get_suite(suite)
    fallbacks.reset()
    rows = []
    t0 = time.perf_counter()
    for row in bench.rows(cfg):
        rows.append(row)
        if on_row:
            on_row(row)
    meta = {
        "suite": suite,
        "refs": list(bench.refs),
        "command": command or " ".join(["archgram"] + sys.argv[1:]),
        "dtype": str(cfg.dtype).replace("torch.", ""),
        "lengths": cfg.lengths,
        "width": cfg.width,
        "heads": cfg.heads,
        "quadratic_cap": cfg.quadratic_cap,
        "seconds": round(time.perf_counter() - t0, 2),
        "environment": environment(cfg.device),
        "fallbacks": fallbacks.counts(),
    }
    return rows, report.write(rows, meta, out)
