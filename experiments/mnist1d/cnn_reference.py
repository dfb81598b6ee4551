"""A plain 1D CNN (the mnist1d paper's shape) through archgram's evaluator on the
same data, under two training recipes: the study's (what every searched
architecture got) and the mnist1d paper's. It separates what the search space
and search reach from what the training recipe allows.

    python cnn_reference.py --out cnn_reference.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from archgram.grammar.model import Grammar
from archgram.search.evaluator import evaluate

#: mnist1d's CNN (3 conv layers of 25 channels, kernel 5 then 3, stride 2) in
#: archgram's conv1d op; the task's head pools over positions and classifies.
GRAMMAR = """
start network
network : conv1d(out=25, k=5, s=2) relu conv1d(out=25, k=3, s=2) relu conv1d(out=25, k=3, s=2) relu
"""

RECIPES = {
    "study (2000 steps, batch 32, AdamW lr 1e-3, cosine)": dict(
        budget="2000steps", batch=32, lr=1e-3, optimizer="adamw", options={}),
    "mnist1d paper (6000 steps, batch 100, Adam lr 1e-2, constant)": dict(
        budget="6000steps", batch=100, lr=1e-2, optimizer="adam", options={"schedule": "constant", "warmup": 0.0}),
}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", type=Path, default=Path("cnn_reference.json"))
    args = p.parse_args(argv)
    rows = []
    for name, r in RECIPES.items():
        d = Grammar.from_text(GRAMMAR, path="<mnist1d cnn>").sample((r["batch"], 40, 1), seed=0)
        for seed in args.seeds:
            res = evaluate(d, "mnist1d", r["budget"], seed=seed, lr=r["lr"], optimizer=r["optimizer"],
                           batch_size=r["batch"], train_options={"threads": 1, **r["options"]})
            rows.append({"recipe": name, "seed": seed, "accuracy": res.score, "params": res.params,
                         "status": res.status})
            print(json.dumps(rows[-1]), flush=True)
    args.out.write_text(json.dumps({"grammar": GRAMMAR.strip(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
