"""Issue 17 target: per-trial overhead of the data path below 2% of a 10 s trial
on a 50 MB dataset. Two searches with a 10 s budget, one on a 50 MB uint8 image
array and one on a tiny array of the same image shape; per trial, the driver's
stamps give the time from the trial's proposal to the start of training
(scheduling, fetching the task from Ray's object store, building the tensor
views) and the training time. The data path's overhead is the difference of
the medians between the two runs. A second, direct measurement times, inside a
Ray worker, fetching the 50 MB task from the object store and building its
tensors (what each trial does before training).

    python experiments/own_data/overhead.py --mb 50 --out OUT
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
GRAMMAR = "start net\nnet : conv2d(out=8|16, k=3) relu conv2d(out=8|16, k=3) relu\n"
SHAPE = (3, 32, 32)


def arrays(n: int):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, *SHAPE), dtype=np.uint8)
    y = np.arange(n) % 10
    return x, y


def search(x, y, grammar: Path, study: Path, budget: str, trials: int, workers: int) -> list[dict]:
    import archgram

    progress = []
    archgram.search(str(grammar), data=(x, y), trials=trials, workers=workers, budget=budget, batch_size=32,
                    study=study, strategy="random", on_update=progress.append)
    return progress[-1].timings


def summary(timings: list[dict]) -> dict:
    pre = [t["t_eval_start"] - t["t_suggested"] for t in timings if "t_eval_start" in t]
    enter = [t["t_eval_start"] - t["t_enter"] for t in timings if "t_eval_start" in t]
    ev = [t["eval_s"] for t in timings if t.get("eval_s")]
    return {"trials": len(timings), "proposal_to_training_s": statistics.median(pre),
            "entry_to_training_s": statistics.median(enter), "evaluate_s": statistics.median(ev)}


def direct(x, y, repeats: int = 5) -> dict:
    """Inside a Ray worker: fetch the task from the object store and build its
    tensors, as each trial does; median over ``repeats`` fresh fetches."""
    import ray

    from archgram.tasks.data import from_arrays

    task = from_arrays(x, y)
    ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        ref = ray.put(task)

        @ray.remote
        def fetch(refs):
            t0 = time.perf_counter()
            t = ray.get(refs[0])
            d = t.data(0)
            xb = d.x_train[:32].float()
            return time.perf_counter() - t0, int(xb.numel())

        times = [ray.get(fetch.remote([ref]))[0] for _ in range(repeats)]
    finally:
        ray.shutdown()
    return {"fetch_and_views_s": statistics.median(times), "all_s": times}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=50)
    ap.add_argument("--budget", default="10s")
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("own_data_overhead"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    grammar = args.out / "tiny_cnn.pcfg"
    grammar.write_text(GRAMMAR)
    big = arrays(int(args.mb * 1e6 / np.prod(SHAPE)))
    tiny = arrays(2000)
    report = {"direct": direct(*big)}
    report["data"] = summary(search(*big, grammar, args.out / "big.db", args.budget, args.trials, args.workers))
    report["baseline"] = summary(search(*tiny, grammar, args.out / "tiny.db", args.budget, args.trials, args.workers))
    extra = report["data"]["proposal_to_training_s"] - report["baseline"]["proposal_to_training_s"]
    report["overhead_s"] = extra
    report["overhead_share_of_trial"] = extra / 10.0
    report["direct_share_of_trial"] = report["direct"]["fetch_and_views_s"] / 10.0
    report["dataset_mb"] = big[0].nbytes / 1e6
    report["command"] = " ".join([sys.executable, *sys.argv])
    (args.out / "overhead.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "command"}, indent=1))


if __name__ == "__main__":
    main()
