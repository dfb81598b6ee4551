#!/bin/bash
# GPU calls 3 and 4 of stop 14 (device tool, carry .gpu .whl3; ~9 min): tune the linear
# kernel's tiles, write the winner into this copy's chunk.py, run the linear tests
# on it, then time it against fla-core and our softmax in one run.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl3/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/.gpu:$PWD PYTHONUNBUFFERED=1
t0=$SECONDS
for i in 0 1 2 3 4 5 6 7; do timeout 100 python3 experiments/kernels/tune_linear.py --compile-only $i/8 > /tmp/compile_$i.log 2>&1 & done; wait
grep -h error /tmp/compile_*.log | cut -c1-150 | head -12
echo "compiled: $((SECONDS - t0)) s"
timeout 130 python3 experiments/kernels/tune_linear.py --out $OUT 2>&1 | tee $OUT/tune_linear.log | grep -E "^d=|CONFIGS|error" | cut -c1-150
echo "tuned: $((SECONDS - t0)) s"
python3 - <<'PY' || exit 1
import ast, json, os, re
best = {int(d): tuple(c) for d, c in json.load(open(os.environ["OUT"] + "/tune_linear.json"))["CONFIGS"].items()}
p = "archgram/kernels/linear/chunk.py"
s = open(p).read()
cur = ast.literal_eval(re.search(r"^CONFIGS = (\{.*\})$", s, re.M).group(1))
cur.update(best)
s = re.sub(r"^CONFIGS = \{.*\}$", "CONFIGS = " + repr(cur), s, flags=re.M)
open(p, "w").write(s)
print("chunk.py now:", re.search(r"^CONFIGS = .*$", s, re.M).group(0))
PY
timeout 60 python3 -m pytest tests/kernels/test_linear_kernel.py -q -o addopts="" -n 12 -p no:cacheprovider -rfE 2>&1 | tee $OUT/tests_linear_gpu.log | tail -3
echo "tests done: $((SECONDS - t0)) s"
timeout $((560 - (SECONDS - t0))) python3 experiments/kernels/bench_linear.py --lengths 1k,16k,64k --out $OUT 2>&1 | grep '^|'
echo "all done: $((SECONDS - t0)) s"
