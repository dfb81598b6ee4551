"""Does a grammar produce networks that work? Sample N architectures, compile
each and run one forward pass, and count what got how far, with timings.

``archgram check`` prints this; tests and notebooks call it directly::

    report = check_grammar(archgram.load_grammar("einspace"), (8, 3, 32, 32), n=20)
    report["share"]        # the share of samples that sampled, compiled and ran
    report["failures"]     # [{"index", "seed", "stage", "error"}, ...]

A failed sample is a result, not an exception: its stage (sample, compile or
run) and message are recorded and the check goes on, except that it gives up
after ``GIVE_UP_AFTER`` failures in a row when nothing has sampled at all (the
grammar almost surely cannot take the input shape: say so quickly).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from archgram.compiler.build import compile
from archgram.errors import ArchgramError
from archgram.grammar.samples import GIVE_UP_AFTER, resolve_limits
from archgram.grammar.summary import rules_summary
from archgram.shapes import fmt as shape_text


@dataclass
class _Tally:
    """What N samples came to: how many reached each stage, and how fast."""

    counts: dict[str, int] = field(default_factory=lambda: {"sampled": 0, "compiled": 0, "ran": 0})
    stats: dict[str, int] = field(default_factory=lambda: {"rejections": 0, "restarts": 0, "steps": 0})
    seconds: dict[str, float] = field(default_factory=lambda: {"sample": 0.0, "compile": 0.0, "run": 0.0})
    failures: list[dict[str, Any]] = field(default_factory=list)
    nonfinite: int = 0
    hashes: set[str] = field(default_factory=set)

    @contextmanager
    def timed(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - t0


def check_grammar(grammar, input_shape, n: int = 50, seed: int = 0, limits: Mapping[str, float] | None = None,
                  device="cpu", on_progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Lint ``grammar``, then sample (sample i from seed ``seed + i``), compile and
    run ``n`` architectures on ``input_shape`` under the grammar's limits with
    ``limits`` overrides ({"params": 1e6}). Returns a JSON-ready report whose
    ``ok`` says the lint is clean and every sample ran; ``on_progress(done)`` is
    called after each sample."""
    shape, dev = tuple(input_shape), torch.device(device)
    lim, overrides = resolve_limits(grammar, limits)
    report = grammar.lint()
    tally = _Tally()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dev)
    stopped = None
    for i in range(n):
        _check_one(grammar, shape, lim, dev, x, i, seed + i, tally)
        if on_progress is not None:
            on_progress(i + 1)
        if tally.counts["sampled"] == 0 and len(tally.failures) >= GIVE_UP_AFTER:
            stopped = i + 1
            break
    result = {
        "grammar": {
            "name": grammar.name, "path": grammar.root_file, "files": grammar.files, "sha256": grammar.sha256,
            "start": grammar.start, "rules": len(grammar.rules), "productions": report.productions,
            "warnings": list(grammar.warnings),
        },
        "input_shape": list(shape),
        "rules": rules_summary(grammar),
        "lint": report.to_dict(),
        "limits": asdict(lim),
        "limit_overrides": overrides,
        "samples": _samples_summary(tally, n, seed, dev, stopped),
        "share": tally.counts["ran"] / n if n else 1.0,
        "failures": tally.failures,
    }
    result["ok"] = report.ok and not tally.failures and not (n > 0 and tally.counts["sampled"] == 0)
    return result


def _check_one(grammar, shape, limits, dev, x, index: int, seed: int, tally: _Tally) -> None:
    """Sample, compile and run one architecture; a failure is recorded with its stage."""
    stage = "sample"
    try:
        with tally.timed("sample"):
            d = grammar.sample(shape, seed=seed, limits=limits)
        tally.counts["sampled"] += 1
        tally.hashes.add(d.hash())
        for k in tally.stats:
            tally.stats[k] += int(d.stats.get(k, 0))
        stage = "compile"
        with tally.timed("compile"):
            torch.manual_seed(seed)
            model = compile(d).to(dev).eval()
        tally.counts["compiled"] += 1
        stage = "run"
        with tally.timed("run"), torch.no_grad():
            y = model(x)
            if dev.type == "cuda":
                torch.cuda.synchronize()
        if tuple(y.shape) != tuple(d.output_shape):
            raise ArchgramError(f"output shape {shape_text(y.shape)} differs from the inferred {shape_text(d.output_shape)}")
        tally.nonfinite += int(not bool(torch.isfinite(y).all()))
        tally.counts["ran"] += 1
    except Exception as exc:  # a failed sample is a result, not a crash
        msg = str(exc) if isinstance(exc, ArchgramError) else f"{type(exc).__name__}: {exc}"
        tally.failures.append({"index": index, "seed": seed, "stage": stage, "error": msg})


def _samples_summary(tally: _Tally, n: int, seed: int, dev, stopped: int | None) -> dict[str, Any]:
    counts, stats, seconds = tally.counts, tally.stats, tally.seconds
    tried = stats["rejections"] + stats["steps"]

    def share(k: str) -> float:
        return counts[k] / n if n else 1.0

    return {
        "n": n,
        "seed": seed,
        "device": str(dev),
        **counts,
        "unique": len(tally.hashes),
        "share": {"sample": share("sampled"), "compile": share("compiled"), "run": share("ran")},
        **stats,
        "rejection_rate": stats["rejections"] / tried if tried else 0.0,
        "rejections_per_sample": stats["rejections"] / counts["sampled"] if counts["sampled"] else None,
        "samples_per_s": counts["sampled"] / seconds["sample"] if seconds["sample"] > 0 else None,
        "seconds": seconds,
        "nonfinite_outputs": tally.nonfinite,
        "stopped_after": stopped,
    }
