#!/bin/bash
# GPU call 5 of stop 14 (device tool, carry .gpu): the linear tests on the tuned
# CONFIGS now in chunk.py, and every length timed with the auto / fused / split paths
# side by side (no fla: call 4 timed it at 1k, 16k, 64k).
set -o pipefail
export PYTHONPATH=$PWD/.gpu:$PWD PYTHONUNBUFFERED=1
t0=$SECONDS
timeout 120 python3 -m pytest tests/kernels/test_linear_kernel.py -q -o addopts="" -n 14 -p no:cacheprovider -rfE 2>&1 | tee $OUT/tests_linear_gpu.log | tail -3
echo "tests done: $((SECONDS - t0)) s"
timeout 200 python3 experiments/kernels/bench_linear.py --no-fla --out $OUT 2>&1 | grep '^|'
echo "all done: $((SECONDS - t0)) s"
