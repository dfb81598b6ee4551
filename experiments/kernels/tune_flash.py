"""Time the flash backward over a few tile configs per head dim (bf16, 8 x 4096,
16 heads, softmax, full and causal); prints the best, to copy into
archgram/kernels/flash/common.py BWD_CONFIGS. python experiments/kernels/tune_flash.py"""
import itertools
import json

import torch
import triton

from archgram.kernels.flash import common, flash_attention

KV = [(64, 64, 8, 2), (32, 128, 4, 3), (64, 128, 8, 2), (32, 64, 4, 3)]
Q = [(64, 64, 8, 2), (128, 32, 4, 3), (128, 64, 8, 2)]
for d in (128,):
    q, k, v = (torch.randn(8, 16, 4096, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    do = torch.randn_like(q)
    res = []
    for kv, qc in itertools.product(KV, Q):
        common.BWD_CONFIGS[d] = (kv, qc)
        try:
            ms = sum(triton.testing.do_bench(lambda c=c, t=(q, k, v, do): torch.autograd.grad(
                flash_attention(*t[:3], causal=c), t[:3], t[3]), warmup=10, rep=40, return_mode="median")
                for c in (False,))
        except Exception as e:  # out of resources etc.
            ms = float("inf")
            print(kv, qc, type(e).__name__, str(e)[:80])
        res.append((ms, kv, qc))
        print(json.dumps({"d": d, "kv": kv, "q": qc, "ms": ms}), flush=True)
    res.sort()
    print("BEST", d, res[:3], flush=True)
