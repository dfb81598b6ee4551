"""Shared memory, registers and spills of the flash kernels at their table tile
configs, per head dim, compiled for sm_90 without a GPU (Triton emits PTX and
a cubin for a named target; ptxas -v reports registers and spills); then the
linear chunk kernel (forward, decayed) and the two decode partial kernels,
split-KV and Lean Attention (GQA 4, one token), at theirs.

python experiments/kernels/tile_resources.py [--dims 64,80,96,128,256] [--out FILE.md]

bf16 softmax, full and causal (the two table rows per head-dim tile), MHA.
The check behind the tile choice: shared memory under the 227 KiB a program
may use on an H100 / H200 and no register spills. Numbers are for the installed
Triton; the GPU image runs 3.6 (run with it on PYTHONPATH to match).
"""
import argparse
import re
import subprocess
import sys
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from archgram.kernels.decode import lean, split
from archgram.kernels.flash.backward import _flash_bwd_dkdv, _flash_bwd_dq
from archgram.kernels.flash.common import BWD_CONFIGS, FWD_CONFIGS, SMEM_BYTES, _tuned_key, head_dim_args
from archgram.kernels.flash.forward import _flash_fwd
from archgram.kernels.linear import chunk

POINTERS = {**dict.fromkeys(("Q", "K", "V", "Out", "DO", "DQ", "DK", "DV"), "*bf16"),
            **dict.fromkeys(("LSE", "AUX", "DELTA", "SLOPES", "RELB", "DRELB"), "*fp32"),
            "BMASK": "*i8", "TILES": "*i32"}
LINEAR_POINTERS = {**dict.fromkeys(("Q", "K", "V", "Out", "X"), "*bf16"),
                   **dict.fromkeys(("G", "LOGLAM", "S_IN", "S_OUT", "TOT", "DOT"), "*fp32")}
DECODE_POINTERS = {"Q": "*bf16", "K": "*bf16", "V": "*bf16", "LENS": "*i32", "TILES": "*i32", "WORK": "*i32",
                   "PO": "*fp32", "PLSE": "*fp32"}
FLOATS = {"qk_scale", "sig_b2", "cap", "czeta", "gamma", "power", "scale"}
KERNELS = {"fwd": _flash_fwd, "dq": _flash_bwd_dq, "dkdv": _flash_bwd_dkdv}


def configs(d: int, masked: bool) -> dict:
    kv, dq = BWD_CONFIGS[_tuned_key(d, masked)]
    return {"fwd": FWD_CONFIGS[_tuned_key(d, masked)], "dq": dq, "dkdv": kv}


def compile_one(kind: str, d: int, masked: bool, cfg):
    bm, bn, warps, stages = cfg
    const = dict(GROUP=1, **head_dim_args(d), SCORE=0, CAUSAL=masked, HAS_WINDOW=False, NEIGHBOR=False,
                 DILATED=False, GRID2D=False, BLOCK_SPARSE=False, HAS_ALIBI=False, HAS_RELB=False,
                 BLOCK_M=bm, BLOCK_N=bn, PRECISION="tf32", FAST_APPROX=True)
    return build(KERNELS[kind], const, warps, stages)


def build(fn, const: dict, warps: int, stages: int, pointers=POINTERS):
    sig = {n: "constexpr" if n in const else pointers.get(n, "fp32" if n in FLOATS else "i32") for n in fn.arg_names}
    return triton.compile(ASTSource(fn, sig, const), target=GPUTarget("cuda", 90, 32),
                          options={"num_warps": warps, "num_stages": stages})


def linear_and_decode(d: int):
    """((name, config, compiled kernel), ...) of the linear chunk and decode kernels at head dim d."""
    bt, bv, warps, stages = chunk.CONFIGS[max(64, triton.next_power_of_2(d))]
    lin = build(chunk._chunk_fwd, dict(BK=triton.next_power_of_2(d), BV=bv, BT=bt, HAS_DECAY=True, HAS_GATE=False,
                                       REVERSE=False, STORE_STATE=False, HAS_INIT=False, STATE_ONLY=False,
                                       ROW_DOT=False, PRECISION="tf32"), warps, stages, LINEAR_POINTERS)
    block_d = triton.next_power_of_2(d)
    dec_warps = split.WARPS.get(block_d, 4)
    dec = build(split._decode_partial, dict(GROUP=4, BLOCK_M=16, BLOCK_N=64, BLOCK_D=block_d, PRECISION="tf32",
                                            HAS_LENGTHS=True), dec_warps, 2, DECODE_POINTERS)
    leaned = build(lean._lean_partial, dict(GROUP=4, BLOCK_M=16, BLOCK_N=64, BLOCK_D=block_d, PRECISION="tf32",
                                            HAS_LENGTHS=True, SEARCH=8), dec_warps, 2, DECODE_POINTERS)
    return (("linear fwd", (bt, bv, warps, stages), lin), ("decode split-KV", (16, 64, dec_warps, 2), dec),
            ("decode lean", (16, 64, dec_warps, 2), leaned))


def ptxas_report(ptx: str) -> tuple[int, int]:
    """(registers, spill store bytes) from ptxas -v, trying Triton's bundled ptxas builds."""
    src = Path("/tmp/tile_resources.ptx")
    src.write_text(ptx)
    for exe in sorted((Path(triton.__file__).parent / "backends" / "nvidia" / "bin").glob("ptxas*")):
        run = subprocess.run([str(exe), "-v", "--gpu-name", "sm_90a", str(src), "-o", "/dev/null"],
                             capture_output=True, text=True)
        regs = re.search(r"Used (\d+) registers", run.stderr)
        spills = re.search(r"(\d+) bytes spill stores", run.stderr)
        if run.returncode == 0 and regs:
            return int(regs.group(1)), int(spills.group(1)) if spills else 0
    return -1, -1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dims", default="64,80,96,128,256")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    lines = [f"triton {triton.__version__}, target sm_90, bf16 softmax | command: python {' '.join(sys.argv)}", "",
             f"| D | mask | kernel | tiles (BM, BN, warps, stages) | shared KiB (limit {SMEM_BYTES // 1024}) | "
             "registers / thread | spill bytes |", "|---|---|---|---|---|---|---|"]
    for d in (int(x) for x in args.dims.split(",")):
        for masked in (False, True):
            for kind, cfg in configs(d, masked).items():
                k = compile_one(kind, d, masked, cfg)
                regs, spills = ptxas_report(k.asm["ptx"])
                line = (f"| {d} | {'causal' if masked else 'full'} | {kind} | {cfg} | {k.metadata.shared / 1024:.0f} | "
                        f"{regs} | {spills} |")
                print(line, flush=True)
                lines.append(line)
    lines += ["", "Linear chunk forward (decayed; tiles BT, BV, warps, stages) and the decode kernels (GQA 4, "
              "one token; tiles BLOCK_M, BLOCK_N, warps, stages):", "",
              "| D | kernel | tiles | shared KiB | registers / thread | spill bytes |", "|---|---|---|---|---|---|"]
    for d in (int(x) for x in args.dims.split(",")):
        for name, cfg, k in linear_and_decode(d):
            regs, spills = ptxas_report(k.asm["ptx"])
            lines.append(f"| {d} | {name} | {cfg} | {k.metadata.shared / 1024:.0f} | {regs} | {spills} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
