"""Split-KV decode (S25) against SDPA's decode for one new token, eager and
CUDA-graphed (a graph replay times the GPU work without Python's launch cost).

python3 experiments/kernels/bench_decode.py [--out DIR]

bf16, 32 query heads over 8 KV heads (GQA 4), head dim 128, one query token per
sequence; batch x cache length = 256k cached tokens per call.
"""
import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F
import triton

from archgram.bench.base import environment
from archgram.bench.kernels import graphed
from archgram.kernels.decode.split import decode_attention

H, HKV, D, TOKENS = 32, 8, 128, 262144


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = []
    for n in (4096, 16384, 65536, 262144):
        b = max(1, TOKENS // n)
        g = torch.Generator(device="cuda").manual_seed(n)
        q = torch.randn(b, H, 1, D, device="cuda", dtype=torch.bfloat16, generator=g)
        k, v = (torch.randn(b, HKV, n, D, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(2))
        fns = {"sdpa": lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v, enable_gqa=True),
               "ours": lambda q=q, k=k, v=v: decode_attention(q, k, v)}
        err = ((fns["ours"]().float() - fns["sdpa"]().float()).norm() / fns["sdpa"]().float().norm()).item()
        row = {"N": n, "B": b, "relerr": err}
        for name, fn in fns.items():
            row[f"{name}_eager_ms"] = triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
            row[f"{name}_graph_ms"] = triton.testing.do_bench(graphed(fn), warmup=25, rep=100, return_mode="median")
        kv_bytes = 2 * b * HKV * n * D * 2
        row["ours_graph_TBps"] = kv_bytes / row["ours_graph_ms"] / 1e9
        row["sdpa_graph_TBps"] = kv_bytes / row["sdpa_graph_ms"] / 1e9
        print(json.dumps(row), flush=True)
        rows.append(row)
    env = environment(torch.device("cuda"))
    md = [f"device: {env['device']} | torch {env['torch']} | triton {env['triton']} | command: python3 {' '.join(sys.argv)}",
          "", "| N | B | SDPA eager ms | ours eager ms | SDPA graphed ms (TB/s of KV) | ours graphed ms (TB/s) | rel err |",
          "|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['N']} | {r['B']} | {r['sdpa_eager_ms']:.3f} | {r['ours_eager_ms']:.3f} | "
                  f"{r['sdpa_graph_ms']:.3f} ({r['sdpa_graph_TBps']:.2f}) | {r['ours_graph_ms']:.3f} "
                  f"({r['ours_graph_TBps']:.2f}) | {r['relerr']:.1e} |")
    print("\n".join(md))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "bench_decode.md"), "w") as f:
            f.write("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
