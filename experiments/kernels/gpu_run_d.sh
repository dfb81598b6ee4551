#!/bin/bash
# GPU call D of stop 13 (device tool, carry .gpu .whl3): the segment-parallel linear
# path and the polynomial softplus, tested and timed.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl3/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/.gpu:$PWD PYTHONUNBUFFERED=1
t0=$SECONDS
timeout 80 python3 -m pytest tests/kernels/test_linear_kernel.py tests/kernels/test_flash.py -k "linear or softplus" -q -o addopts="" -n 12 -p no:cacheprovider -rfE 2>&1 | tail -4
echo "tests done: $((SECONDS - t0)) s"
timeout 110 python3 experiments/kernels/bench_linear.py --lengths 1k,16k,64k --out $OUT 2>&1 | grep '^|'
echo "linear done: $((SECONDS - t0)) s"
timeout 60 python3 experiments/kernels/bench_flash.py --only softplus --out $OUT 2>&1 | grep '^|'
echo "all done: $((SECONDS - t0)) s"
