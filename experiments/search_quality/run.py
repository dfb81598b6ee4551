"""Search-quality benchmark (issue 16): which search method finds the best
architecture for equal compute, measured in training steps.

For every task x method x seed, one search runs in-process
(``archgram.search.loop.run_local``: ask -> train -> tell until the step
budget is spent; no Ray, so machine load cannot change a result), keeps its
best-so-far validation curve against steps spent, and scores its final pick
(chosen on validation) once on the test split. Each task's reference
architecture is trained under the same trial recipe and drawn as a horizontal
line. Independent runs go to ``--jobs`` processes, each on one thread.

    python experiments/search_quality/run.py --out experiments/search_quality/results --jobs 16
    python experiments/search_quality/run.py --quick --out /tmp/sq --jobs 2     # smoke test, ~2 CPU-min

Writes ``runs/<task>__<method>__<seed>.json`` (one per run; an existing file is
reused, so a killed benchmark resumes), ``results.json``, ``table.md`` and
``curves_<task>.png``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

#: task -> grammar, trial budget (steps), total compute per run (steps), recipe overrides.
#: Budgets are small so the full benchmark fits ~150-200 CPU-minutes (see README.md);
#: ``--scale F`` multiplies every run's total compute.
TASKS = {
    "digits": {"grammar": "einspace", "trial": 200, "total": 1600, "recipe": {}},
    "mnist1d": {"grammar": "sequence", "trial": 300, "total": 1500, "recipe": {}},
    "mqar": {"grammar": "sequence", "trial": 200, "total": 1200, "recipe": {}},
    "sort": {"grammar": "sequence", "trial": 200, "total": 1600, "recipe": {}},
}
QUICK = {"digits": {"trial": 40, "total": 160}, "mnist1d": {"trial": 40, "total": 160},
         "mqar": {"trial": 30, "total": 90}, "sort": {"trial": 30, "total": 90}}

#: method -> (base strategy, wrappers): prescreen K (proxy), successive halving (rungs, eta)
METHODS = {
    "random": {"strategy": "random"},
    "evolution": {"strategy": "evolution"},
    "tpe": {"strategy": "tpe"},
    "pcfg-eda": {"strategy": "pcfg-eda"},
    "evolution+sh": {"strategy": "evolution", "rungs": 2, "eta": 3},
    "tpe+sh": {"strategy": "tpe", "rungs": 2, "eta": 3},
    "evolution+prescreen": {"strategy": "evolution", "prescreen": 4, "proxy": "synflow"},
    "evolution+inherit": {"strategy": "evolution", "inherit": True},
    # `archgram search --rungs 2` under its default --inherit: children inherit, promotions continue
    "evolution+inherit+sh": {"strategy": "evolution", "inherit": True, "rungs": 2, "eta": 3},
}


#: the plain search strategies (methods with no budget policy around them, random search aside):
#: issue 16's "every non-random strategy"
STRATEGIES = tuple(m for m, spec in METHODS.items() if set(spec) == {"strategy"} and spec["strategy"] != "random")


def build_strategy(method: dict, grammar, task, batch_size: int, trial_budget: str, seed: int, total_trials: int):
    from archgram.search.fidelity import SuccessiveHalving
    from archgram.search.plan import strategy_options
    from archgram.search.prescreen import Prescreen
    from archgram.search.strategies import get_strategy

    shape = task.body_input_shape(batch_size)
    options = strategy_options(method["strategy"], total_trials, None, None, ("score",))  # as `archgram search` does
    strategy = get_strategy(method["strategy"])(grammar, shape, seed=seed, target=task.output_target(batch_size), **options)
    if method.get("prescreen", 1) > 1:
        strategy = Prescreen(strategy, task, batch_size, k=method["prescreen"], proxy=method.get("proxy", "synflow"),
                             seed=seed)
    if method.get("rungs", 1) > 1:
        strategy = SuccessiveHalving(strategy, trial_budget, rungs=method["rungs"], eta=method.get("eta", 3),
                                     warm_start=method.get("inherit", False))
    return strategy


def one_run(task_name: str, method_name: str, seed: int, cfg: dict, out: str, seed_reference: bool) -> dict:
    """Run one search; write and return its record."""
    import torch

    torch.set_num_threads(1)
    import archgram
    from archgram.search.loop import run_local
    from archgram.search.reference_arch import seed_derivation
    from archgram.tasks import get_task

    path = Path(out) / "runs" / f"{task_name}__{method_name}__{seed}.json"
    if path.is_file():
        return json.loads(path.read_text())
    task = get_task(task_name)
    recipe = task.recipe.override(budget=f"{cfg['trial']}steps", **cfg.get("recipe", {}))
    grammar = archgram.load_grammar(cfg["grammar"])
    method = METHODS[method_name]
    strategy = build_strategy(method, grammar, task, recipe.batch_size, recipe.budget, seed,
                              cfg["total"] // cfg["trial"])
    if seed_reference:
        ref = seed_derivation(task, grammar, recipe.batch_size)
        if ref is not None:
            strategy.enqueue(ref, origin="reference")
    t0 = time.time()
    result = run_local(strategy, task, recipe, cfg["total"], seed=seed, threads=1, inherit=method.get("inherit", False))
    record = {"task": task_name, "method": method_name, "seed": seed, "grammar": cfg["grammar"],
              "recipe": recipe.to_dict(), "total": cfg["total"], "steps": result.steps, "best": result.best,
              "test": result.test, "best_trial": result.best_trial, "seconds": time.time() - t0,
              "cpu_seconds": sum(t.get("cpu_seconds", 0.0) for t in result.trials),
              "trials": result.trials}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return record


def reference_run(task_name: str, cfg: dict, out: str) -> dict:
    """The task's reference under the benchmark's trial recipe (3 training seeds)."""
    import torch

    torch.set_num_threads(1)
    from archgram.search.reference_arch import evaluate_reference
    from archgram.tasks import get_task

    path = Path(out) / "runs" / f"{task_name}__reference.json"
    if path.is_file():
        return json.loads(path.read_text())
    task = get_task(task_name)
    recipe = task.recipe.override(budget=f"{cfg['trial']}steps", **cfg.get("recipe", {}))
    scores = []
    for seed in range(3):
        try:
            scores.append(evaluate_reference(task, recipe, seed=seed)["validation"])
        except Exception as exc:  # noqa: BLE001 - a reference the short recipe cannot train is reported as such
            scores.append(None)
            print(f"reference {task_name} seed {seed}: {exc}", file=sys.stderr)
    record = {"task": task_name, "recipe": recipe.to_dict(), "validation": scores}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return record


# ------------------------------------------------------------------ report
def curve_on_grid(trials: list[dict], grid: list[int]) -> list[float]:
    """Best-so-far validation at each compute point (NaN before the first success)."""
    out, i, best = [], 0, math.nan
    for g in grid:
        while i < len(trials) and trials[i]["spent"] <= g:
            if trials[i]["best"] is not None:
                best = trials[i]["best"]
            i += 1
        out.append(best)
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return math.nan, math.nan
    return statistics.fmean(vals), statistics.pstdev(vals) if len(vals) > 1 else 0.0


def compute_to_reach(curve: list[float], grid: list[int], target: float) -> int | None:
    for g, v in zip(grid, curve):
        if not math.isnan(v) and v >= target:
            return g
    return None


def paired_wins(mine: dict, random: dict) -> tuple[int, int]:
    """Seeds where this method's final score is at least random search's on the same seed, out of the
    seeds both ran: a paired count, less at the mercy of one lucky seed than a difference of means."""
    both = [s for s in mine if s in random and mine[s] is not None and random[s] is not None]
    return sum(mine[s] >= random[s] for s in both), len(both)


def target_lines(summary: dict) -> list[str]:
    """Issue 16's target, per task: is every non-random strategy (the registered search strategies) and
    every method (budget policies included) at least random search in mean final validation?"""
    lines = ["", "| task | every strategy >= random | every method >= random | below random |", "|---|---|---|---|"]
    for task, t in summary["tasks"].items():
        verdicts = {m: v["at_least_random"] for m, v in t["methods"].items() if v["at_least_random"] is not None}
        strategies = {m: ok for m, ok in verdicts.items() if m in STRATEGIES}
        losers = ", ".join(m for m, ok in verdicts.items() if not ok) or "-"
        lines.append(f"| {task} | {_yes(strategies)} | {_yes(verdicts)} | {losers} |")
    return lines


def _yes(verdicts: dict) -> str:
    return "-" if not verdicts else ("yes" if all(verdicts.values()) else "**no**")


def report(runs: list[dict], refs: dict[str, dict], out: Path) -> dict:
    summary: dict = {"tasks": {}}
    lines = ["| task | method | final validation (mean ± std) | final pick test (mean ± std) | >= random | "
             "seeds >= random | compute to reach random's final | CPU-min per run | runs |",
             "|---|---|---|---|---|---|---|---|---|"]
    for task in TASKS:
        task_runs = [r for r in runs if r["task"] == task]
        if not task_runs:
            continue
        total = max(r["total"] for r in task_runs)
        grid = [round(total * k / 50) for k in range(1, 51)]
        methods = {}
        for m in METHODS:
            rs = [r for r in task_runs if r["method"] == m]
            if not rs:
                continue
            curves = [curve_on_grid(r["trials"], grid) for r in rs]
            mean_curve = [mean_std([c[i] for c in curves])[0] for i in range(len(grid))]
            methods[m] = {"final": mean_std([r["best"] for r in rs]), "test": mean_std([r["test"] for r in rs]),
                          "curve": mean_curve, "std": [mean_std([c[i] for c in curves])[1] for i in range(len(grid))],
                          "runs": len(rs), "by_seed": {r["seed"]: r["best"] for r in rs},
                          "cpu_minutes": statistics.fmean(r.get("cpu_seconds", r["seconds"]) for r in rs) / 60}
        random_final = methods.get("random", {}).get("final", (math.nan,))[0]
        ref = refs.get(task, {})
        ref_mean = mean_std(ref.get("validation") or [])
        for m, v in methods.items():
            reach = compute_to_reach(v["curve"], grid, random_final) if not math.isnan(random_final) else None
            v["reach_random"] = None if reach is None else reach / total
            v["at_least_random"] = None if m == "random" else bool(v["final"][0] >= random_final)
            v["paired"] = None if m == "random" else paired_wins(v["by_seed"], methods.get("random", {}).get("by_seed", {}))
            verdict = {None: "", True: "yes", False: "**no**"}[v["at_least_random"]]
            paired = "" if v["paired"] is None else f"{v['paired'][0]}/{v['paired'][1]}"
            lines.append(f"| {task} | {m} | {v['final'][0]:.4f} ± {v['final'][1]:.4f} | {v['test'][0]:.4f} ± "
                         f"{v['test'][1]:.4f} | {verdict} | {paired} | {'-' if reach is None else f'{reach / total:.2f}'} | "
                         f"{v['cpu_minutes']:.1f} | {v['runs']} |")
        lines.append(f"| {task} | *reference* | {ref_mean[0]:.4f} ± {ref_mean[1]:.4f} | | | | | | |")
        summary["tasks"][task] = {"grid": grid, "methods": methods, "reference": ref}
        _plot(task, grid, methods, ref_mean[0], out / f"curves_{task}.png")
    table = "\n".join(lines + target_lines(summary)) + "\n"
    (out / "table.md").write_text(table)
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    print(table)
    return summary


def _plot(task: str, grid: list[int], methods: dict, ref: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for m, v in methods.items():
        mean = v["curve"]
        std = v["std"]
        ax.plot(grid, mean, label=m)
        ax.fill_between(grid, [a - b for a, b in zip(mean, std)], [a + b for a, b in zip(mean, std)], alpha=0.15)
    if not math.isnan(ref):
        ax.axhline(ref, color="black", linestyle="--", linewidth=1, label="reference")
    ax.set_xlabel("compute (training steps)")
    ax.set_ylabel("best validation score so far")
    ax.set_title(f"{task}: mean ± std over seeds")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report_existing(out: Path) -> dict:
    """The report over every finished run in ``out/runs`` (seeds may differ per task)."""
    runs, refs = [], {}
    for path in sorted((out / "runs").glob("*.json")):
        record = json.loads(path.read_text())
        if path.stem.endswith("__reference"):
            refs[record["task"]] = record
        else:
            runs.append(record)
    if not runs:
        sys.exit(f"no benchmark runs in {out / 'runs'}: run without --report first (see the docstring)")
    summary = report(runs, refs, out)
    summary["cpu_minutes"] = sum(r.get("cpu_seconds", r["seconds"]) for r in runs) / 60
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("experiments/search_quality/results"))
    p.add_argument("--jobs", type=int, default=1, help="parallel processes, one thread each")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--quick", action="store_true", help="tiny budgets: checks the pipeline, not the methods")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every run's total compute (more trials per run)")
    p.add_argument("--seed-reference", action="store_true",
                   help="start every search from the task's reference where the grammar can express it")
    p.add_argument("--report", action="store_true",
                   help="run nothing: the table and curves over every run already in OUT/runs")
    args = p.parse_args(argv)
    if args.report:
        report_existing(args.out)
        return
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    configs = {t: {**TASKS[t], **(QUICK[t] if args.quick else {})} for t in args.tasks}
    for cfg in configs.values():
        cfg["total"] = max(cfg["trial"], round(cfg["total"] * args.scale))
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(t, m, s) for t in args.tasks for m in args.methods for s in range(args.seeds)]
    started = time.time()
    runs, refs = [], {}
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        ref_futures = {pool.submit(reference_run, t, configs[t], str(args.out)): t for t in args.tasks}
        futures = {pool.submit(one_run, t, m, s, configs[t], str(args.out), args.seed_reference): (t, m, s)
                   for t, m, s in jobs}
        for f in as_completed(list(ref_futures) + list(futures)):
            if f in ref_futures:
                refs[ref_futures[f]] = f.result()
                continue
            r = f.result()
            runs.append(r)
            print(f"[{len(runs)}/{len(jobs)}] {r['task']} {r['method']} seed {r['seed']}: best {r['best']} "
                  f"test {r['test']} ({r['seconds']:.0f}s, {len(r['trials'])} trials)", flush=True)
    cpu = sum(r.get("cpu_seconds", r["seconds"]) for r in runs)
    print(f"{len(runs)} runs, {cpu / 60:.1f} CPU-minutes of training (process CPU time, load-independent), "
          f"{(time.time() - started) / 60:.1f} minutes wall")
    for t in args.tasks:
        mine = [r for r in runs if r["task"] == t]
        if mine:
            print(f"  {t}: {sum(r.get('cpu_seconds', r['seconds']) for r in mine) / len(mine) / 60:.2f} CPU-minutes per run")
    summary = report(runs, refs, args.out)
    summary["command"] = " ".join([sys.executable.split("/")[-1]] + sys.argv)
    summary["cpu_minutes"] = cpu / 60
    (args.out / "results.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
