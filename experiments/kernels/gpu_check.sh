#!/bin/bash
# The flash kernels on one GPU, in one call (~7 minutes on an H100):
#  1. bench_flash.py: our softmax forward and forward+backward against FlexAttention
#     (torch.compile'd) and SDPA-flash in the same process, full and causal, bf16,
#     8 x 4096 tokens, 16 heads, at head dims DIMS (default 64,80,96,128,256: 64 and
#     128 are the anchors whose tiles were tuned), plus the forward at a few candidate
#     tile configs for the padded head dims (BLOCK_D 128 and 256);
#  2. the kernel test grid, GPU cases included (tests/kernels, -m "not slow"): every
#     score and mask at every head dim 16-256 against the float64 reference.
#
#   experiments/kernels/gpu_check.sh OUT [DIMS]
#
# Writes OUT/env.txt, OUT/bench_flash.md|json|log, OUT/tests_kernels_gpu.log. Needs
# torch, triton, pytest and pytest-xdist only: the kernel tests and bench_flash.py
# import no lark / ray / optuna, so no wheels are carried. Time limits per step:
# BENCH_S (default 250 s) and TESTS_S (200 s); WORKERS pytest processes (15).
set -o pipefail
OUT=${1:?usage: experiments/kernels/gpu_check.sh OUT [DIMS]}
DIMS=${2:-64,80,96,128,256}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
t0=$SECONDS
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  python3 -c "import sys, torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'python', sys.version.split()[0])"
} 2>&1 | tee "$OUT/env.txt"

timeout "${BENCH_S:-250}" python3 experiments/kernels/bench_flash.py --quick --dims "$DIMS" --tiles --no-sweep \
  --out "$OUT" > "$OUT/bench_flash.log" 2>&1
echo "bench_flash: exit $?, $((SECONDS - t0)) s"
grep '^|' "$OUT/bench_flash.md"

timeout "${TESTS_S:-200}" python3 -m pytest tests/kernels -q -o addopts="" -m "not slow" -n "${WORKERS:-15}" \
  -p no:cacheprovider -rfE 2>&1 | tee "$OUT/tests_kernels_gpu.log" | tail -15
echo "tests: exit $?, $((SECONDS - t0)) s"
