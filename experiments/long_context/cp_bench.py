"""Context-parallel attention on several GPUs (issue 10, catalog row S14).

    torchrun --nproc_per_node=2 experiments/long_context/cp_bench.py --out $OUT

1. Correctness: ring and Ulysses attention (archgram/distributed) on sequence
   shards equal the one-GPU flash forward kernel on the whole sequence (bf16,
   causal and not, contiguous and zig-zag shards), at a length that fits.
2. Timing: causal forward at lengths whose materialised attention (fp32 logits
   and weights, what naive attention allocates) exceeds a per-GPU memory budget
   (--budget-gib; the naive one-GPU run is attempted and its OOM recorded),
   ring and Ulysses on all ranks vs the flash kernel on one GPU. Scaling
   efficiency = t(1 GPU) / (W * t(W GPUs)).

Writes cp_bench.md (tables) and cp_bench.json to --out (rank 0).

Import-light: the GPU image has torch + triton but no lark, and importing the
``archgram`` package pulls the grammar parser; so the package is registered as
a bare namespace here and only archgram.distributed / archgram.kernels / errors
are loaded from the source tree.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if "archgram" not in sys.modules:  # bare package: skip archgram/__init__ (grammar, lark)
    _pkg = types.ModuleType("archgram")
    _pkg.__path__ = [str(ROOT / "archgram")]
    sys.modules["archgram"] = _pkg

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from archgram.distributed.context_parallel import ring_attention, shard, ulysses_attention  # noqa: E402
from archgram.kernels.flash.forward import flash_forward  # noqa: E402

GIB = 1024 ** 3
STRATEGIES = {"ring": ring_attention, "ulysses": ulysses_attention}


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "cp_out")))
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--check-len", type=int, default=4096)
    p.add_argument("--lengths", default="32768,65536,131072,262144", help="timed lengths (comma-separated)")
    p.add_argument("--budget-gib", type=float, default=16.0, help="per-GPU memory budget for the attention map")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    return p.parse_args()


def naive_bytes(n: int, heads: int) -> int:
    """fp32 logits + fp32 weights of one batch element: what naive attention allocates."""
    return 2 * heads * n * n * 4


def naive(q, k, v, causal: bool):
    s = torch.matmul(q.float(), k.float().transpose(-1, -2)) * q.shape[-1] ** -0.5
    if causal:
        n = q.shape[2]
        s.masked_fill_(~torch.ones(n, n, dtype=torch.bool, device=q.device).tril(), float("-inf"))
    return torch.matmul(torch.softmax(s, -1), v.float()).to(q.dtype)


def inputs(n: int, heads: int, d: int, device, seed: int):
    g = torch.Generator(device=device).manual_seed(seed)
    return [torch.randn(1, heads, n, d, device=device, dtype=torch.bfloat16, generator=g) for _ in range(3)]


def timed(fn, warmup: int, reps: int, group=None) -> float:
    """Median seconds over ``reps`` (after ``warmup``); with a group, the slowest rank's."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if group is not None:
            dist.barrier()
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    med = torch.tensor([statistics.median(times)], device="cuda")
    if group is not None:
        dist.all_reduce(med, op=dist.ReduceOp.MAX)
    return float(med.item())


def check(args, rank: int, world: int, device) -> list[dict]:
    """Errors of ring / Ulysses vs the one-GPU kernel (and the kernel vs fp32 naive)."""
    n = args.check_len
    q, k, v = inputs(n, args.heads, args.head_dim, device, seed=0)  # same on every rank
    rows = []
    for causal in (False, True):
        ref = flash_forward(q, k, v, causal=causal)[0]
        exact = naive(q, k, v, causal)
        kernel_err = float((ref.float() - exact.float()).abs().max())
        for layout in ("contiguous", "zigzag"):
            for name, fn in STRATEGIES.items():
                with torch.no_grad():
                    out = fn(*(shard(t, rank, world, layout) for t in (q, k, v)), causal=causal, layout=layout)
                err = torch.tensor([float((out.float() - shard(ref, rank, world, layout).float()).abs().max())], device=device)
                dist.all_reduce(err, op=dist.ReduceOp.MAX)
                rows.append({"n": n, "causal": causal, "layout": layout, "strategy": name,
                             "max_abs_err_vs_kernel": float(err.item()), "kernel_vs_fp32_naive": kernel_err})
        del exact, ref
        torch.cuda.empty_cache()
    return rows


