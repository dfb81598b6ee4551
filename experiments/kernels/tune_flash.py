"""Pick the flash kernels' tile configs per (head dim, masked) on this GPU.

bf16, 8 x 4096 tokens, 16 heads, softmax; "masked" runs causal. The forward
and the two backward kernels (dK/dV, dQ) are timed separately (each backward
candidate with the other kernel at its current config), so the best of each
combines. Prints the FWD_CONFIGS / BWD_CONFIGS to paste into
archgram/kernels/flash/common.py and writes tune_flash.json under --out.

Compiling dominates, so compile first in parallel processes, then time in one:

  for i in 0 1 2 3 4 5 6 7; do python3 experiments/kernels/tune_flash.py --compile-only $i/8 & done; wait
  python3 experiments/kernels/tune_flash.py --out DIR
"""
import argparse
import json
import os

import torch
import triton

from archgram.kernels.flash import common, flash_attention
from archgram.kernels.flash.forward import flash_forward

B, H, N = 8, 16, 4096
FWD = {64: [(128, 64, 4, 3), (128, 64, 4, 4), (128, 128, 8, 3), (128, 128, 4, 3), (64, 64, 4, 3), (128, 32, 4, 4),
            (64, 128, 4, 3)],
       128: [(128, 64, 8, 3), (128, 128, 8, 3), (128, 64, 4, 3), (64, 64, 4, 3), (128, 32, 4, 3), (64, 128, 8, 3),
             (128, 64, 8, 2)]}
KV = {64: [(64, 64, 4, 2), (32, 128, 4, 3), (64, 128, 8, 2), (32, 64, 4, 3), (64, 64, 4, 3), (32, 128, 8, 3)],
      128: [(64, 128, 8, 2), (32, 128, 4, 3), (64, 64, 4, 2), (32, 64, 4, 3), (64, 128, 8, 3), (32, 128, 8, 2)]}
DQ = {64: [(64, 64, 4, 2), (128, 32, 4, 3), (128, 64, 8, 2), (64, 64, 4, 3), (64, 128, 4, 2)],
      128: [(128, 64, 8, 2), (64, 64, 4, 2), (128, 32, 4, 3), (64, 128, 8, 2), (128, 64, 8, 3)]}


def inputs(d):
    g = torch.Generator(device="cuda").manual_seed(d)
    q, k, v, do = (torch.randn(B, H, N, d, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(4))
    for t in (q, k, v):
        t.requires_grad_(True)
    return q, k, v, do


def trials():
    """(kind, d, masked, config) of every candidate, in a fixed order."""
    out = []
    for d in (64, 128):
        for masked in (False, True):
            out += [("fwd", d, masked, c) for c in FWD[d]]
            out += [("kv", d, masked, c) for c in KV[d]]
            out += [("dq", d, masked, c) for c in DQ[d]]
    return out


def runner(kind, d, masked, cfg, t):
    """Set the candidate into the tables; return the function to time."""
    q, k, v, do = t
    key = (d, masked)
    if kind == "fwd":
        common.FWD_CONFIGS[key] = cfg
        return lambda: flash_forward(q.detach(), k.detach(), v.detach(), causal=masked)[0]
    kv, dq = BASE_BWD[key]
    common.BWD_CONFIGS[key] = (cfg, dq) if kind == "kv" else (kv, cfg)
    return lambda: torch.autograd.grad(flash_attention(q, k, v, causal=masked), (q, k, v), do)


BASE_BWD = dict(common.BWD_CONFIGS)
BASE_FWD = dict(common.FWD_CONFIGS)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--compile-only", default=None, help="SHARD/NSHARDS: run each candidate of this shard once")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    data = {d: inputs(d) for d in (64, 128)}
    todo = trials()
    if args.compile_only:
        shard, n = map(int, args.compile_only.split("/"))
        todo = todo[shard::n]
    rows = []
    for kind, d, masked, cfg in todo:
        common.FWD_CONFIGS.update(BASE_FWD)
        common.BWD_CONFIGS.update(BASE_BWD)
        fn = runner(kind, d, masked, cfg, data[d])
        try:
            fn()
            torch.cuda.synchronize()
            ms = None if args.compile_only else triton.testing.do_bench(fn, warmup=10, rep=50, return_mode="median")
        except Exception as e:  # out of shared memory etc.: a result, not a crash
            ms = float("inf")
            print(kind, d, masked, cfg, type(e).__name__, str(e)[:100], flush=True)
        row = {"kind": kind, "d": d, "masked": masked, "config": cfg, "ms": ms}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.compile_only:
        return
    best = {}
    for kind, d, masked, _ in todo:
        cands = [r for r in rows if (r["kind"], r["d"], r["masked"]) == (kind, d, masked)]
        best[(kind, d, masked)] = min(cands, key=lambda r: r["ms"])
    fwd = {(d, m): tuple(best[("fwd", d, m)]["config"]) for d in (64, 128) for m in (False, True)}
    bwd = {(d, m): (tuple(best[("kv", d, m)]["config"]), tuple(best[("dq", d, m)]["config"]))
           for d in (64, 128) for m in (False, True)}
    print("FWD_CONFIGS =", fwd)
    print("BWD_CONFIGS =", bwd)
    for (kind, d, masked), r in best.items():
        cur = BASE_FWD[(d, masked)] if kind == "fwd" else BASE_BWD[(d, masked)][0 if kind == "kv" else 1]
        cur_ms = next((x["ms"] for x in rows if (x["kind"], x["d"], x["masked"]) == (kind, d, masked)
                       and tuple(x["config"]) == cur), float("nan"))
        print(f"{kind} d={d} masked={masked}: best {r['config']} {r['ms']:.3f} ms, current {cur} {cur_ms:.3f} ms")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "tune_flash.json"), "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                       "triton": triton.__version__, "shape": [B, H, N], "rows": rows,
                       "FWD_CONFIGS": {str(k): v for k, v in fwd.items()},
                       "BWD_CONFIGS": {str(k): v for k, v in bwd.items()}}, f, indent=1)


if __name__ == "__main__":
    main()
