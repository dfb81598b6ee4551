"""Time the flash kernels (forward, and forward+backward) against PyTorch SDPA
(flash backend) and FlexAttention (torch.compile'd, equivalent
score_mod/mask_mod) in one process.

python experiments/kernels/bench_flash.py [--out DIR] [--quick] [--dims 64,80,96,128,256] [--tiles] [--no-sweep]

bf16, B x N = 32768 tokens, 16 heads, head dims ``--dims`` (64 and 128 by
default; any of 16-256, powers of two or not). Writes a markdown table (median
ms from triton.testing.do_bench; TFLOP/s counts 4 * B * H * visible pairs * D
forward, 2.5x that forward+backward) and the relative error of each output
against the kernel's, plus a window-size sweep showing the kernel's cost grows
with the window, not the length. ``--tiles`` also times the forward at a few
candidate tile configs per head-dim tile (BLOCK_D 128 at the first dim of
``--dims`` that pads to it, and 256), next to the table's default. The report
is rewritten after every row, so a run cut short keeps what it measured.
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

from archgram.bench.base import environment
from archgram.kernels.flash import common, flash_attention
from archgram.kernels.flash.forward import flash_forward
from archgram.kernels.flash.reference import visible

# one compile per (score_mod, block mask, head dim): raise dynamo's recompile limit (8 by
# default), else later cases silently fall back to flex's unfused eager path
torch._dynamo.config.recompile_limit = 256
torch._dynamo.config.cache_size_limit = 256
flex = torch.compile(flex_attention, dynamic=False)
CAP = 20.0


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _natten(size, dil, n):
    def mask(b, h, i, j):
        g = i % dil
        length = (n - g + dil - 1) // dil
        start = torch.clamp(i // dil - size // 2, min=0)
        start = torch.minimum(start, torch.clamp(length - size, min=0))
        jl = j // dil
        return (j % dil == g) & (jl >= start) & (jl < start + size)
    return mask


def mask_mod(kw, n):
    mods = []
    if kw.get("causal"):
        mods.append(lambda b, h, i, j: i >= j)
    if kw.get("window") is not None:
        w = kw["window"]
        mods.append(lambda b, h, i, j: (i - j).abs() <= w)
    if kw.get("neighborhood") is not None:
        mods.append(_natten(kw["neighborhood"], kw.get("dilation", 1), n))
    if not mods:
        return None

    def both(b, h, i, j):
        keep = mods[0](b, h, i, j)
        for m in mods[1:]:
            keep = keep & m(b, h, i, j)
        return keep
    return both


def visible_pairs(kw, n):
    if kw.get("neighborhood"):
        return n * kw["neighborhood"]
    if kw.get("window") is None:
        return n * (n + 1) / 2 if kw.get("causal") else n * n
    return visible(n, n, **{k: kw[k] for k in ("causal", "window") if k in kw}).sum().item() if n <= 8192 else \
        n * (kw["window"] + 1 if kw.get("causal") else 2 * kw["window"] + 1)


def timed(fn, backward, grad_out, inputs):
    if backward:
        def run():
            out = fn()
            torch.autograd.grad(out, inputs, grad_out)
        return triton.testing.do_bench(run, warmup=25, rep=100, return_mode="median")
    with torch.no_grad():
        return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def case(b, n, h, d, score, kw, backward=True, baselines=True):
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
               for _ in range(3))
    do = torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16, generator=g)
    scale = 1 / math.sqrt(d)
    sig_b = -math.log(n)
    flops = 4 * b * h * visible_pairs(kw, n) * d
    row = {"B": b, "N": n, "H": h, "D": d, "score": score, "mask": ",".join(f"{k_}={v_}" for k_, v_ in kw.items())}
    fns = {"kernel": lambda: flash_attention(q, k, v, score=score, scale=scale, cap=CAP, **kw)}
    mm = mask_mod(kw, n)
    bm = create_block_mask(mm, None, None, n, n) if mm is not None else None
    if baselines and score == "softmax" and set(kw) <= {"causal"}:
        def sdpa():
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return F.scaled_dot_product_attention(q, k, v, is_causal=kw.get("causal", False), scale=scale)
        fns["sdpa_flash"] = sdpa
    if baselines and score == "softmax":
        fns["flex"] = lambda: flex(q, k, v, block_mask=bm, scale=scale)
    elif baselines and score == "softcap":
        fns["flex"] = lambda: flex(q, k, v, score_mod=lambda s, b_, h_, i, j: CAP * torch.tanh(s / CAP),
                                   block_mask=bm, scale=scale)
    elif baselines and score == "sigmoid":  # softmax of logsigmoid(s + b) times exp(lse) = sum_j sigmoid(s_ij + b) v_j
        def flex_sig():
            o, lse = flex(q, k, v, score_mod=lambda s, b_, h_, i, j: F.logsigmoid(s + sig_b),
                          block_mask=bm, scale=scale, return_lse=True)
            return o * lse.exp()[..., None].to(o.dtype)
        fns["flex"] = flex_sig
    with torch.no_grad():
        ref = fns["kernel"]()
    for name, fn in fns.items():
        for phase in ("fwd", "fwdbwd") if backward else ("fwd",):
            try:
                with torch.no_grad():
                    out = fn()
                ms = timed(fn, phase == "fwdbwd", do, (q, k, v))
                row[f"{name}_{phase}_ms"] = ms
                row[f"{name}_{phase}_tflops"] = flops * (2.5 if phase == "fwdbwd" else 1) / ms / 1e9
                if name != "kernel" and phase == "fwd":
                    row[name + "_relerr"] = rel(out, ref)
            except Exception as e:  # report, keep going
                row[f"{name}_{phase}_error"] = f"{type(e).__name__}: {str(e)[:200]}"
    print(json.dumps(row), flush=True)
    return row


def cell(r, n, phase):
    if f"{n}_{phase}_ms" in r:
        return f"{r[f'{n}_{phase}_ms']:.3f} ({r[f'{n}_{phase}_tflops']:.0f})"
    return "error" if f"{n}_{phase}_error" in r else "n/a"


def ratio(r, phase):
    k, f = r.get(f"kernel_{phase}_ms"), r.get(f"flex_{phase}_ms")
    return f"{f / k:.2f}x" if k and f else "-"


def table(rows):
    out = ["| D | score | mask | B x N | phase | kernel ms (TFLOP/s) | SDPA flash | Flex | Flex/kernel time | rel err SDPA / Flex |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        errs = " / ".join(f"{r[n]:.1e}" if n in r else "-" for n in ("sdpa_flash_relerr", "flex_relerr"))
        for phase in ("fwd", "fwdbwd"):
            if f"kernel_{phase}_ms" not in r and f"kernel_{phase}_error" not in r:
                continue
            out.append(f"| {r['D']} | {r['score']} | {r['mask'] or 'full'} | {r['B']} x {r['N']} | {phase} | "
                       f"{cell(r, 'kernel', phase)} | {cell(r, 'sdpa_flash', phase)} | {cell(r, 'flex', phase)} | "
                       f"{ratio(r, phase)} | {errs if phase == 'fwd' else ''} |")
    return "\n".join(out)


def score_overheads(rows):
    """Each non-softmax score's time over our softmax's, same head dim and mask
    (target: within 15%, i.e. <= 1.15)."""
    soft = {(r["D"], r["mask"]): r for r in rows if r["score"] == "softmax"}
    out = ["| D | score | mask | fwd / softmax fwd | fwd+bwd / softmax fwd+bwd |", "|---|---|---|---|---|"]
    for r in rows:
        base = soft.get((r["D"], r["mask"]))
        if r["score"] == "softmax" or base is None:
            continue
        cells = []
        for phase in ("fwd", "fwdbwd"):
            a, b = r.get(f"kernel_{phase}_ms"), base.get(f"kernel_{phase}_ms")
            cells.append(f"{a / b:.2f}x" if a and b else "-")
        out.append(f"| {r['D']} | {r['score']} | {r['mask'] or 'full'} | {cells[0]} | {cells[1]} |")
    return "\n".join(out)


#: forward tile candidates (BLOCK_M, BLOCK_N, warps, stages) per BLOCK_D for --tiles: our
#: tables' rows first, FlexAttention's H100 defaults ((128, 64, 4, 3) for dims it has no entry
#: for, (64, 32, 4, 3) at 256) and neighbours that fit shared memory (tile_resources.py)
TILE_CANDIDATES = {128: [(128, 128, 8, 3), (128, 64, 4, 3), (128, 64, 8, 3), (64, 64, 4, 3)],
                   256: [(64, 32, 8, 2), (64, 32, 4, 3), (64, 32, 8, 3), (128, 32, 8, 2)]}


def tile_rows(b, n, h, d, masked):
    """Forward ms of softmax (causal if ``masked``) at each candidate tile config."""
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
    key = (max(64, triton.next_power_of_2(d)), masked)
    table = common.FWD_CONFIGS[key]
    rows = []
    for cfg in TILE_CANDIDATES[key[0]]:
        common.FWD_CONFIGS[key] = cfg
        row = {"D": d, "mask": "causal=True" if masked else "", "tiles": list(cfg), "default": cfg == table}
        try:
            with torch.no_grad():
                row["ms"] = timed(lambda: flash_forward(q, k, v, causal=masked)[0], False, None, ())
        except Exception as e:  # a config that does not compile or fit: report, keep going
            row["error"] = f"{type(e).__name__}: {str(e)[:160]}"
        finally:
            common.FWD_CONFIGS[key] = table
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def tile_table(tiles, rows):
    flex = {(r["D"], r["mask"]): r.get("flex_fwd_ms") for r in rows if r["score"] == "softmax"}
    out = ["| D | mask | tiles (BM, BN, warps, stages) | kernel fwd ms | Flex fwd ms | Flex/kernel |",
           "|---|---|---|---|---|---|"]
    for t in tiles:
        f = flex.get((t["D"], t["mask"]))
        ms = t.get("ms")
        name = str(tuple(t["tiles"])) + (" (table)" if t["default"] else "")
        cells = [f"{ms:.3f}" if ms else "error", f"{f:.3f}" if f else "-", f"{f / ms:.2f}x" if f and ms else "-"]
        out.append(f"| {t['D']} | {t['mask'] or 'full'} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def report(rows, sweep, tiles):
    env = environment(torch.device("cuda"))
    md = (f"device: {env['device']} | torch {env['torch']} | triton {env['triton']} | python {env['python']} | "
          f"command: python3 {' '.join(sys.argv)}\n\n" + table(rows) +
          "\n\nOther scores against our softmax (same D and mask):\n\n" + score_overheads(rows))
    if sweep:
        md += "\n\nWindow sweep (B x N = 2 x 16384, D=64, causal, forward):\n\n" + table(sweep)
    if tiles:
        md += "\n\nForward tile candidates (softmax, same B x N):\n\n" + tile_table(tiles, rows)
    return md


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--dims", default="64,128", help="comma-separated head dims, 16-256")
    ap.add_argument("--quick", action="store_true", help="softmax rows only")
    ap.add_argument("--only", default=None, help="comma-separated scores: D=64 softmax rows plus these, no sweep")
    ap.add_argument("--tiles", action="store_true", help="also time forward tile candidates (TILE_CANDIDATES)")
    ap.add_argument("--no-sweep", action="store_true", help="skip the window-size sweep")
    args = ap.parse_args()
    n = args.seq
    b = 32768 // n
    dims = [int(x) for x in args.dims.split(",")]
    rows, sweep, tiles = [], [], []

    def save():
        md = report(rows, sweep, tiles)
        if args.out:
            os.makedirs(args.out, exist_ok=True)
            with open(os.path.join(args.out, "bench_flash.md"), "w") as f:
                f.write(md + "\n")
            with open(os.path.join(args.out, "bench_flash.json"), "w") as f:
                json.dump(rows + sweep + tiles, f, indent=1)
        return md

    main_cases = [("softmax", {}), ("softmax", {"causal": True})]
    extra = [("sigmoid", {}), ("softcap", {"causal": True}), ("softplus", {"causal": True}), ("clipped", {}),
             ("softmax", {"causal": True, "window": 256}), ("softmax", {"neighborhood": 255}),
             ("softmax", {"neighborhood": 63, "dilation": 4})]
    if args.only:
        keep = args.only.split(",")
        for score, kw in main_cases + [(sc, kw) for sc, kw in extra if sc in keep]:
            rows.append(case(b, n, 16, 64, score, kw))
            save()
    for d in () if args.only else dims:
        for score, kw in main_cases + ([] if args.quick else extra if d == 64 else extra[:2]):
            rows.append(case(b, n, 16, d, score, kw))
            save()
    if args.tiles:
        padded = [d for d in dims if 64 < d < 128] + [128]
        for d in (padded[0], 256):
            for masked in (False, True):
                tiles += tile_rows(b, n, 16, d, masked)
                save()
    for w in () if args.only or args.no_sweep else (128, 512, 2048, None):
        kw = {"causal": True} if w is None else {"causal": True, "window": w}
        sweep.append(case(2, 16384, 16, 64, "softmax", kw, backward=False))
        save()
    print(save())


if __name__ == "__main__":
    main()