def bench(args, rank: int, world: int, device) -> list[dict]:
    rows = []
    for n in (int(x) for x in args.lengths.split(",")):
        q, k, v = inputs(n, args.heads, args.head_dim, device, seed=1)
        need = naive_bytes(n, args.heads)
        row = {"n": n, "naive_gib": need / GIB, "over_budget": need > args.budget_gib * GIB}
        if rank == 0:  # does naive attention even run on one GPU?
            try:
                torch.cuda.reset_peak_memory_stats()
                with torch.no_grad():
                    naive(q, k, v, True)
                torch.cuda.synchronize()
                row["naive_one_gpu"] = f"ran, peak {torch.cuda.max_memory_allocated() / GIB:.1f} GiB"
            except torch.OutOfMemoryError:
                row["naive_one_gpu"] = "OOM"
            torch.cuda.empty_cache()
        row["one_gpu_s"] = timed(lambda q=q, k=k, v=v: flash_forward(q, k, v, causal=True), args.warmup, args.reps)
        for layout in ("contiguous", "zigzag"):
            local = [shard(t, rank, world, layout).contiguous() for t in (q, k, v)]
            for name, fn in STRATEGIES.items():
                torch.cuda.reset_peak_memory_stats()
                with torch.no_grad():
                    t = timed(lambda fn=fn, local=local, layout=layout: fn(*local, causal=True, layout=layout),
                              args.warmup, args.reps, group=dist.group.WORLD)
                key = f"{name}_{layout}"
                row[f"{key}_s"] = t
                row[f"{key}_eff"] = row["one_gpu_s"] / (world * t)
                row[f"{key}_peak_gib"] = torch.cuda.max_memory_allocated() / GIB
            del local
        rows.append(row)
        torch.cuda.empty_cache()
        if rank == 0:
            print(json.dumps(row), flush=True)
    return rows


def markdown(args, world: int, checks: list[dict], rows: list[dict], seconds: float) -> str:
    dev = torch.cuda.get_device_name()
    lines = [f"# Context-parallel attention: {world} x {dev}", "",
             f"torch {torch.__version__}; bf16, batch 1, {args.heads} heads, head dim {args.head_dim}; "
             f"forward only; median of {args.reps} after {args.warmup} warm-up; total {seconds:.0f} s.", "",
             f"## Correctness at n = {args.check_len} (max |error| vs the one-GPU flash kernel, bf16 outputs)", "",
             "| causal | layout | strategy | max abs err vs kernel | kernel vs fp32 naive |", "|---|---|---|---|---|"]
    for c in checks:
        lines.append(f"| {c['causal']} | {c['layout']} | {c['strategy']} | {c['max_abs_err_vs_kernel']:.2e} | "
                     f"{c['kernel_vs_fp32_naive']:.2e} |")
    lines += ["", f"## Causal forward time (per-GPU budget for the attention map: {args.budget_gib:g} GiB)", "",
              "Efficiency = t(1 GPU kernel) / (W x t(W GPUs)); peak = rank-local peak allocated memory.", "",
              "| n | naive map GiB | naive on 1 GPU | 1 GPU kernel ms | ring ms (eff) | ring zig-zag ms (eff) | "
              "Ulysses ms (eff) | Ulysses zig-zag ms (eff) | peak GiB ring / Ulysses |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [f"{r[f'{k}_s'] * 1e3:.1f} ({r[f'{k}_eff']:.2f})" for k in
                 ("ring_contiguous", "ring_zigzag", "ulysses_contiguous", "ulysses_zigzag")]
        lines.append(f"| {r['n']} | {r['naive_gib']:.0f}{' (over budget)' if r['over_budget'] else ''} | "
                     f"{r.get('naive_one_gpu', '-')} | {r['one_gpu_s'] * 1e3:.1f} | " + " | ".join(cells) +
                     f" | {r['ring_contiguous_peak_gib']:.1f} / {r['ulysses_contiguous_peak_gib']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse()
    t0 = time.perf_counter()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank)
    dist.init_process_group("nccl", device_id=device)
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        checks = check(args, rank, world, device)
        if rank == 0:
            print(json.dumps(checks), flush=True)
        rows = bench(args, rank, world, device)
        if rank == 0:
            args.out.mkdir(parents=True, exist_ok=True)
            seconds = time.perf_counter() - t0
            (args.out / "cp_bench.json").write_text(json.dumps({"world": world, "checks": checks, "rows": rows,
                                                                "args": {k: str(v) for k, v in vars(args).items()}}, indent=2))
            text = markdown(args, world, checks, rows, seconds)
            (args.out / "cp_bench.md").write_text(text)
            print(text)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
