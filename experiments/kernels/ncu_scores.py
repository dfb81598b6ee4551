"""One forward launch per score function, for a hardware profile of where each
score's time goes (MUFU vs tensor pipes). Run under Nsight Compute:

  ncu --metrics sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active,\\
sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,gpu__time_duration.sum \\
      -k regex:_flash_fwd python3 experiments/kernels/ncu_scores.py

bf16, 8 x 4096 tokens, 16 heads of 64, full attention (softcap and softplus
causal, as in bench_flash.py). Each score is compiled by a first call outside
the profiled range (cudaProfilerStart/Stop), then launched once inside it.
"""
import torch

from archgram.kernels.flash.forward import flash_forward

CASES = [("softmax", {}), ("softmax", {"causal": True}), ("sigmoid", {}), ("softcap", {"causal": True}),
         ("softplus", {"causal": True}), ("clipped", {})]


def main():
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(8, 16, 4096, 64, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
    for score, kw in CASES:  # compile outside the profiled range
        flash_forward(q, k, v, score=score, cap=20.0, **kw)
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStart()
    for score, kw in CASES:
        flash_forward(q, k, v, score=score, cap=20.0, **kw)
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStop()
    print("profiled:", ", ".join(f"{s} {kw}" for s, kw in CASES))


if __name__ == "__main__":
    main()
