"""Distributed search on several GPUs (issue 10): one Ray worker per GPU.

Runs the same search (grammar, task, budget, strategy seed) twice on one
machine: with every GPU (``--gpus-per-trial 1``, one worker per GPU) and with
one GPU, and reports trials per hour for each. The task is MQAR at a size a
GPU is for (256 tokens, width 128, vocabulary 512).

    python experiments/search_gpu/run.py --out $OUT            # on a 2-GPU machine
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from archgram.search.runner import SearchConfig, run_search

TASK_OPTIONS = {"vocab": 512, "seq_len": 256, "kv_pairs": 32, "d_model": 128, "n_train": 20000}


def one_run(gpus: int, trials: int, budget: str, out: Path, grammar: str) -> dict:
    study = out / f"search_{gpus}gpu.db"
    study.unlink(missing_ok=True)
    config = SearchConfig(grammar=grammar, task="mqar", study=str(study), strategy="random", trials=trials,
                          workers=gpus, budget=budget, seed=0, batch_size=64, gpus_per_trial=1.0,
                          cpus_per_trial=1.0, device="cuda", task_options=TASK_OPTIONS)
    t0 = time.perf_counter()
    progress = {}
    store = run_search(config, on_update=lambda p: progress.update(p=p))
    wall = time.perf_counter() - t0
    p = progress["p"]
    starts = [t["t_eval_start"] for t in p.timings if "t_eval_start" in t]
    ends = [t["t_eval_end"] for t in p.timings if "t_eval_end" in t]
    steady = (max(ends) - min(starts)) if starts and ends else wall
    records = store.records()
    ok = [r for r in records if r.ok]
    return {"gpus": gpus, "trials": len(records), "ok": len(ok), "wall_s": round(wall, 1),
            "eval_span_s": round(steady, 1), "trials_per_hour_wall": round(3600 * len(records) / wall),
            "trials_per_hour_eval": round(3600 * len(records) / steady),
            "best": max((r.score for r in ok), default=None)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("experiments/search_gpu"))
    p.add_argument("--budget", default="20s")
    p.add_argument("--trials-per-gpu", type=int, default=4)
    p.add_argument("--grammar", default="attention")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    n = torch.cuda.device_count()
    rows = [one_run(g, args.trials_per_gpu * g, args.budget, args.out, args.grammar) for g in sorted({n, 1})]
    base = next(r for r in rows if r["gpus"] == 1)
    for r in rows:
        r["speedup_wall"] = round(r["trials_per_hour_wall"] / base["trials_per_hour_wall"], 2)
        r["speedup_eval"] = round(r["trials_per_hour_eval"] / base["trials_per_hour_eval"], 2)
    meta = {"device": f"{n} x {torch.cuda.get_device_name()}", "torch": torch.__version__,
            "python": platform.python_version(), "budget": args.budget, "task_options": TASK_OPTIONS,
            "grammar": args.grammar}
    lines = ["| GPUs | trials | ok | wall s | trials/h (wall) | trials/h (eval span) | x 1 GPU (wall / eval) | best acc |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['gpus']} | {r['trials']} | {r['ok']} | {r['wall_s']} | {r['trials_per_hour_wall']} | "
                     f"{r['trials_per_hour_eval']} | {r['speedup_wall']} / {r['speedup_eval']} | {r['best']} |")
    (args.out / "search_gpu.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (args.out / "search_gpu.md").write_text("\n".join(lines) + "\n")
    print(json.dumps(meta))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
