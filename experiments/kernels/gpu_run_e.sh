#!/bin/bash
# GPU call of stop 14 (device tool, carry .gpu .whl3; ~9 min): the linear backward
# with the decay gradient's row dots fused into the kernel and the 60%-busy segment
# rule, tested and timed against fla-core in the same run; the score kernels'
# FP32-pipe load next to MUFU and tensor pipes (ncu).
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl3/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/.gpu:$PWD PYTHONUNBUFFERED=1
t0=$SECONDS
timeout 90 python3 -m pytest tests/kernels/test_linear_kernel.py -q -o addopts="" -n 12 -p no:cacheprovider -rfE 2>&1 | tee $OUT/tests_linear_gpu.log | tail -3
echo "tests done: $((SECONDS - t0)) s"
timeout 60 ncu --metrics sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_fma.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_alu.avg.pct_of_peak_sustained_active,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,gpu__time_duration.sum \
  --profile-from-start off -k regex:_flash_fwd python3 experiments/kernels/ncu_scores.py 2>&1 | tee $OUT/ncu_scores.txt | grep -E "profiled|pipe_|hmma|duration" | awk '{print $1, $NF}'
echo "ncu done: $((SECONDS - t0)) s"
timeout 400 python3 experiments/kernels/bench_linear.py --out $OUT 2>&1 | grep '^|'
echo "all done: $((SECONDS - t0)) s"
