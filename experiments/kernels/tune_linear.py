"""Pick the chunked linear-attention kernel's tile config per key dim on this GPU.

bf16, 16 x 4096 tokens, 16 heads, per-head decay (the bench_linear.py case),
forward + backward (one config serves the forward walk and the backward's three
walks). Prints the CONFIGS to paste into archgram/kernels/linear/chunk.py and
writes tune_linear.json under --out (bench_linear.py --configs reads it).

Compiling dominates, so compile first in parallel processes, then time in one:

  for i in 0 1 2 3 4 5 6 7; do python3 experiments/kernels/tune_linear.py --compile-only $i/8 & done; wait
  python3 experiments/kernels/tune_linear.py --out DIR

Some candidates die with "an illegal memory access" on triton 3.6 / Hopper
(H200, 2026-11-25: e.g. (64, 32, 4, 1) at D=64; the same tiles are exact under
the CPU interpreter), which poisons the process's CUDA context. So every
shard runs in a child process that stops at the first such error; the parent
records the candidate as failed and starts a fresh child after it.
"""
import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile

import torch
import triton

from archgram.kernels.linear import chunk

B, H, N = 16, 16, 4096
CANDIDATES = {
    64: list(itertools.product((32, 64, 128), (32, 64), (4,), (1, 2, 3))),  # 8 warps: 2x slower at D=64
    128: list(itertools.product((32, 64, 128), (32, 64, 128), (4, 8), (1, 2))),
}


def inputs(d):
    g = torch.Generator(device="cuda").manual_seed(d)
    q, k, v, do = (torch.randn(B, H, N, d, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(4))
    lam = torch.log(1 - torch.exp2(-5.0 - torch.arange(H, dtype=torch.float32, device="cuda")))
    return [t.requires_grad_(True) for t in (q, k, v)], do, lam


def run(d, data):
    (q, k, v), do, lam = data
    return lambda: torch.autograd.grad(chunk.linear_attention(q, k, v, log_decay=lam, scale=d ** -0.5), (q, k, v), do)


def worker(todo, timed, sink):
    """Run (and if ``timed`` time) each candidate, one JSON line each to ``sink``;
    exit 3 after a CUDA error (the context is unusable from then on)."""
    base = dict(chunk.CONFIGS)
    data = {}
    for d, cfg in todo:
        chunk.CONFIGS.update(base)
        chunk.CONFIGS[d] = cfg
        if d not in data:
            data[d] = inputs(d)
        fn = run(d, data[d])
        row = {"d": d, "config": cfg}
        try:
            fn()
            torch.cuda.synchronize()
            row["ms"] = triton.testing.do_bench(fn, warmup=10, rep=50, return_mode="median") if timed else None
        except Exception as e:  # out of shared memory, a bad tile: a result, not a crash
            row.update(ms=float("inf"), error=f"{type(e).__name__}: {str(e)[:100]}")
        sink.write(json.dumps(row) + "\n")
        sink.flush()
        print(json.dumps(row), flush=True)
        if "CUDA" in row.get("error", ""):
            sys.exit(3)


def isolated(todo, timed):
    """``worker`` over ``todo`` in child processes, a fresh one after each CUDA error."""
    rows = []
    while len(rows) < len(todo):
        with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as sink:
            subprocess.run([sys.executable, __file__, "--worker", json.dumps(todo[len(rows):]), "--sink", sink.name,
                            *(["--timed"] if timed else [])], check=False)
            got = [json.loads(line) for line in sink.read().splitlines()]
        if not got:  # the child died before its first result: count that candidate as failed
            d, cfg = todo[len(rows)]
            got = [{"d": d, "config": cfg, "ms": float("inf"), "error": "child died"}]
        rows += got
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--compile-only", default=None, help="SHARD/NSHARDS: run each candidate of this shard once")
    ap.add_argument("--out", default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--sink", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--timed", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        with open(args.sink, "a") as sink:
            worker([(d, tuple(c)) for d, c in json.loads(args.worker)], args.timed, sink)
        return
    base = dict(chunk.CONFIGS)
    todo = [(d, c) for d, cands in CANDIDATES.items() for c in cands]
    if args.compile_only:
        shard, n = map(int, args.compile_only.split("/"))
        isolated(todo[shard::n], timed=False)
        return
    rows = isolated(todo, timed=True)
    best = {d: tuple(min((r for r in rows if r["d"] == d), key=lambda r: r["ms"])["config"]) for d in CANDIDATES}
    for d, cfg in best.items():
        cur = next((r["ms"] for r in rows if r["d"] == d and tuple(r["config"]) == base[d]), float("nan"))
        new = next(r["ms"] for r in rows if r["d"] == d and tuple(r["config"]) == cfg)
        print(f"d={d}: best {cfg} {new:.3f} ms fwd+bwd, current {base[d]} {cur:.3f} ms")
    print("CONFIGS =", {**base, **best})
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "tune_linear.json"), "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
                       "shape": [B, H, N], "rows": rows, "CONFIGS": {str(d): c for d, c in best.items()}}, f, indent=1)


if __name__ == "__main__":
    main()
