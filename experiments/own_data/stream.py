"""Data larger than memory: the cost of reading training batches from a
memory-mapped .npy folder in the trial's process (loader_workers=0) and through
a DataLoader with 2 worker processes, on a 50 MB uint8 image array.

    python experiments/own_data/stream.py --mb 50 --batches 200
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from archgram.search.evaluator import train_batches  # noqa: E402
from archgram.tasks.data import from_path  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=50)
    ap.add_argument("--batches", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        n = int(args.mb * 1e6 / 3072)
        rng = np.random.default_rng(0)
        np.save(Path(tmp) / "x.npy", rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8))
        np.save(Path(tmp) / "y.npy", np.arange(n) % 10)
        for workers in (0, 2):
            data = from_path(tmp, loader_workers=workers).data(0)
            t0 = time.perf_counter()
            batches = train_batches(data, 32, torch.Generator().manual_seed(0), torch.device("cpu"))
            next(batches)
            t1 = time.perf_counter()
            for _ in range(args.batches):
                next(batches)
            t2 = time.perf_counter()
            batches.close()
            print(f"loader_workers={workers}: first batch {1000 * (t1 - t0):.0f} ms, then "
                  f"{1000 * (t2 - t1) / args.batches:.2f} ms per batch of 32")


if __name__ == "__main__":
    main()
