#!/bin/bash
# GPU call A of stop 13 (device tool, carry .gpu .whl3): tile tuning of the flash
# kernels, the linear/decode kernel tests, the linear-attention benchmark with fla.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl3/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/.gpu:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
t0=$SECONDS
for i in 0 1 2 3 4 5 6 7; do
  timeout 200 python3 experiments/kernels/tune_flash.py --compile-only $i/8 > /tmp/compile_$i.log 2>&1 &
done
wait
echo "compile: $((SECONDS - t0)) s"; grep -h "Error\|inf" /tmp/compile_*.log | head -20
timeout 150 python3 experiments/kernels/tune_flash.py --out $OUT 2>&1 | tail -14
echo "tune done: $((SECONDS - t0)) s"
timeout 150 python3 -m pytest tests/kernels/test_linear_kernel.py tests/kernels/test_decode_kernel.py -q -o addopts="" -n 8 -p no:cacheprovider 2>&1 | tail -5
echo "tests done: $((SECONDS - t0)) s"
timeout 200 python3 experiments/kernels/bench_linear.py --out $OUT 2>&1 | tail -32
echo "all done: $((SECONDS - t0)) s"
