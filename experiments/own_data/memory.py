"""Issue 17 item 4: a 1 GB uint8 image array searched with 2 workers on one
machine, without a copy per worker. Runs the same search twice in child
processes, on the big array and on a tiny one of the same image shape (the
baseline), and reports the peak memory of each process tree (PSS, so shared
pages count once) by role: driver, Ray's own processes (raylet, which holds
the object store), and workers; plus each worker's peak RSS and private USS.

    python experiments/own_data/memory.py --gb 1.0 --workers 2 --out OUT
    python experiments/own_data/memory.py --gb 1.0 --workers 2 --npy --out OUT    # memory-mapped .npy folder
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
GRAMMAR = "start net\nnet : conv2d(out=8|16, k=3) relu conv2d(out=8|16, k=3) relu\n"
SHAPE = (3, 32, 32)


def make(path: Path, n: int, n_eval: int = 1000, npy: bool = False) -> float:
    """An .npz file, or (``npy``) a folder of .npy files whose inputs are memory-mapped."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, *SHAPE), dtype=np.uint8)
    y = rng.integers(0, 10, n)
    xe = rng.integers(0, 256, (n_eval, *SHAPE), dtype=np.uint8)
    ye = rng.integers(0, 10, n_eval)
    ye[:10] = np.arange(10)
    y[:10] = np.arange(10)
    arrays = {"x": x, "y": y, "x_val": xe, "y_val": ye, "x_test": xe, "y_test": ye}
    if npy:
        path.mkdir()
        for k, v in arrays.items():
            np.save(path / f"{k}.npy", v)
    else:
        np.savez(path, **arrays)
    return x.nbytes / 1e9


def child(args) -> None:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(HERE))
    from procmem import Sampler

    import archgram

    t0 = time.time()
    with Sampler() as s:
        study = archgram.search(args.grammar, data=args.data, trials=args.trials, workers=args.workers,
                                budget=args.budget, batch_size=32, study=args.study, strategy="random",
                                reference=False, data_options={"loader_workers": args.loader_workers})
        s.sample()
    out = {"peak_bytes": s.peak, "workers": {str(k): v for k, v in s.workers.items()},
           "trials": len(study.trials()), "ok": sum(r.ok for r in study.trials()), "seconds": time.time() - t0}
    Path(args.result).write_text(json.dumps(out, indent=1))


def run(data: Path, study: Path, result: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--child", "--data", str(data), "--study", str(study), "--result", str(result),
           "--workers", str(args.workers), "--trials", str(args.trials), "--budget", args.budget,
           "--grammar", args.grammar, "--loader-workers", str(args.loader_workers)]
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return json.loads(result.read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--budget", default="20steps")
    ap.add_argument("--out", type=Path, default=Path("own_data_memory"))
    ap.add_argument("--npy", action="store_true", help="a folder of .npy files (memory-mapped) instead of an .npz")
    ap.add_argument("--loader-workers", type=int, default=2, help="DataLoader workers per trial (.npy folders)")
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--data"), ap.add_argument("--study"), ap.add_argument("--result"), ap.add_argument("--grammar")
    args = ap.parse_args()
    if args.child:
        return child(args)
    args.out.mkdir(parents=True, exist_ok=True)
    grammar = args.out / "tiny_cnn.pcfg"
    grammar.write_text(GRAMMAR)
    args.grammar = str(grammar)
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        tmp = Path(tmp)
        n_big = int(args.gb * 1e9 / np.prod(SHAPE))
        suffix = "" if args.npy else ".npz"
        big_gb = make(tmp / f"big{suffix}", n_big, npy=args.npy)
        make(tmp / f"tiny{suffix}", 2000, npy=args.npy)
        runs = {"baseline": run(tmp / f"tiny{suffix}", tmp / "tiny.db", tmp / "tiny.json", args),
                "data": run(tmp / f"big{suffix}", tmp / "big.db", tmp / "big.json", args)}
    gib = 2 ** 30
    report = {"array_gb": big_gb, "array_shape": [n_big, *SHAPE], "workers": args.workers, "npy": args.npy,
              "runs": runs,
              "above_baseline_gib": {k: (runs["data"]["peak_bytes"][k] - runs["baseline"]["peak_bytes"][k]) / gib
                                     for k in runs["data"]["peak_bytes"]},
              "command": " ".join([sys.executable, *sys.argv])}
    (args.out / ("memory_npy.json" if args.npy else "memory.json")).write_text(json.dumps(report, indent=1))
    print(json.dumps({k: round(v, 3) for k, v in report["above_baseline_gib"].items()}))
    for name, r in runs.items():
        ws = list(r["workers"].values())
        print(name, {k: round(v / gib, 3) for k, v in r["peak_bytes"].items()},
              "per worker (GiB) rss/uss:", [(round(w["rss"] / gib, 3), round(w["uss"] / gib, 3)) for w in ws])


if __name__ == "__main__":
    main()
