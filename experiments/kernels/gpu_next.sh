#!/bin/bash
# What issue 7 still needs from a GPU, in one call (device tool, carry .gpu; ~8 min):
# the whole kernel test grid on the final code, the segment-parallel linear path's
# timing, softplus re-timed after lg2.approx, and a hardware profile of the scores.
set -o pipefail
export PYTHONPATH=$PWD/.gpu:$PWD PYTHONUNBUFFERED=1
t0=$SECONDS
timeout 200 python3 -m pytest tests/kernels -q -o addopts="" -n 14 -p no:cacheprovider -rfE 2>&1 | tee $OUT/tests_kernels_gpu.log | tail -6
echo "tests done: $((SECONDS - t0)) s"
timeout 120 python3 experiments/kernels/bench_linear.py --no-fla --out $OUT 2>&1 | grep '^|'
echo "linear done: $((SECONDS - t0)) s"
timeout 60 python3 experiments/kernels/bench_flash.py --only softplus,softcap --out $OUT 2>&1 | grep '^|'
echo "flash done: $((SECONDS - t0)) s"
timeout 90 ncu --metrics sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,gpu__time_duration.sum \
  --profile-from-start off -k regex:_flash_fwd python3 experiments/kernels/ncu_scores.py 2>&1 | tee $OUT/ncu_scores.txt | grep -E "_flash_fwd|pipe_xu|hmma|duration" | head -40
echo "all done: $((SECONDS - t0)) s"
