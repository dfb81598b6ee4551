"""`archgram bench`: time kernels and token mixers, write a markdown table, a
PNG plot and a JSON record (device, torch/triton versions, command).

    archgram bench --suite kernels --lengths 1k,4k,16k --dtype bf16 --out results/
    archgram bench --suite long-context --lengths 1k,4k,16k,64k --masks causal
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from archgram.bench.base import BenchConfig, BenchError, parse_dtype, parse_lengths
from archgram.cli.common import console, err


def bench_command(
    suite: Annotated[str, typer.Option("--suite", help="kernels | long-context")] = "kernels",
    lengths: Annotated[str, typer.Option("--lengths", help="Sequence lengths, e.g. 1k,4k,16k (k = 1024).")] = "1k,4k,16k",
    dtype: Annotated[str, typer.Option("--dtype", help="bf16 | fp16 | fp32")] = "bf16",
    out: Annotated[Path, typer.Option("--out", help="Folder for <suite>.md, .png and .json.")] = Path("bench-results"),
    device: Annotated[str, typer.Option("--device", help="auto (cuda if available), cuda or cpu.")] = "auto",
    width: Annotated[int, typer.Option("--width", min=1, help="Model width (channels).")] = 1024,
    heads: Annotated[int, typer.Option("--heads", min=1, help="Attention heads (head dim = width / heads).")] = 16,
    tokens: Annotated[int, typer.Option("--tokens", min=0, help="Batch x length per call (0: 32k on CUDA, max length on CPU).")] = 0,
    masks: Annotated[str, typer.Option("--masks", help="long-context: full,causal or one of them.")] = "full,causal",
    quadratic_cap: Annotated[str, typer.Option("--quadratic-cap", help="long-context: skip n x n mixers past this length.")] = "16k",
    quick: Annotated[bool, typer.Option("--quick", help="Shorter timing windows (one timed call on the CPU), for smoke runs.")] = False,
) -> None:
    """Benchmark our kernels against SDPA / FlexAttention / fla, or every token mixer over long contexts."""
    given = dict(locals())
    import torch

    from archgram.bench.runner import run

    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda: no CUDA device is available")
    if dev.type not in ("cuda", "cpu"):
        raise BenchError(f"--device: {device!r} is not auto, cuda or cpu")
    mask_list = tuple(m.strip() for m in masks.split(",") if m.strip())
    bad = [m for m in mask_list if m not in ("full", "causal")] or ([] if mask_list else ["(none)"])
    if bad:
        raise BenchError(f"--masks: unknown mask {bad[0]!r}; choose full, causal or full,causal")
    cfg = BenchConfig(
        lengths=parse_lengths(lengths), dtype=parse_dtype(dtype), device=dev, tokens=tokens, width=width, heads=heads,
        quadratic_cap=parse_lengths(quadratic_cap)[0], extra={"masks": mask_list},
    )
    if quick:
        cfg.warmup_ms, cfg.rep_ms, cfg.cpu_reps = 5.0, 20.0, 1
    from archgram.bench.base import get_suite

    get_suite(suite)  # unknown suite: a clear error before any work
    def show(row: dict) -> None:
        from archgram.bench.report import cell

        err.print(f"[dim]{escape(row['case'])} \\[{escape(row['mask'])}] N={row['n']}:[/] {escape(cell(row))}",
                      highlight=False, soft_wrap=True)

    rows, paths = run(suite, cfg, out, command=_command_line(given), on_row=show)
    ok = sum(r["status"] == "ok" for r in rows)
    from archgram.kernels import fallbacks

    err.print(escape(fallbacks.table(fallbacks.counts())), highlight=False, soft_wrap=True)
    console.print(f"{suite}: {ok}/{len(rows)} cells measured; wrote " + ", ".join(str(p) for p in paths.values()))


def _command_line(given: dict) -> str:
    """The invocation rebuilt from the options that differ from their defaults:
    sys.argv is not the command when the CLI runs in-process (tests, notebooks)."""
    import inspect

    parts = ["archgram", "bench"]
    for name, param in inspect.signature(bench_command).parameters.items():
        value = given[name]
        if value == param.default:
            continue
        flag = "--" + name.replace("_", "-")
        parts += [flag] if value is True else [flag, str(value)]
    return " ".join(parts)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench_command)
