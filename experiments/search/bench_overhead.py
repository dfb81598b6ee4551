"""Framework overhead per trial and worker scaling of the Ray runner.

Runs the same search twice in one process -- with 1 worker, then with 2 -- each
with its own fresh study and its own local Ray (num_cpus = workers). Every trial
is the real ``evaluate`` of a small MLP on ``digits`` under a seconds budget, so
evaluation time is (nearly) fixed and everything else is the framework's.

Per trial (after each worker's first trial, which pays the actor start):
  slot      = time from the worker's previous trial completing in the driver to
              this trial completing in the driver
  overhead  = slot - evaluate's own wall time (TrialResult.total_seconds)
  parts     = proposal (strategy.ask), storage (store.start + store.finish),
              dispatch in (suggest -> evaluate starts in the worker, includes
              Ray scheduling, config transfer, building the task/derivation)
              and result back (evaluate ends -> on_trial_complete in the driver)
Throughput = steady-state trials/hour (completions after the warm-up window),
and whole-run trials/hour including Ray start and actor start.

    python experiments/search/bench_overhead.py --trials 12 --budget 3s
    python experiments/search/bench_overhead.py --trials 12 --budget 10s
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

GRAMMAR = """\
# 16 MLPs on 8x8 digits: pixels gathered into one 64-wide token, two layers.
start net
net : im2col(k=8, s=8, p=0) linear(out=16|24|32|48) relu linear(out=16|24|32|48)
"""


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run(workers: int, args, folder: Path) -> dict:
    from archgram.search.runner import SearchConfig, run_search

    grammar = folder / "bench.pcfg"
    grammar.write_text(GRAMMAR)
    config = SearchConfig(
        grammar=str(grammar), task="digits", study=str(folder / f"w{workers}.db"), strategy="random",
        trials=args.trials, workers=workers, budget=args.budget, seed=0, cpus_per_trial=1,
    )
    last = {}
    load_before = loadavg()
    t0, c0 = time.time(), cpu_seconds()
    run_search(config, lambda p: last.update(p=p))
    t1, c1 = time.time(), cpu_seconds()
    timings = sorted(last["p"].timings, key=lambda t: t["t_complete"])
    bad = [t for t in timings if t["status"] != "ok"]
    # per-worker slots: first trial of each worker pays the actor start
    by_pid: dict[int, list[dict]] = {}
    for t in timings:
        by_pid.setdefault(t.get("pid", -1), []).append(t)
    rows = []
    for trials in by_pid.values():
        for prev, cur in zip(trials, trials[1:]):
            slot = cur["t_complete"] - prev["t_complete"]
            rows.append({
                "slot": slot,
                "eval": cur["eval_s"],
                "overhead": slot - cur["eval_s"],
                "proposal": cur["ask_s"],
                "storage": cur["store_start_s"] + cur["store_finish_s"],
                "dispatch_in": cur["t_eval_start"] - max(cur["t_suggested"], prev["t_complete"]),
                "result_back": cur["t_complete"] - cur["t_eval_end"],
            })
    # steady state: from the moment every worker has finished its first trial
    warm = max(trials[0]["t_complete"] for trials in by_pid.values())
    after = [t for t in timings if t["t_complete"] > warm]
    steady_hour = 3600 * len(after) / (timings[-1]["t_complete"] - warm) if after else float("nan")

    def med(key):
        return statistics.median(r[key] for r in rows) if rows else float("nan")

    def mean(key):
        return statistics.fmean(r[key] for r in rows) if rows else float("nan")

    return {
        "workers": workers,
        "trials": len(timings),
        "not_ok": len(bad),
        "workers_seen": len(by_pid),
        "load_before": load_before,
        "load_after": loadavg(),
        "wall_s": t1 - t0,
        "to_first_suggest_s": timings and min(t["t_suggested"] for t in timings) - t0,
        "first_complete_s": timings[0]["t_complete"] - t0,
        "driver_cpu_s": c1 - c0,
        "driver_cpu_share": (c1 - c0) / (t1 - t0),
        "eval_s_median": statistics.median(t["eval_s"] for t in timings if t["eval_s"]),
        "slot_s_median": med("slot"),
        "overhead_s_median": med("overhead"),
        "overhead_s_mean": mean("overhead"),
        "overhead_frac_median": med("overhead") / med("slot") if rows else float("nan"),
        "parts_s_mean": {k: mean(k) for k in ("proposal", "storage", "dispatch_in", "result_back")},
        "steady_trials_per_hour": steady_hour,
        "whole_run_trials_per_hour": 3600 * len(timings) / (t1 - t0),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--budget", default="3s")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    print(f"cores={os.cpu_count()} load(1,5,15 min)={loadavg()} budget={args.budget} trials={args.trials}")
    results = []
    with tempfile.TemporaryDirectory(prefix="archgram-bench-") as tmp:
        for w in args.workers:
            r = run(w, args, Path(tmp))
            results.append(r)
            parts = " ".join(f"{k}={v * 1000:.0f}ms" for k, v in r["parts_s_mean"].items())
            print(
                f"workers={w}: trials={r['trials']} (not ok {r['not_ok']}) wall={r['wall_s']:.1f}s "
                f"first suggest at {r['to_first_suggest_s']:.1f}s, first result at {r['first_complete_s']:.1f}s\n"
                f"  eval median {r['eval_s_median']:.2f}s, slot median {r['slot_s_median']:.2f}s, overhead median "
                f"{r['overhead_s_median'] * 1000:.0f}ms (mean {r['overhead_s_mean'] * 1000:.0f}ms) = "
                f"{100 * r['overhead_frac_median']:.1f}% of a slot\n"
                f"  parts (mean): {parts}\n"
                f"  steady {r['steady_trials_per_hour']:.0f} trials/h, whole run "
                f"{r['whole_run_trials_per_hour']:.0f} trials/h; driver CPU {r['driver_cpu_s']:.1f}s "
                f"({100 * r['driver_cpu_share']:.0f}% of a core); load {r['load_before']} -> {r['load_after']}"
            )
    if len(results) >= 2:
        a, b = results[0], results[1]
        print(f"speed-up {b['workers']} vs {a['workers']} workers: steady "
              f"{b['steady_trials_per_hour'] / a['steady_trials_per_hour']:.2f}x, whole run "
              f"{b['whole_run_trials_per_hour'] / a['whole_run_trials_per_hour']:.2f}x")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
