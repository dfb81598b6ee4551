#!/usr/bin/env bash
# MNIST-1D study: regularized evolution vs random search over einspace.pcfg.
# Same trial count, budget, batch size and seed for both strategies; step
# budgets make the scores independent of machine load (120 s caps a slow trial).
set -euo pipefail
cd "$(dirname "$0")"
TRIALS=${TRIALS:-24}
BUDGET=${BUDGET:-1000steps,120s}
for strategy in evolution random; do
  archgram search einspace --task mnist1d --strategy "$strategy" --trials "$TRIALS" --workers 2 \
      --budget "$BUDGET" --seed 0 --study "runs/$strategy.db" ${EXTRA:-}
done
python report.py runs/evolution.db runs/random.db --out .
