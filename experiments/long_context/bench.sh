#!/usr/bin/env bash
# Long-context benchmark (catalog S14) in the unified token-mixing template (S46),
# plus the kernels suite. Usage: experiments/long_context/bench.sh OUT_DIR
set -euo pipefail
OUT=${1:-bench-results}
python3 -m archgram.cli bench --suite long-context --lengths 1k,4k,16k,64k --dtype bf16 \
    --width 512 --heads 8 --tokens 65536 --quadratic-cap 16k --quick --out "$OUT"
python3 -m archgram.cli bench --suite kernels --lengths 1k,4k,16k --dtype bf16 --width 1024 --heads 16 --out "$OUT"
