"""How well do zero-cost proxies rank architectures? Kendall tau between each
proxy (computed at initialisation) and the trained validation score, over the
full-budget trials of real searches: the benchmark's runs (``run.py``) or any
archgram study file.

    python experiments/search_quality/proxies.py --runs experiments/search_quality/results/runs
    python experiments/search_quality/proxies.py --study runs/digits.db --task digits

Writes ``proxies.json`` and ``proxies.md`` next to the runs (or to ``--out``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-b of two equally long lists (ties counted as neither)."""
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def from_runs(folder: Path) -> dict[str, list[tuple[str, float]]]:
    """task -> [(derivation json, validation score)] of trials trained on the full
    trial budget, one per architecture (benchmark run files)."""
    out: dict[str, dict[str, tuple[str, float]]] = {}
    for path in sorted(folder.glob("*__*__*.json")):
        run = json.loads(path.read_text())
        full = run["recipe"]["budget"]
        for t in run["trials"]:
            if t["score"] is not None and t["budget"] == full:
                out.setdefault(run["task"], {})[t["hash"]] = (t["derivation"], t["score"])
    return {task: list(v.values()) for task, v in out.items()}


def from_study(study: str, task: str) -> dict[str, list[tuple[str, float]]]:
    from archgram.search.report import open_study

    records = [r for r in open_study(study).records() if r.ok and r.derivation is not None]
    return {task: [(r.derivation.to_json(indent=None), r.score) for r in records]}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, help="a benchmark's runs/ folder")
    p.add_argument("--study", help="an archgram study file (with --task)")
    p.add_argument("--task")
    p.add_argument("--out", type=Path)
    p.add_argument("--max", type=int, default=200, help="architectures per task at most")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from archgram.grammar.derivation import Derivation
    from archgram.search.proxies import PROXIES, proxy_score
    from archgram.tasks import get_task

    data = from_runs(args.runs) if args.runs else from_study(args.study, args.task)
    out = args.out or (args.runs.parent if args.runs else Path("."))
    out.mkdir(parents=True, exist_ok=True)
    result = {}
    for task_name, items in data.items():
        task = get_task(task_name)
        items = items[: args.max]
        scores = [s for _, s in items]
        row = {"n": len(items)}
        for name in PROXIES:
            values = []
            for text, _ in items:
                d = Derivation.from_json(text)
                values.append(proxy_score(name, d, task, d.input_shape[0], seed=0))
            finite = [(v, s) for v, s in zip(values, scores) if v != float("-inf")]
            row[name] = kendall_tau([v for v, _ in finite], [s for _, s in finite]) if len(finite) > 2 else None
        result[task_name] = row
        print(task_name, row, flush=True)
    names = list(PROXIES)
    lines = ["| task | architectures | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for task_name, row in result.items():
        cells = [("-" if row[n] is None else f"{row[n]:+.3f}") for n in names]
        lines.append(f"| {task_name} | {row['n']} | " + " | ".join(cells) + " |")
    (out / "proxies.md").write_text("Kendall tau of each zero-cost proxy with the trained validation score\n\n"
                                    + "\n".join(lines) + "\n")
    (out / "proxies.json").write_text(json.dumps(result, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
