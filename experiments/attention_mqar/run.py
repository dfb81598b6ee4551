"""Zoology-style MQAR sweep over catalog attention variants at small widths.

Every variant is the same two-layer pre-norm transformer (attention + MLP
residual blocks, causal, RoPE where the score takes positions) written as a
one-line deterministic grammar, so the only difference between rows is the
attention op's ``score`` / ``pattern`` axis. Each (variant, width) is trained
with archgram's evaluator (step budget, so the result does not depend on the
machine's load) for a few learning rates, keeping the best, as Zoology does.

    python experiments/attention_mqar/run.py --out experiments/attention_mqar
    python experiments/attention_mqar/run.py --quick   # smoke run (seconds)

Each call appends its rows to OUT/rows-<variants>.jsonl; the table and plot are
made from every rows file in OUT, so variants can run as parallel processes
(``--variants softmax`` in one, ``--variants linear`` in another) and
``--report`` alone rebuilds the table.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

import archgram
from archgram.search.evaluator import evaluate
from archgram.tasks import get_task

#: name -> (attention arguments, what the row stands for)
VARIANTS: dict[str, tuple[str, str]] = {
    "softmax": ("score=softmax, position=rope", "softmax attention"),
    "sigmoid": ("score=sigmoid, position=rope", "sigmoid attention (S06)"),
    "softcap": ("score=softcap(5), position=rope", "tanh soft-capped softmax"),
    "power_law": ("score=power_law, position=rope", "power-law attention (S66)"),
    "window8": ("score=softmax, pattern=window(8), position=rope", "sliding window of 8 (local)"),
    "linear": ("score=linear", "linear attention (elu+1 features)"),
    "lightning": ("score=lightning", "decayed linear attention, Lightning (S04/S48)"),
    "nala": ("score=nala", "norm-aware linear attention (S21)"),
    "hebbian": ("score=hebbian", "Hebbian fast-weight attention (S44)"),
    # sigmoid attention with the paper's stabilisers (S06), each alone and together
    "sigmoid_qknorm": ("score=sigmoid(qk_norm=true), position=rope", "sigmoid, b = -log n, QK-norm"),
    "sigmoid_layerscale": ("score=sigmoid, position=rope", "sigmoid, b = -log n, LayerScale 1e-4"),
    "sigmoid_hybrid": ("score=sigmoid, position=rope", "sigmoid, b = -log n, hybrid-norm (norm after attention)"),
    "sigmoid_hybrid_b0": ("score=sigmoid(0), position=rope", "sigmoid, b = 0, hybrid-norm"),
    "sigmoid_all": ("score=sigmoid(qk_norm=true), position=rope", "sigmoid, b = -log n, QK-norm + hybrid-norm"),
    "softmax_hybrid": ("score=softmax, position=rope", "softmax, hybrid-norm (control)"),
}

#: ops after the attention op, inside the residual branch: hybrid-norm (a norm on
#: the attention output) or LayerScale (S06's stabilisers of the branch output)
POST = {"sigmoid_hybrid": "layernorm", "sigmoid_hybrid_b0": "layernorm", "sigmoid_all": "layernorm",
        "softmax_hybrid": "layernorm", "sigmoid_layerscale": "layer_scale(1e-4)"}

GRAMMAR = """
start network
network : layer layer
layer   : mix ffn
mix     : clone(2) mixer identity add
ffn     : clone(2) mlp identity add
mixer   : layernorm attention(heads={heads}, causal=true, {attention}){post}
mlp     : layernorm linear(out={hidden}) gelu linear(out={width})
"""


def build(variant: str, width: int, batch: int, seq_len: int):
    post = f" {POST[variant]}" if variant in POST else ""
    text = GRAMMAR.format(heads=max(1, width // 32), attention=VARIANTS[variant][0], hidden=2 * width, width=width,
                          post=post)
    grammar = archgram.grammar.model.Grammar.from_text(text, path=f"<mqar {variant}>")
    return grammar.sample((batch, seq_len, width), seed=0)


def run(args) -> list[dict]:
    rows = []
    for width in args.widths:
        task = get_task("mqar", vocab=args.vocab, seq_len=args.seq_len, kv_pairs=args.kv_pairs, d_model=width,
                        n_train=args.n_train, n_val=500)
        for variant in args.variants:
            derivation = build(variant, width, args.batch, args.seq_len)
            best = None
            for lr in args.lrs:
                t0 = time.perf_counter()
                res = evaluate(derivation, task, f"{args.steps}steps", seed=args.seed, lr=lr, batch_size=args.batch,
                               device=args.device, train_options={"threads": args.threads, "latency_repeats": 1},
                               timeout=args.timeout)
                took = time.perf_counter() - t0
                row = {"variant": variant, "width": width, "lr": lr, "status": res.status,
                       "accuracy": res.score if res.ok else None, "params": res.params, "seconds": round(took, 1),
                       "failure": None if res.ok else f"{res.failure}: {res.message[:120]}"}
                print(json.dumps(row), flush=True)
                with open(args.out / f"rows-{'-'.join(args.variants)}.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\n")
                if best is None or (row["accuracy"] or -1) > (best["accuracy"] or -1):
                    best = row
            rows.append(best)
    return rows


def collect(out: Path) -> list[dict]:
    """Best row per (variant, width) over every rows file in ``out`` (best over learning rates)."""
    best: dict[tuple, dict] = {}
    for path in sorted(out.glob("rows-*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            key = (row["variant"], row["width"])
            if key not in best or (row["accuracy"] or -1) > (best[key]["accuracy"] or -1):
                best[key] = row
    order = list(VARIANTS)
    return sorted(best.values(), key=lambda r: (order.index(r["variant"]), r["width"]))


def table(rows: list[dict], widths: list[int]) -> str:
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    cell = {(r["variant"], r["width"]): r for r in rows}
    out = ["| variant | what | " + " | ".join(f"d={w}" for w in widths) + " |",
           "|---|---|" + "---|" * len(widths)]
    for v in variants:
        vals = []
        for w in widths:
            r = cell.get((v, w))
            vals.append("-" if r is None or r["accuracy"] is None else f"{r['accuracy']:.3f}")
        out.append(f"| {v} | {VARIANTS[v][1]} | " + " | ".join(vals) + " |")
    return "\n".join(out)


def plot(rows: list[dict], widths: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for v in dict.fromkeys(r["variant"] for r in rows):
        pts = sorted((r["width"], r["accuracy"] or 0.0) for r in rows if r["variant"] == v)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=v)
    ax.set_xscale("log", base=2)
    ax.set_xticks(widths, [str(w) for w in widths])
    ax.set_xlabel("model width")
    ax.set_ylabel("MQAR accuracy (query positions)")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("experiments/attention_mqar"))
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--widths", nargs="+", type=int, default=[32, 64, 128])
    p.add_argument("--lrs", nargs="+", type=float, default=[1e-3, 3e-3])
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--kv-pairs", type=int, default=16)
    p.add_argument("--n-train", type=int, default=20000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--timeout", type=float, default=None, help="wall-clock cap of one training run (s)")
    p.add_argument("--quick", action="store_true", help="tiny smoke run")
    p.add_argument("--report", action="store_true", help="only rebuild table and plot from OUT/rows-*.jsonl")
    args = p.parse_args(argv)
    if args.quick:
        args.variants, args.widths, args.lrs, args.steps = ["softmax", "linear"], [32], [3e-3], 20
        args.n_train = 500
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if not args.report:
        run(args)
    rows = collect(args.out)
    widths = sorted({r["width"] for r in rows})
    meta = {"command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "torch": torch.__version__,
            "python": platform.python_version(), "machine": platform.processor() or platform.machine(),
            "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
            "wall_seconds": round(time.time() - t0), "config": {k: (str(v) if isinstance(v, Path) else v)
                                                               for k, v in vars(args).items()}}
    if not args.report:
        (args.out / f"meta-{'-'.join(args.variants)}.json").write_text(json.dumps(meta, indent=1))
    (args.out / "table.md").write_text(table(rows, widths) + "\n")
    plot(rows, widths, args.out / "accuracy_vs_width.png")
    print(table(rows, widths))


if __name__ == "__main__":
    main()
