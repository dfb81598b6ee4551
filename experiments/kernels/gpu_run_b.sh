#!/bin/bash
# GPU call B of stop 13 (device tool, carry .gpu): the full kernel test grid (8
# pytest workers: Triton compiles dominate), then the flash benchmark with every score.
set -o pipefail
export PYTHONPATH=$PWD/.gpu:$PWD PYTHONUNBUFFERED=1
t0=$SECONDS
timeout 280 python3 -m pytest tests/kernels -q -o addopts="" -n 8 -p no:cacheprovider -rfE 2>&1 | tee $OUT/tests_kernels_gpu.log | tail -25
echo "tests done: $((SECONDS - t0)) s"
timeout 290 python3 experiments/kernels/bench_flash.py --out $OUT 2>&1 | grep -v '^{' | tail -40
echo "all done: $((SECONDS - t0)) s"
