"""The progress of a running search: a live panel on a terminal, one plain line
per finished trial otherwise (``archgram search``)."""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from archgram.cli.study_text import score_text
from archgram.cli.util import human


def _clock(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:d}:{s:02d}"


class SearchDisplay:
    """Live panel on a terminal, one plain line per finished trial otherwise."""

    def __init__(self, console, live: bool, header: str):
        self.console = console
        self.live = live
        self.header = header
        self.progress = None
        self.wall = time.monotonic()
        self.printed_done: int | None = None

    def update(self, progress) -> None:
        self.progress = progress
        if not self.live and progress.done != self.printed_done:
            first = self.printed_done is None
            self.printed_done = progress.done
            self.console.print(self._line(progress, first), soft_wrap=True, highlight=False, markup=False)

    def _line(self, p, first: bool) -> str:
        if first and p.done >= p.total:
            return (f"{self.header}: the study already holds {p.done} finished trials (--trials {p.total}); "
                    "nothing to run (a larger --trials continues it)")
        if first:
            resumed = f", resuming with {p.done} finished" if p.done else ""
            return f"{self.header}: {p.total} trials{resumed}"
        last = p.last or {}
        what = self._last_text(last)
        best = f"best {score_text(p.best)} ({(p.best_hash or '')[:8]})" if p.best is not None else "best -"
        return (f"[{p.done}/{p.total}] {what} | running {p.running} failed {p.failed} | {best} | "
                f"elapsed {_clock(time.monotonic() - self.wall)} ETA {_clock(p.eta_seconds())}")

    @staticmethod
    def _last_text(last: dict) -> str:
        if not last:
            return "-"
        num = f"trial {last['number']} " if "number" in last else ""
        if last.get("status") == "ok":
            return f"{num}ok score {score_text(last.get('score'))} params {human(last.get('params'))}"
        if last.get("status") == "pruned":
            return f"{num}pruned (stopped early)"
        msg = (last.get("message") or "").splitlines()[0][:80] if last.get("message") else ""
        return f"{num}failed ({last.get('failure') or 'error'})" + (f": {msg}" if msg else "")

    def render(self):
        p = self.progress
        if p is None:
            return Text(f"{self.header}: starting…")
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        grid.add_row("search", Text(self.header))
        bar = Table.grid(padding=(0, 1))
        bar.add_row(ProgressBar(total=max(p.total, 1), completed=min(p.done, p.total), width=40),
                    Text(f"{p.done}/{p.total} done"))
        grid.add_row("trials", bar)
        grid.add_row("", Text.assemble(("running ", "dim"), str(p.running), ("   failed ", "dim"),
                                       (str(p.failed), "red" if p.failed else ""),
                                       ("   pruned ", "dim"), str(getattr(p, "pruned", 0))))
        best = Text("-") if p.best is None else Text.assemble((score_text(p.best), "bold green"),
                                                            ("  " + (p.best_hash or "")[:16], "cyan"))
        grid.add_row("best", best)
        grid.add_row("time", Text.assemble(("elapsed ", "dim"), _clock(time.monotonic() - self.wall),
                                           ("   ETA ", "dim"), _clock(p.eta_seconds())))
        grid.add_row("last", Text(self._last_text(p.last or {}),
                                  style="" if (p.last or {}).get("status", "ok") == "ok" else "yellow"))
        return Group(grid, Text("Ctrl-C stops; rerun the same command to resume.", style="dim"))


#: The display run_search reports to. Ray Tune pickles the searcher, and with it
#: the on_update callback; a module-level function pickles by reference, a bound
#: method of an object holding a Console (locks) would not pickle at all.
_ACTIVE: list[SearchDisplay] = []


def _on_update(progress) -> None:
    if _ACTIVE:
        _ACTIVE[-1].update(progress)


def run_shown(display: SearchDisplay, run: Callable[[Callable], Any]) -> bool:
    """Call ``run(on_update)`` while ``display`` shows its progress (a live panel
    or plain lines); True when Ctrl-C stopped it."""
    _ACTIVE.append(display)
    try:
        if display.live:
            from rich.live import Live

            with Live(get_renderable=display.render, console=display.console, refresh_per_second=2, transient=False):
                run(_on_update)
        else:
            run(_on_update)
    except KeyboardInterrupt:
        return True
    finally:
        _ACTIVE.remove(display)
    return False
