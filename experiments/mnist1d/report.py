"""Table and best-so-far plot of the MNIST-1D study (see run.sh), set against the
published MNIST-1D baselines (Greydanus & Steinbach 2020, the mnist1d README).

    python report.py runs/evolution.db runs/random.db --out .
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from archgram.search.report import best_so_far, ok_records, open_study, status_counts
from archgram.tasks import get_task


def summarise(path: Path) -> dict:
    store = open_study(path)
    records = store.records()
    ok = ok_records(records)
    best = max(ok, key=lambda r: r.score) if ok else None
    meta = store.meta
    return {
        "study": str(path), "strategy": meta.get("strategy", path.stem), "trials": len(records),
        "status": status_counts(records), "curve": best_so_far(records),
        "best": None if best is None else {
            "trial": best.number, "accuracy": best.score, "params": best.attrs.get("params"),
            "train_seconds": best.attrs.get("train_seconds"), "hash": best.attrs.get("hash"),
            "derivation": best.derivation.pretty() if best.derivation is not None else None},
        "median_ok": sorted(r.score for r in ok)[len(ok) // 2] if ok else None,
    }


def reference_rows(path: Path) -> list[str]:
    """The CNN reference (cnn_reference.py), mean and spread over its seeds per recipe."""
    if not path.exists():
        return []
    import statistics

    runs = json.loads(path.read_text())["rows"]
    out = []
    for recipe in dict.fromkeys(r["recipe"] for r in runs):
        accs = [r["accuracy"] for r in runs if r["recipe"] == recipe and r["accuracy"] is not None]
        out.append(f"| CNN through archgram, {recipe} | {statistics.mean(accs):.3f} +- {statistics.pstdev(accs):.3f} "
                   f"({len(accs)} seeds) | cnn_reference.py |")
    return out


def table(studies: list[dict], extra: list[str] = ()) -> str:
    lines = ["| model | test accuracy | source |", "|---|---|---|"]
    published = get_task("mnist1d").published
    for name in ("logistic_regression", "mlp", "cnn", "gru", "human"):
        lines.append(f"| {name.replace('_', ' ')} | {published[name]:.2f} | mnist1d paper / README |")
    for s in studies:
        b = s["best"]
        acc = "-" if b is None else f"{b['accuracy']:.3f} (trial {b['trial']}, {b['params']:,} params)"
        counts = ", ".join(f"{k} {v}" for k, v in s["status"].items())
        lines.append(f"| archgram {s['strategy']}, best of {s['trials']} | {acc} | this study ({counts}; "
                     f"median ok trial {s['median_ok']:.3f}) |")
    return "\n".join(lines + list(extra))


def plot(studies: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    published = get_task("mnist1d").published
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for s in studies:
        xs = [n + 1 for n, v in s["curve"] if v is not None]
        ys = [v for _, v in s["curve"] if v is not None]
        ax.step(xs, ys, where="post", label=f"archgram {s['strategy']}")
    for name, style in (("logistic_regression", ":"), ("mlp", "-."), ("gru", "--"), ("cnn", "-")):
        ax.axhline(published[name], color="grey", ls=style, lw=1)
        ax.text(0.5, published[name] + 0.005, name.replace("_", " "), fontsize=7, color="grey")
    ax.set_xlabel("trials")
    ax.set_ylabel("best test accuracy so far")
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("studies", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=Path("."))
    args = p.parse_args(argv)
    studies = [summarise(s) for s in args.studies]
    args.out.mkdir(parents=True, exist_ok=True)
    extra = reference_rows(args.out / "cnn_reference.json")
    (args.out / "table.md").write_text(table(studies, extra) + "\n")
    (args.out / "results.json").write_text(json.dumps(studies, indent=1, default=str))
    plot(studies, args.out / "best_so_far.png")
    print(table(studies, extra))


if __name__ == "__main__":
    main()
