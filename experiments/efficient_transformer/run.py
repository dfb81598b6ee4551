"""Best softmax vs best efficient transformer on a generated sequence task (catalog S36).

Random search over archgram/grammars/efficient_transformer.pcfg, which samples the
attention type (softmax; or efficient: a linear/recurrent score, or softmax under a
sparse pattern) jointly with depth, width, heads and FFN ratio. Every trial is the
real evaluator (train under a step budget, score on validation, time a forward).
Architectures are grouped by their attention: all softmax (dense), all efficient,
or hybrid (both, in different layers). The table compares the best of each group:
accuracy, parameters, latency at the task's length and, for the winners, forward
latency at a long sequence where efficient attention is meant to pay off.

    nice -n 10 python experiments/efficient_transformer/run.py                 # ~5 min on 1 core
    python experiments/efficient_transformer/run.py --trials 60 --budget 400steps --max-minutes 20
    python experiments/efficient_transformer/run.py --device cuda --trials 120 --budget 1000steps

Writes results.json and results.md next to this file (or --out).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
#: softmax restricted to these patterns is dense softmax attention
DENSE = ("full", "causal")


def attention_ops(derivation) -> list[dict]:
    return [n.args for n in derivation.ops() if n.op == "attention"]


def is_efficient(args: dict) -> bool:
    """Sub-quadratic: a score other than softmax (the grammar's linear/recurrent ones) or a sparse pattern."""
    return args["score"]["name"] != "softmax" or args["pattern"]["name"] not in DENSE


def attention_kind(derivation) -> str:
    """'softmax' (every attention dense softmax), 'efficient' (every one efficient) or 'hybrid'."""
    kinds = {is_efficient(a) for a in attention_ops(derivation)}
    if not kinds:
        return "none"
    return "hybrid" if len(kinds) == 2 else ("efficient" if kinds == {True} else "softmax")


def describe(derivation) -> dict:
    """Width, depth, heads, FFN ratios and attention variants of one sample of the grammar."""
    ops = derivation.ops()
    width = next(n.args["out"] for n in ops if n.op == "linear")
    lin = [n.args["out"] for n in ops if n.op == "linear"][1:]  # FFN pairs after the width projection
    ratios = [h // width for h in lin[0::2]]
    att = attention_ops(derivation)

    def name(part: dict) -> str:
        extra = ",".join(str(v) for k, v in part.items() if k != "name")
        return part["name"] + (f"({extra})" if extra else "")

    return {"width": width, "depth": len(att), "heads": [a["heads"] for a in att], "ffn_ratio": ratios,
            "attention": [f"{name(a['score'])}/{name(a['pattern'])}/{name(a['position'])}" for a in att]}


def long_latency(derivation, task, length: int, device: str, repeats: int = 3) -> float | None:
    """Median forward ms of the body (batch 1) at ``length`` tokens, or None if it does not type."""
    import archgram

    d = derivation.copy()
    d.input_shape = (1, length, d.input_shape[-1])
    try:
        d.infer_shapes()
        model = archgram.compile(d).to(device).eval()
    except Exception:  # noqa: BLE001 - a pattern that does not tile this length
        return None
    x = torch.randn(d.input_shape, device=device)
    times = []
    with torch.no_grad():
        for i in range(repeats + 1):
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            model(x)
            if device == "cuda":
                torch.cuda.synchronize()
            if i:
                times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="mqar", choices=["mqar", "sort"])
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--budget", default="150steps,20s", help="per trial; the seconds part caps slow samples")
    p.add_argument("--max-minutes", type=float, default=5.0, help="stop starting trials after this long")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--kv-pairs", type=int, default=4)
    p.add_argument("--vocab", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--long-len", type=int, default=2048, help="sequence length of the long-latency column")
    p.add_argument("--out", type=Path, default=HERE)
    args = p.parse_args(argv)

    import archgram
    from archgram.search.evaluator import evaluate
    from archgram.tasks import get_task

    torch.set_num_threads(args.threads)
    if args.task == "mqar":
        task = get_task("mqar", vocab=args.vocab, seq_len=args.seq_len, kv_pairs=args.kv_pairs, d_model=32,
                        n_train=2000, n_val=500)
    else:
        task = get_task("sort", length=args.seq_len, n_train=4000, n_val=500)
    task.data(0)
    grammar = archgram.load_grammar("efficient_transformer")
    shape, target = task.body_input_shape(args.batch_size), task.output_target(args.batch_size)
    rows, started = [], time.perf_counter()
    for i in range(args.trials):
        if time.perf_counter() - started > 60 * args.max_minutes:
            print(f"stopping after {i} trials: --max-minutes {args.max_minutes} reached", file=sys.stderr)
            break
        d = grammar.sample(shape, seed=args.seed * 100003 + i, target=target)
        r = evaluate(d, task, args.budget, seed=args.seed + i, device=args.device, lr=args.lr,
                     train_options={"threads": args.threads})
        row = {"trial": i, "hash": d.hash(), "kind": attention_kind(d), **describe(d), "status": r.status,
               "accuracy": r.score, "params": r.params, "latency_ms": r.latency_ms, "steps": r.steps, "train_s": r.train_seconds,
               "failure": r.failure, "message": r.message[:200], "derivation": json.loads(d.to_json())}
        rows.append(row)
        print(f"[{i + 1}/{args.trials}] {row['kind']:9s} acc={r.score if r.ok else float('nan'):.3f} "
              f"params={r.params or 0:,} w={row['width']} depth={row['depth']} {row['attention'][:1]} "
              f"({r.total_seconds:.1f}s){'' if r.ok else ' FAILED ' + str(r.failure)}", file=sys.stderr, flush=True)
    best = {}
    for kind in ("softmax", "efficient", "hybrid"):
        ok = [r for r in rows if r["kind"] == kind and r["status"] == "ok"]
        if ok:
            top = max(ok, key=lambda r: (r["accuracy"], -r["params"]))
            d = archgram.Derivation.from_dict(top["derivation"])
            top = dict(top, n_ok=len(ok), median_accuracy=statistics.median(r["accuracy"] for r in ok),
                       long_latency_ms=long_latency(d, task, args.long_len, args.device))
            best[kind] = top
    summary = {"config": {k: str(v) for k, v in vars(args).items()}, "device": args.device,
               "torch": torch.__version__, "threads": args.threads, "cpu_count": os.cpu_count(),
               "seconds": time.perf_counter() - started, "best": best, "trials": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(summary, indent=1, default=str))
    table = markdown(summary, args)
    (args.out / "results.md").write_text(table)
    print(table)
    return 0


def markdown(summary: dict, args) -> str:
    lines = [f"task {args.task} (seq_len {args.seq_len}, kv_pairs {args.kv_pairs}, vocab {args.vocab}), "
             f"budget {args.budget}, lr {args.lr}, batch {args.batch_size}, {len(summary['trials'])} random trials, "
             f"device {args.device}, {args.threads} thread(s), {summary['seconds']:.0f} s", "",
             f"| group | ok trials | best acc | median acc | steps | params | latency ms (B={args.batch_size}, N={args.seq_len}) "
             f"| latency ms (B=1, N={args.long_len}) | width | depth | heads | FFN ratio | attention |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for kind, r in summary["best"].items():
        long = f"{r['long_latency_ms']:.1f}" if r.get("long_latency_ms") is not None else "-"
        lines.append(f"| best {kind} | {r['n_ok']} | {r['accuracy']:.3f} | {r['median_accuracy']:.3f} | {r['steps']} | {r['params']:,} "
                     f"| {r['latency_ms']:.2f} | {long} | {r['width']} | {r['depth']} | {r['heads']} | "
                     f"{r['ffn_ratio']} | {'; '.join(sorted(set(r['attention'])))} |")
    failed = sum(r["status"] != "ok" for r in summary["trials"])
    lines += ["", f"failed trials: {failed}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
