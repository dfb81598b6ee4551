"""Linear attention time per token over length (constant expected, S04/S48)
against our softmax flash forward (quadratic: time per token grows with N) and
flash-linear-attention's chunk_simple_gla (same math) where ``fla`` imports.

python3 experiments/kernels/bench_linear.py [--out DIR] [--lengths 1k,...,64k]

bf16, causal, 16 heads, head dim 64 and 128, batch x N = 64k tokens per call,
per-head decay (Lightning / RetNet). Median ms from triton.testing.do_bench.
Columns: ``linear`` (our kernel, segment count chosen by ``segments``), ``fused``
(the serial walk forced), ``split`` (segments forced), ``fla``, ``flash`` (softmax).
Writes bench_linear.md / .json / .png. Target: linear faster beyond 4k tokens,
constant time per token.
"""
import argparse
import json
import os
import sys

import torch
import triton

from archgram.bench.base import environment, parse_lengths
from archgram.kernels.flash.forward import flash_forward
from archgram.kernels.linear import chunk
from archgram.kernels.linear.chunk import chunk_forward, linear_attention, segments

try:
    from fla.ops.simple_gla import chunk_simple_gla
except ImportError:  # not in the GPU image unless carried as a wheel
    chunk_simple_gla = None

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
    row = {"N": n, "B": b, "D": d, "mode": "fwd+bwd" if grad else "fwd",
           "config": chunk.config(d, d)}
    row["segments"] = segments(b, HEADS, n, d, row["config"][0], row["config"][1], q.device)
    scale = d ** -0.5
    qt, kt, vt = (t.transpose(1, 2).contiguous() for t in (q, k, v))  # fla wants (B, N, H, D)
    g_tok = lam.view(1, 1, HEADS).expand(b, n, HEADS).contiguous()
    if grad:
        for t in (q, k, v, qt, kt, vt):
            t.requires_grad_(True)
        fns = {path: lambda path=path: linear_attention(q, k, v, log_decay=lam, scale=scale,
                                                         path=PATH[path]).sum().backward() for path in PATH}
        if chunk_simple_gla is not None:
            fns["fla"] = lambda: chunk_simple_gla(qt, kt, vt, g=g_tok, scale=scale)[0].sum().backward()
    else:
        fns = {path: lambda path=path: chunk_forward(q, k, v, log_decay=lam, scale=scale, path=PATH[path])[0]
               for path in PATH}
        fns["flash"] = lambda: flash_forward(q, k, v, causal=True)[0]
        if chunk_simple_gla is not None:
            fns["fla"] = lambda: chunk_simple_gla(qt, kt, vt, g=g_tok, scale=scale)[0]
    for name, fn in fns.items():
        try:
            ms = time_ms(fn)
            row[name + "_ms"] = ms
            row[name + "_us_per_token"] = 1e3 * ms / (b * n)
        except Exception as e:  # OOM or a compile error is a result
            row[name + "_error"] = f"{type(e).__name__}: {str(e)[:150]}"
    print(json.dumps(row), flush=True)
    return row


NAMES = ("linear", "fused", "split", "fla", "flash")
PATH = {"linear": "auto", "fused": "fused", "split": "split"}  # our kernel's columns


def table(rows):
    out = ["| D | mode | N | B | segments | " + " | ".join(f"{n} ms (µs/token)" for n in NAMES) + " | flash / linear | fla / linear |",
           "|---|---|---|---|---|" + "---|" * (len(NAMES) + 2)]
    for r in rows:
        def c(n, r=r):
            return f"{r[n + '_ms']:.3f} ({r[n + '_us_per_token']:.4f})" if n + "_ms" in r else ("error" if n + "_error" in r else "-")

        def ratio(n, r=r):
            return f"{r[n + '_ms'] / r['linear_ms']:.2f}x" if n + "_ms" in r and "linear_ms" in r else "-"
        out.append(f"| {r['D']} | {r['mode']} | {r['N']} | {r['B']} | {r['segments']} | "
                   + " | ".join(c(n) for n in NAMES) + f" | {ratio('flash')} | {ratio('fla')} |")
    return "\n".join(out)


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for d in sorted({r["D"] for r in rows}):
        for name, mode in (("linear", "fwd"), ("fla", "fwd"), ("flash", "fwd"), ("linear", "fwd+bwd"), ("fla", "fwd+bwd")):
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
    ap.add_argument("--no-fla", action="store_true", help="skip fla (its autotuning takes minutes per shape)")
    ap.add_argument("--configs", default=None, help="tune_linear.json: time its CONFIGS instead of chunk.py's")
    args = ap.parse_args()
    if args.configs:
        with open(args.configs) as f:
            chunk.CONFIGS.update({int(d): tuple(c) for d, c in json.load(f)["CONFIGS"].items()})
    global chunk_simple_gla
    if args.no_fla:
        chunk_simple_gla = None
    env = environment(torch.device("cuda"))
    fla_version = "not importable or skipped"
    if chunk_simple_gla is not None:
        from importlib.metadata import version
        fla_version = version("fla-core")
    head = (f"device: {env['device']} | torch {env['torch']} | triton {env['triton']} | fla-core {fla_version} | "
            f"python {env['python']} | linear CONFIGS {chunk.CONFIGS} | command: python3 {' '.join(sys.argv)}")
    rows = []
    for d in (64, 128):
        for grad in (False, True):
            for n in parse_lengths(args.lengths):
                rows.append(case(n, d, grad=grad))
                if args.out:  # after every row: a time limit still leaves what was measured
                    write(rows, head, args.out, final=False)
    print(head + "\n\n" + table(rows))
    if args.out:
        write(rows, head, args.out, final=True)


def write(rows, head, out, final):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "bench_linear.md"), "w") as f:
        f.write(head + "\n\n" + table(rows) + "\n")
    with open(os.path.join(out, "bench_linear.json"), "w") as f:
        json.dump(rows, f, indent=1)
    if final:
        plot(rows, os.path.join(out, "bench_linear.png"))

if __name__ == "__main__":
    main()
