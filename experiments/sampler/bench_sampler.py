"""Sampling and compiling throughput on one CPU core.

Target (foundation issue): from einspace.pcfg at input 8x3x32x32, sampling alone
>= 500 architectures/s and sampling plus compiling >= 100/s.

    taskset -c 0 python experiments/sampler/bench_sampler.py --n 1000

Prints a JSON line per measurement; see README.md beside this file for results.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch

import archgram
from archgram.shapes import parse_shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grammar", default="einspace")
    parser.add_argument("--input-shape", default="8,3,32,32")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    shape = parse_shape(args.input_shape)
    grammar = archgram.load_grammar(args.grammar)
    for i in range(50):  # warm caches (op param counts, imports)
        grammar.sample(shape, seed=10_000_000 + i)

    start = time.perf_counter()
    rejections = restarts = 0
    derivations = []
    for i in range(args.n):
        d = grammar.sample(shape, seed=args.seed + i)
        rejections += d.stats["rejections"]
        restarts += d.stats["restarts"]
        derivations.append(d)
    sample_s = time.perf_counter() - start

    start = time.perf_counter()
    params = 0
    for d in derivations:
        params += archgram.compile(d).num_params()
    compile_s = time.perf_counter() - start

    result = {
        "grammar": args.grammar,
        "input_shape": list(shape),
        "n": args.n,
        "sample_per_s": round(args.n / sample_s, 1),
        "compile_per_s": round(args.n / compile_s, 1),
        "sample_and_compile_per_s": round(args.n / (sample_s + compile_s), 1),
        "rejections_per_sample": round(rejections / args.n, 2),
        "restarts_per_sample": round(restarts / args.n, 3),
        "mean_params": round(params / args.n),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
