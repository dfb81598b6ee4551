"""``archgram bench``: timing suites, each a small class in a registry.

  kernels       our Triton kernels (flash, chunked linear, split-KV decode)
                against torch SDPA, FlexAttention and flash-linear-attention;
  long-context  every token mixer the registries hold, as the real archgram op
                inside one template (x -> norm -> mixer -> residual), over
                lengths and masks (catalog S14, S46).

A suite yields result rows; ``report`` turns them into a markdown table, a PNG
plot and a JSON file with the device, versions and command.
"""
from __future__ import annotations

from archgram.bench.base import SUITES, BenchConfig, BenchError, Suite, parse_lengths, register_suite

__all__ = ["SUITES", "BenchConfig", "BenchError", "Suite", "parse_lengths", "register_suite"]
