"""``archgram show``: a study's leaderboard, fronts and plots, read back while or after it runs.

What the report holds, and the plots it writes, is ``archgram.search.summary``;
this module prints it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from archgram.cli import common as ui
from archgram.cli.study_text import counts_text, final_text, leaderboard_table, reference_text, task_table


def show(
    study: Annotated[str, typer.Argument(metavar="STUDY", help="Study file (or RDB URL) written by archgram search.",
                                         show_default=False)],
    top: Annotated[int, typer.Option("--top", "-k", min=1, help="Rows of the leaderboard.")] = 10,
    out: Annotated[Path | None, typer.Option("--out", "-o", show_default=False,
                                             help="Directory for the plots (default: <study>_plots beside the study).")] = None,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write the PNG plots.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
) -> None:
    """Print a study's leaderboard and write its plots (best-so-far curve, score-vs-params Pareto front).

    Reads the study without changing it, so it works while a search runs.
    """
    from archgram.search.summary import study_report

    result = study_report(study, top, plots, out)
    if as_json:
        ui.emit_json(result)
        return
    _print_report(result)


def _print_report(result: dict[str, Any]) -> None:
    meta, rows = result["meta"], result["leaderboard"]
    about = ", ".join(f"{k} {meta[k]}" for k in ("grammar", "task", "objectives") if k in meta)
    ui.console.print(Text.assemble((result["study"], "bold"), f"  {about}" if about else "", "\n",
                                   f"{result['finished']} finished trials: "
                                   f"{counts_text(result['status'], result['interrupted'], result['running'])}"),
                     soft_wrap=True, highlight=False)
    if rows:
        ui.console.print(leaderboard_table(rows, f"top {len(rows)} by validation score"))
        if isinstance(meta.get("reference"), dict):
            ui.console.print(reference_text(meta["reference"], rows[0]["score"]), soft_wrap=True, highlight=False)
        if isinstance(meta.get("final"), dict):
            ui.console.print(final_text(meta["final"]), soft_wrap=True, highlight=False)
        for c, nums in result["pareto"].items():
            ui.console.print(Text.assemble((f"Pareto front (score vs {c}): ", "bold"),
                                           ", ".join(f"#{n}" for n in nums) or "-"), soft_wrap=True, highlight=False)
        if result.get("per_task"):
            ui.console.print(task_table(result["per_task"]))
    elif result["finished"]:
        ui.warn("no trial succeeded yet")
    else:
        ui.warn("the study holds no finished trial yet")
    if result["plots"]:
        ui.console.print(Text.assemble(("plots: ", "bold"), "  ".join(result["plots"])), soft_wrap=True, highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``show`` to the ``archgram`` app."""
    app.command("show")(show)
