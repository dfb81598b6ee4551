"""Numbers behind the claim tests of catalog rows S41-S60 that measure something
(rather than compare to a formula), over more seeds and sizes than the tests use.

    PYTHONPATH=$PWD python experiments/catalog_fidelity/measure_s41_s60.py

CPU, one thread, about a minute. Prints one line per measurement.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from archgram.analysis.experts import distinctive_experts, tune_experts
from archgram.ops import get_op

ROOT = Path(__file__).resolve().parents[2]
ATTN = get_op("attention")


def _load(path: str):
    spec = importlib.util.spec_from_file_location(Path(path).stem, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def flops(shape, **args) -> int:
    m = ATTN.build(shape, ATTN.bind(args)).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        m(torch.randn(shape))
    return counter.get_total_flops()


def csa() -> None:
    fit = _load("tests/ops/test_vision.py")._fit_csa_selection
    for seed in range(4):
        print(f"S51 CSA seed {seed}: held-out MSE/var, scores from R {fit(True, seed):.3f}, self-gated {fit(False, seed):.3f}")


def mote() -> None:
    train = _load("tests/ops/test_moe_tuning.py")._trained_two_behaviour_moe
    for seed in range(3):
        model, (xa, ya), (xb, yb) = train(seed)

        def err(x, y, model=model):
            with torch.no_grad():
                return (model(x) - y).square().mean().item()

        ranked = distinctive_experts(model, [xa], [xb], top=None)
        base = err(xa, ya), err(xb, yb)
        tune_experts(model, disable=[(d.layer, d.expert) for d in ranked[:2]])
        top = err(xa, ya), err(xb, yb)
        least = sorted(ranked, key=lambda d: abs(d.difference))[:2]
        tune_experts(model, disable=[(d.layer, d.expert) for d in least])
        rnd = err(xa, ya), err(xb, yb)
        tune_experts(model, disable=[], force=[(ranked[0].layer, ranked[0].expert)])
        forced = err(xb, yb)
        print(f"S53 MoTE seed {seed}: MSE A/B base {base[0]:.3f}/{base[1]:.3f}; top-2 distinctive off "
              f"{top[0]:.3f}/{top[1]:.3f}; 2 least distinctive off {rnd[0]:.3f}/{rnd[1]:.3f}; "
              f"top expert forced on B {forced:.3f}")


def costs() -> None:
    for n in (256, 512, 1024):
        mha, sqa = flops((1, n, 64), heads=8), flops((1, n, 64), heads=8, layout={"name": "sqa", "query_heads": 2})
        print(f"S42 SQA N={n}: total FLOPs MHA {mha:,} vs SQA(Hq=2 of 8) {sqa:,} ({sqa / mha:.3f})")
    for side in (16, 32):
        shape = (1, 32, side, side)
        mha, ssa = flops(shape, heads=2), flops(shape, heads=2, layout={"name": "ssa", "reduction": 2, "width": 1})
        print(f"S43 SSA {side}x{side}: total FLOPs MHA {mha:,} vs SSA(r=2, width=1) {ssa:,} ({ssa / mha:.3f})")
    for n in (512, 1024, 2048, 4096):
        soft = flops((1, n, 32), heads=2, causal=True)
        light = flops((1, n, 32), heads=2, causal=True, score={"name": "lightning", "block": 64})
        tsa = flops((1, n, 32), heads=2, pattern={"name": "token_select", "keep": 64, "by": "norm"})
        print(f"S48/S60 N={n}: FLOPs per token softmax {soft / n:,.0f}, lightning {light / n:,.0f}, "
              f"token_select(keep=64, by=norm) {tsa / n:,.0f}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    csa()
    mote()
    costs()
