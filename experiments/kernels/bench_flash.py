"""Time the flash forward kernel against PyTorch SDPA (flash backend) and
FlexAttention (torch.compile'd, equivalent score_mod/mask_mod) in one process.

python experiments/kernels/bench_flash.py [--out DIR]
bf16, batch * seq = 32768 tokens, 16 heads, head dims 64 and 128. Prints a
markdown table (median ms from triton.testing.do_bench, TFLOP/s counting
4 * B * H * visible_pairs * D) and the relative error of each against the kernel.
"""
import argparse
import json
import math
import os
import sys

import torch
import torch.nn.functional as F
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from archgram.kernels.flash.forward import flash_forward

# one compile per (score_mod, block mask, head dim): raise dynamo's recompile limit (8 by
# default), else later cases silently fall back to flex's unfused eager path
torch._dynamo.config.recompile_limit = 64
torch._dynamo.config.cache_size_limit = 64
flex = torch.compile(flex_attention, dynamic=False)
CAP = 20.0


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def case(b, n, h, d, score, causal):
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
    scale = 1 / math.sqrt(d)
    sig_b = -math.log(n)
    pairs = n * (n + 1) / 2 if causal else n * n
    flops = 4 * b * h * pairs * d
    row = {"B": b, "N": n, "H": h, "D": d, "score": score, "causal": causal}

    def kern():
        return flash_forward(q, k, v, score=score, causal=causal, scale=scale, cap=CAP)[0]

    ref = kern()
    fns = {"kernel": kern}
    if score == "softmax":
        def sdpa():
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
        fns["sdpa_flash"] = sdpa
    bm = create_block_mask(lambda b_, h_, i, j: i >= j, None, None, n, n) if causal else None
    if score == "softmax":
        fns["flex"] = lambda: flex(q, k, v, block_mask=bm, scale=scale)
    elif score == "softcap":
        fns["flex"] = lambda: flex(q, k, v, score_mod=lambda s, b_, h_, i, j: CAP * torch.tanh(s / CAP),
                                   block_mask=bm, scale=scale)
    else:  # sigmoid: softmax of logsigmoid(s + b) times exp(lse) = sum_j sigmoid(s_ij + b) v_j
        def flex_sig():
            o, lse = flex(q, k, v, score_mod=lambda s, b_, h_, i, j: F.logsigmoid(s + sig_b),
                          block_mask=bm, scale=scale, return_lse=True)
            return o * lse.exp()[..., None].to(o.dtype)
        fns["flex"] = flex_sig
    for name, fn in fns.items():
        try:
            out = fn()
            torch.cuda.synchronize()
            ms = triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
            row[name + "_ms"] = ms
            row[name + "_tflops"] = flops / ms / 1e9
            if name != "kernel":
                row[name + "_relerr"] = rel(out, ref)
        except Exception as e:  # report, keep going
            row[name + "_error"] = f"{type(e).__name__}: {str(e)[:200]}"
    print(json.dumps(row), flush=True)
    return row


def table(rows):
    out = ["| D | score | causal | B x N | kernel ms (TFLOP/s) | SDPA flash ms (TFLOP/s) | Flex ms (TFLOP/s) | rel err SDPA / Flex vs kernel |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        def cell(n, r=r):
            if n + "_ms" in r:
                return f"{r[n + '_ms']:.3f} ({r[n + '_tflops']:.0f})"
            return "error" if n + "_error" in r else "n/a"
        errs = " / ".join(f"{r[n]:.1e}" if n in r else "-" for n in ("sdpa_flash_relerr", "flex_relerr"))
        out.append(f"| {r['D']} | {r['score']} | {r['causal']} | {r['B']} x {r['N']} | {cell('kernel')} | "
                   f"{cell('sdpa_flash')} | {cell('flex')} | {errs} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--seq", type=int, default=4096)
    args = ap.parse_args()
    n = args.seq
    b = 32768 // n
    rows = []
    for d in (64, 128):
        for score, causal in (("softmax", False), ("softmax", True), ("sigmoid", False), ("softcap", False), ("softcap", True)):
            rows.append(case(b, n, 16, d, score, causal))
    md = table(rows)
    head = (f"device: {torch.cuda.get_device_name()} | torch {torch.__version__} | triton {triton.__version__} | "
            f"python {sys.version.split()[0]}")
    print(head + "\n\n" + md)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "bench.md"), "w") as f:
            f.write(head + "\n\n" + md + "\n")
        with open(os.path.join(args.out, "bench.json"), "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
