"""Pick the chunked linear-attention kernel's tile config per key dim on this GPU.

bf16, 16 x 4096 tokens, 16 heads, per-head decay (the bench_linear.py case),
forward + backward (one config serves the forward walk and the backward's three
walks). Prints the CONFIGS to paste into archgram/kernels/linear/chunk.py and
writes tune_linear.json under --out (bench_linear.py --configs reads it).

Compiling dominates, so compile first in parallel processes, then time in one:

  for i in 0 1 2 3 4 5 6 7; do python3 experiments/kernels/tune_linear.py --compile-only $i/8 & done; wait
  python3 experiments/kernels/tune_linear.py --out DIR
"""
import argparse
import itertools
import json
import os

import torch
import triton

from archgram.kernels.linear import chunk

B, H, N = 16, 16, 4096
CANDIDATES = {
    64: list(itertools.product((32, 64, 128), (32, 64), (4, 8), (1, 2, 3))),
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--compile-only", default=None, help="SHARD/NSHARDS: run each candidate of this shard once")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    base = dict(chunk.CONFIGS)
    data = {d: inputs(d) for d in CANDIDATES}
    todo = [(d, c) for d, cands in CANDIDATES.items() for c in cands]
    if args.compile_only:
        shard, n = map(int, args.compile_only.split("/"))
        todo = todo[shard::n]
    rows = []
    for d, cfg in todo:
        chunk.CONFIGS.update(base)
        chunk.CONFIGS[d] = cfg
        fn = run(d, data[d])
        try:
            fn()
            torch.cuda.synchronize()
            ms = None if args.compile_only else triton.testing.do_bench(fn, warmup=10, rep=50, return_mode="median")
        except Exception as e:  # out of shared memory or registers: a result, not a crash
            ms = float("inf")
            print(d, cfg, type(e).__name__, str(e)[:100], flush=True)
        rows.append({"d": d, "config": cfg, "ms": ms})
        print(json.dumps(rows[-1]), flush=True)
    if args.compile_only:
        return
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
