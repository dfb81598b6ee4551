"""Why a call ran PyTorch instead of a kernel, so a model that trains at eager
speed says so.

Every dispatcher that answers None ("use the PyTorch path") first calls
``record(family, reason)``. The recorder counts each distinct (family, reason);
``archgram bench`` reports the counts of its run, and with
``ARCHGRAM_KERNELS=explain`` each distinct reason is also logged once (logger
``archgram.kernels``, level WARNING, so it shows without logging set up).

``ARCHGRAM_KERNELS``: ``on`` (default), ``off`` (always PyTorch) or ``explain``
(on, and log each fallback reason once).
"""
from __future__ import annotations

import logging
import os
from collections import Counter

log = logging.getLogger("archgram.kernels")

OFF = ("off", "0", "false", "no")
_counts: Counter[tuple[str, str]] = Counter()
_logged: set[tuple[str, str]] = set()


def mode() -> str:
    return os.environ.get("ARCHGRAM_KERNELS", "on").strip().lower()


def enabled() -> bool:
    """Whether kernels may run at all (``ARCHGRAM_KERNELS`` not off)."""
    return mode() not in OFF


def record(family: str, reason: str) -> None:
    """Count one fallback of ``family`` (flash, linear, decode) for ``reason``;
    under ``ARCHGRAM_KERNELS=explain`` log the first of each reason."""
    key = (family, reason)
    _counts[key] += 1
    if key not in _logged and mode() == "explain":
        _logged.add(key)
        log.warning("archgram kernels: %s ran PyTorch instead: %s", family, reason)


def counts() -> list[dict]:
    """Every fallback since the last ``reset``: [{family, reason, calls}], most calls first."""
    return [{"family": f, "reason": r, "calls": n} for (f, r), n in _counts.most_common()]


def reset() -> None:
    """Forget the counts (and which reasons were logged)."""
    _counts.clear()
    _logged.clear()


def table(rows: list[dict]) -> str:
    """Markdown lines listing fallbacks, or a line saying there were none."""
    if not rows:
        return "Kernel fallbacks: none (every kernel-eligible call ran a kernel)."
    lines = ["Kernel fallbacks (calls that ran PyTorch instead of a kernel):", "",
             "| family | reason | calls |", "|---|---|---|"]
    lines += [f"| {r['family']} | {r['reason']} | {r['calls']} |" for r in rows]
    return "\n".join(lines)
