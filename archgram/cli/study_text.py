"""How a study reads on a terminal: the leaderboard table, status counts, and
the one-line reference and final-pick texts (``archgram search`` and ``show``)."""
from __future__ import annotations

import math
from typing import Any

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from archgram.cli.util import human


def score_text(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def leaderboard_table(rows: list[dict], title: str) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold")
    for col, kw in (("#", {"justify": "right"}), ("trial", {"justify": "right"}), ("score", {"justify": "right"}),
                    ("metric", {"style": "dim"}), ("params", {"justify": "right"}), ("FLOPs", {"justify": "right"}),
                    ("latency ms", {"justify": "right"}), ("hash", {"style": "cyan", "no_wrap": True}),
                    ("strategy/origin", {"style": "dim"})):
        table.add_column(col, **kw)
    for r in rows:
        lat = r.get("latency_ms")
        table.add_row(str(r["rank"]), str(r["trial"]), score_text(r["score"]), escape(str(r.get("metric") or "-")),
                      human(r.get("params")), human(r.get("flops")),
                      f"{lat:.3g}" if isinstance(lat, (int, float)) else "-", str(r.get("hash") or "-")[:16],
                      escape(f"{r.get('strategy') or '-'}/{r.get('origin') or '-'}"))
    return table


def counts_text(counts: dict[str, int], interrupted: int = 0, running: int = 0) -> str:
    reasons = ", ".join(f"{k.split(':', 1)[1]} {v}" for k, v in sorted(counts.items()) if k.startswith("failed:"))
    text = f"{counts.get('ok', 0)} ok, {counts.get('failed', 0)} failed" + (f" ({reasons})" if reasons else "")
    if counts.get("pruned"):
        text += f", {counts['pruned']} pruned"
    if interrupted:
        text += f"; {interrupted} interrupted (not counted, rerun)"
    if running:
        text += f"; {running} running now"
    return text


def reference_text(ref: dict, best: float | None) -> Text:
    """One line: the task's reference under the recipe, and the best trial's ratio to it."""
    from archgram.search.reference_arch import ratio

    r = ref.get("recipe", {})
    recipe = (f"{r.get('optimizer')} lr {r.get('lr')}, batch {r.get('batch_size')}, {r.get('budget')}, "
              f"{r.get('schedule')}")
    share = ratio(best, ref)
    tail = f" | best {score_text(best)}" + (f" = {share:.3f}x the reference" if share is not None else "")
    return Text.assemble(("reference: ", "bold"), f"{ref.get('grammar')} validation {ref.get('metric', 'score')} "
                         f"{score_text(ref.get('validation'))} (recipe {recipe})", tail if best is not None else "")


def final_text(final: dict) -> Text:
    """One line: the final pick, its validation score and its one test score."""
    return Text.assemble(("final pick: ", "bold"), f"trial {final['trial']} ({str(final.get('hash') or '')[:8]}), "
                         f"validation {final.get('metric', 'score')} {score_text(final.get('validation'))}, "
                         f"test {score_text(final.get('test'))} (scored once, {final.get('weights')} weights)")


def task_table(per_task: dict) -> Table:
    """The per-task Pareto front of a multi-task study, then each task's best trial."""
    tasks = per_task["tasks"]
    table = Table(title="per-task Pareto front (no trial scores at least as well on every task)", title_justify="left",
                  header_style="bold")
    table.add_column("trial", justify="right")
    for t in tasks:
        table.add_column(escape(t), justify="right")
    for col in ("mean", "params"):
        table.add_column(col, justify="right")
    table.add_column("hash", style="cyan", no_wrap=True)
    for row in per_task["front"]:
        table.add_row(str(row["trial"]), *(score_text(row[t]) for t in tasks), score_text(row["mean"]),
                      human(row["params"]), str(row.get("hash") or "-")[:16])
    best = per_task["best"]
    table.caption = "best per task: " + ", ".join(
        f"{t} #{best[t]['trial']} {score_text(best[t]['score'])}" for t in tasks if t in best)
    return table
