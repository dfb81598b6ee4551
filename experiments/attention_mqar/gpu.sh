#!/usr/bin/env bash
# The sweep as it was run on the GPU: one process per variant, all at once on
# one GPU (each run is launch-bound, so they overlap well), then the report.
set -u
OUT=${1:-experiments/attention_mqar}
ARGS=${ARGS:---vocab 512 --seq-len 256 --kv-pairs 32 --widths 32 64 128 256 --lrs 1e-3 3e-3 --steps 2000 --batch 64 --n-train 20000 --timeout 150}
for v in softmax sigmoid softcap power_law window8 linear lightning nala hebbian; do
  python3 experiments/attention_mqar/run.py --device cuda --out "$OUT" --variants $v $ARGS > "$OUT/log-$v.txt" 2>&1 &
done
wait
python3 experiments/attention_mqar/run.py --out "$OUT" --report
