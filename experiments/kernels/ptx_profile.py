"""Static instruction profile of the flash forward kernel per score function:
compile ``_flash_fwd`` for sm_90 (no GPU needed: Triton emits PTX for a target
it is told) and count, per score element a thread computes, the instructions
that run on the transcendental unit (MUFU: 16 ops/clock/SM on Hopper) and on
the FP32 pipes (128 lanes/clock/SM), next to the tensor-core MMAs.

python experiments/kernels/ptx_profile.py [--out FILE.md]

bf16 inputs (fast approximations on), D=64, 128 x 64 tiles, 4 warps, full
attention. The kernel has three copies of its key loop (masked head,
mask-free interior, masked tail); each thread computes 128 * 64 / 128 = 64
scores per tile in each, 192 in all. Clipped softmax's two passes both count.
"""
import argparse
import re
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from archgram.kernels.flash.common import head_dim_args
from archgram.kernels.flash.forward import _flash_fwd
from archgram.kernels.flash.spec import SCORE_IDS

POINTERS = {"Q": "*bf16", "K": "*bf16", "V": "*bf16", "Out": "*bf16", "LSE": "*fp32", "AUX": "*fp32",
            "SLOPES": "*fp32", "RELB": "*fp32", "BMASK": "*i8", "TILES": "*i32"}
FLOATS = {"qk_scale", "sig_b2", "cap", "czeta", "gamma", "power"}
MUFU = ("ex2.approx", "lg2.approx", "tanh.approx", "rcp.approx", "sin.approx", "cos.approx", "rsqrt.approx")
FP32 = re.compile(r"^\s*(fma|mul|add|sub|max|min|selp|neg|abs|setp\.\w+|div\.\w+)\.\S*f32", re.M)
SCORES_PER_THREAD = 3 * 128 * 64 // 128


def ptx(score: str) -> str:
    const = dict(GROUP=1, **head_dim_args(64), SCORE=SCORE_IDS[score], CAUSAL=False, HAS_WINDOW=False, NEIGHBOR=False,
                 DILATED=False, GRID2D=False, BLOCK_SPARSE=False, HAS_ALIBI=False, HAS_RELB=False, BLOCK_M=128,
                 BLOCK_N=64, PRECISION="tf32", FAST_APPROX=True)
    sig = {n: "constexpr" if n in const else POINTERS.get(n, "fp32" if n in FLOATS else "i32")
           for n in _flash_fwd.arg_names}
    kernel = triton.compile(ASTSource(_flash_fwd, sig, const), target=GPUTarget("cuda", 90, 32),
                            options={"num_warps": 4, "num_stages": 3})
    return kernel.asm["ptx"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    lines = [f"triton {triton.__version__}, target sm_90 | command: python {' '.join(sys.argv)}", "",
             "| score | MUFU ops / score | of which | FP32-pipe ops / score | wgmma per thread |",
             "|---|---|---|---|---|"]
    for score in ("softmax", "sigmoid", "softcap", "softplus", "clipped"):
        text = ptx(score)
        mufu = {op: len(re.findall(re.escape(op), text)) for op in MUFU}
        fp32 = len(FP32.findall(text))
        wgmma = len(re.findall(r"wgmma\.mma_async", text))
        detail = ", ".join(f"{op.split('.')[0]} {n / SCORES_PER_THREAD:.2f}" for op, n in mufu.items() if n)
        lines.append(f"| {score} | {sum(mufu.values()) / SCORES_PER_THREAD:.2f} | {detail} | "
                     f"{fp32 / SCORES_PER_THREAD:.1f} | {wgmma} |")
    print("\n".join(lines))
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
