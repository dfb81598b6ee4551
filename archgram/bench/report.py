"""Turn result rows into the three outputs of a run: ``<suite>.md`` (one table,
a row per case and mask, a column per length, then the run's kernel fallbacks
and their reasons), ``<suite>.png`` (time per token
over length, log-log) and ``<suite>.json`` (rows, device, versions, command)."""
from __future__ import annotations

import json
import math
from pathlib import Path

from archgram.kernels import fallbacks


def cell(row: dict) -> str:
    status = row["status"]
    if status == "ok":
        parts = [f"{row['ms']:.3f} ms"]
        if row.get("tflops"):
            parts.append(f"{row['tflops']:.3g} TF/s")
        if row.get("peak_mib") is not None:
            parts.append(f"{row['peak_mib']:.0f} MiB")
        if row.get("relerr") is not None:
            parts.append(f"err {row['relerr']:.1e}")
        return " · ".join(parts)
    if status == "oom":
        return "OOM"
    return f"{status}: {row.get('reason', '')}".replace("|", "/")[:90]


def table(rows: list[dict]) -> str:
    lengths = sorted({r["n"] for r in rows})
    keys: list[tuple[str, str]] = []
    for r in rows:
        if (r["case"], r["mask"]) not in keys:
            keys.append((r["case"], r["mask"]))
    by = {(r["case"], r["mask"], r["n"]): r for r in rows}
    head = "| case | mask | " + " | ".join(f"N={n}" for n in lengths) + " |"
    lines = [head, "|" + "---|" * (len(lengths) + 2)]
    for case, mask in keys:
        cells = [cell(by[(case, mask, n)]) if (case, mask, n) in by else "-" for n in lengths]
        lines.append(f"| {case} | {mask} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def header(meta: dict) -> str:
    env = meta["environment"]
    return (f"suite `{meta['suite']}` · device: {env['device']} · torch {env['torch']} · triton {env['triton']} · "
            f"python {env['python']} · dtype {meta['dtype']}\n\ncommand: `{meta['command']}`\n\n"
            "cells: median time per call (ms) · TFLOP/s · peak memory of one call (MiB, CUDA only); "
            "each call processes batch x N tokens (batch in the JSON).")


def plot(rows: list[dict], path: Path, title: str) -> bool:
    """Microseconds per token over length, one line per (case, mask); False if
    matplotlib is missing or nothing ran."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    series: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        if r["status"] == "ok" and r.get("ms"):
            series.setdefault(f"{r['case']} [{r['mask']}]", []).append((r["n"], 1e3 * r["ms"] / (r["batch"] * r["n"])))
    if not series:
        return False
    fig, ax = plt.subplots(figsize=(10, 6.5))
    for name, pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, lw=1, label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length N (tokens)")
    ax.set_ylabel("time per token (µs)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, ncol=max(1, math.ceil(len(series) / 25)), loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write(rows: list[dict], meta: dict, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    name = meta["suite"].replace("-", "_")
    paths = {"md": out / f"{name}.md", "json": out / f"{name}.json", "png": out / f"{name}.png"}
    fallen = fallbacks.table(meta.get("fallbacks", []))
    paths["md"].write_text(header(meta) + "\n\n" + table(rows) + "\n\n" + fallen + "\n")
    paths["json"].write_text(json.dumps({**meta, "rows": rows}, indent=1, default=str) + "\n")
    if not plot(rows, paths["png"], f"archgram bench {meta['suite']} ({meta['environment']['device']})"):
        del paths["png"]
    return paths
