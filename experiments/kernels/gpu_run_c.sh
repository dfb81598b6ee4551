#!/bin/bash
# GPU call C of stop 13 (device tool, carry .gpu .whl3): the kernel test grid
# again after the softplus/sigmoid/scan changes, then the linear, flash and decode benchmarks.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl3/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/.gpu:$PWD PYTHONUNBUFFERED=1
t0=$SECONDS
timeout 215 python3 -m pytest tests/kernels -q -o addopts="" -n 8 -p no:cacheprovider -rfE 2>&1 | tee $OUT/tests_kernels_gpu.log | tail -8
echo "tests done: $((SECONDS - t0)) s"
timeout 130 python3 experiments/kernels/bench_linear.py --lengths 1k,4k,16k,32k,64k --out $OUT 2>&1 | grep '^|'
echo "linear done: $((SECONDS - t0)) s"
timeout 40 python3 experiments/kernels/bench_decode.py --out $OUT 2>&1 | grep '^|'
echo "decode done: $((SECONDS - t0)) s"
timeout 175 python3 experiments/kernels/bench_flash.py --out $OUT 2>&1 | grep -v '^{' | tail -40
echo "all done: $((SECONDS - t0)) s"
