"""Linear attention time per token over length (constant expected, S04/S48)
against our softmax flash forward (quadratic: time per token grows with N).

python3 experiments/kernels/bench_linear.py [--out DIR] [--lengths 1k,...,64k]

bf16, causal, 16 heads, head dim 64 and 128, batch x N = 64k tokens per call,
per-head decay (Lightning / RetNet). Median ms from triton.testing.do_bench.
Writes bench_linear.md / .json / .png. Target: linear faster beyond 4k tokens.
"""
import argparse
import json
import os
import sys

import torch
import triton

from archgram.bench.base import parse_lengths
from archgram.kernels.flash.forward import flash_forward
from archgram.kernels.linear.chunk import chunk_forward, linear_attention

TOKENS = 65536
HEADS = 16


def time_ms(fn):
    fn()
    torch.cuda.synchronize()
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def case(n, d, grad):
    b = max(1, TOKENS // n)
    g = torch.Generator(device="cuda").manual_seed(n)
    q, k, v = (torch.randn(b, HEADS, n, d, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
    lam = torch.log(1 - torch.exp2(-5.0 - torch.arange(HEADS, dtype=torch.float32, device="cuda")))
    row = {"N": n, "B": b, "D": d, "mode": "fwd+bwd" if grad else "fwd"}
    if grad:
        for t in (q, k, v):
            t.requires_grad_(True)

        def lin():
            linear_attention(q, k, v, log_decay=lam, scale=d ** -0.5).sum().backward()
        fns = {"linear": lin}
    else:
        fns = {"linear": lambda: chunk_forward(q, k, v, log_decay=lam, scale=d ** -0.5)[0],
               "flash": lambda: flash_forward(q, k, v, causal=True)[0]}
    for name, fn in fns.items():
        try:
            ms = time_ms(fn)
            row[name + "_ms"] = ms
            row[name + "_us_per_token"] = 1e3 * ms / (b * n)
        except Exception as e:  # OOM or a compile error is a result
            row[name + "_error"] = f"{type(e).__name__}: {str(e)[:150]}"
    print(json.dumps(row), flush=True)
    return row


def table(rows):
    out = ["| D | mode | N | B | linear ms (µs/token) | flash softmax ms (µs/token) | linear speed-up |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        def c(n, r=r):
            return f"{r[n + '_ms']:.3f} ({r[n + '_us_per_token']:.4f})" if n + "_ms" in r else ("error" if n + "_error" in r else "-")
        up = f"{r['flash_ms'] / r['linear_ms']:.2f}x" if "flash_ms" in r and "linear_ms" in r else "-"
        out.append(f"| {r['D']} | {r['mode']} | {r['N']} | {r['B']} | {c('linear')} | {c('flash')} | {up} |")
    return "\n".join(out)


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for d in sorted({r["D"] for r in rows}):
        for name, mode in (("linear", "fwd"), ("flash", "fwd"), ("linear", "fwd+bwd")):
            pts = [(r["N"], r[name + "_us_per_token"]) for r in rows if r["D"] == d and r["mode"] == mode and name + "_ms" in r]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=f"{name} {mode} D={d}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length N")
    ax.set_ylabel("µs per token (batch x N = 64k tokens)")
    ax.set_title(f"causal linear (decay) vs softmax flash, bf16, {torch.cuda.get_device_name()}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--lengths", default="1k,2k,4k,8k,16k,32k,64k")
    args = ap.parse_args()
    rows = []
    for d in (64, 128):
        for n in parse_lengths(args.lengths):
            rows.append(case(n, d, grad=False))
        for n in parse_lengths(args.lengths):
            rows.append(case(n, d, grad=True))
    head = (f"device: {torch.cuda.get_device_name()} | torch {torch.__version__} | triton {triton.__version__} | "
            f"python {sys.version.split()[0]} | command: python3 {' '.join(sys.argv)}")
    md = head + "\n\n" + table(rows)
    print(md)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "bench_linear.md"), "w") as f:
            f.write(md + "\n")
        with open(os.path.join(args.out, "bench_linear.json"), "w") as f:
            json.dump(rows, f, indent=1)
        plot(rows, os.path.join(args.out, "bench_linear.png"))


if __name__ == "__main__":
    main()
