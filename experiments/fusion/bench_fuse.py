"""Unfused vs fused attention (catalog row S55): the same einspace derivation,
compiled plainly (matmul -> softmax -> matmul, an i x j score matrix per head)
and with ``fuse=True`` (one fused attention call), same weights.

python experiments/fusion/bench_fuse.py [--quick] [--out DIR]

Cases: a hand-built single-head einspace attention block on 8 x 1024 tokens x
256 channels (head dim 64), and einspace's transformer seed (4 layers x 4 heads
of dim 64, 512 channels) on 8 x 3 x 128 x 128 images = 8 x 1024 tokens.
Backends of the fused model: "sdpa" (torch scaled_dot_product_attention, the
default) and "flash" (archgram's Triton flash kernel where it applies, else SDPA). Forward
under no_grad, and forward+backward (a training step without the optimizer). Median ms over CUDA-event
timed runs; "max |diff|" is against the unfused model in the same dtype.
Runs on CPU too (small sizes, --quick) to check the script.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

import archgram
from archgram.compiler.passes.lower import set_backend
from archgram.grammar.baselines import baseline
from archgram.grammar.model import Grammar

BLOCK = """net : clone(2) p v matmul
p : clone(2) q k matmul(scaled=true) softmax
q : linear(out=64)
k : linear(out=64) permute(order=(0,2,1))
v : linear(out={e})
"""


def timed(fn, device: str, reps: int) -> float:
    """Median milliseconds of ``fn()``."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            import time

            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def models(d, device, dtype):
    torch.manual_seed(0)
    plain = archgram.compile(d).to(device=device, dtype=dtype).eval()
    fused = archgram.compile(d, fuse=True).to(device=device, dtype=dtype).eval()
    fused.load_state_dict(plain.state_dict())
    return plain, fused


def bench_case(name, d, device, dtype, reps, rows):
    plain, fused = models(d, device, dtype)
    x = torch.randn(d.input_shape, device=device, dtype=dtype)
    with torch.no_grad():
        ref = plain(x)
        t_plain = timed(lambda: plain(x), device, reps)
        for backend in ("sdpa", "flash"):
            set_backend(fused, backend)
            out = fused(x)
            t = timed(lambda: fused(x), device, reps)
            rows.append({"case": name, "dtype": str(dtype).split(".")[-1], "pass": "forward", "fused": backend,
                         "unfused_ms": t_plain, "fused_ms": t, "speedup": t_plain / t,
                         "max_diff": (out.float() - ref.float()).abs().max().item()})

    def step(net):
        net.zero_grad(set_to_none=True)
        net(x).float().square().mean().backward()

    t_plain = timed(lambda: step(plain), device, reps)
    for backend in ("sdpa", "flash"):
        set_backend(fused, backend)
        t = timed(lambda: step(fused), device, reps)
        rows.append({"case": name, "dtype": str(dtype).split(".")[-1], "pass": "fwd+bwd", "fused": backend,
                     "unfused_ms": t_plain, "fused_ms": t, "speedup": t_plain / t, "max_diff": float("nan")})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (CPU check of the script)")
    parser.add_argument("--out", type=Path, default=None, help="folder for results.json")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    batch, side, reps = (2, 32, 3) if args.quick or device == "cpu" else (8, 128, 30)
    tokens = (side // 4) ** 2
    cases = {
        f"einspace attention block {batch}x{tokens}x256, d=e=64": Grammar.from_text(BLOCK.format(e=64)).sample(
            (batch, tokens, 256), seed=0),
        f"einspace attention block {batch}x{tokens}x256, d=64 e=256": Grammar.from_text(BLOCK.format(e=256)).sample(
            (batch, tokens, 256), seed=0),
        f"einspace transformer seed {batch}x3x{side}x{side} ({tokens} tokens, 4x4 heads)": baseline(
            "vit", input_shape=(batch, 3, side, side)),
    }
    dtypes = (torch.bfloat16, torch.float32) if device == "cuda" else (torch.float32,)
    rows: list[dict] = []
    for dtype in dtypes:
        for name, d in cases.items():
            bench_case(name, d, device, dtype, reps, rows)
            if device == "cuda":
                torch.cuda.empty_cache()
    env = f"device: {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'} | torch {torch.__version__}"
    print(env)
    print()
    print("| case | dtype | pass | fused backend | unfused ms | fused ms | speedup | max abs diff |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['dtype']} | {r['pass']} | {r['fused']} | {r['unfused_ms']:.3f} | "
              f"{r['fused_ms']:.3f} | {r['speedup']:.2f}x | {r['max_diff']:.2e} |")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps({"env": env, "rows": rows}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
