"""What a live display shows of a running search, kept in the driver.

The searcher updates one ``Progress`` as trials start and finish; a resumed
search starts it from the trials the study already holds.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Progress:
    """What a live display shows; updated in the driver as trials finish."""

    total: int
    done: int = 0  # finished in the study, this run and before
    failed: int = 0
    running: int = 0
    best: float | None = None
    best_hash: str | None = None
    started: float = field(default_factory=time.monotonic)
    done_at_start: int = 0
    last: dict[str, Any] = field(default_factory=dict)
    pruned: int = 0  # stopped early by the scheduler (not counted in ``failed``)
    #: per trial finished in this run: ask_s, store_start_s, store_finish_s,
    #: eval_s and wall-clock stamps (t_suggested, t_eval_start, t_eval_end, t_complete)
    timings: list[dict[str, Any]] = field(default_factory=list)
    #: why the search stopped short of ``total`` with no error, e.g. "time limit 60m reached after 23 of 100 trials"
    stopped: str | None = None
    #: seconds left under --time-limit, read when the ETA is shown (None: no limit)
    time_left: Callable[[], float] | None = None

    @classmethod
    def resuming(cls, total: int, records: list, best: list) -> Progress:
        """Progress of a study about to run (or resume) to ``total`` trials, from
        its finished ``records`` and its leaderboard's first row (``best``)."""
        progress = cls(total=total, done=len(records), failed=sum(r.state == "FAIL" for r in records),
                       pruned=sum(r.state == "PRUNED" for r in records), done_at_start=len(records))
        if best:
            progress.best, progress.best_hash = best[0].score, best[0].attrs.get("hash")
        return progress

    def finished(self, outcome: dict[str, Any], number: int, arch_hash: str) -> None:
        """Count one finished trial (``outcome`` as stored) and keep the best."""
        ok = outcome.get("status") == "ok"
        self.done += 1
        if outcome["status"] == "pruned":
            self.pruned += 1
        elif not ok:
            self.failed += 1
        if ok and (self.best is None or outcome["score"] > self.best):
            self.best, self.best_hash = outcome["score"], arch_hash
        self.last = {**outcome, "number": number, "hash": arch_hash}

    def eta_seconds(self) -> float | None:
        """Seconds to ``total`` at this run's rate, but never past a time limit:
        a 1000-trial search limited to an hour ends within the hour."""
        left = None if self.time_left is None else max(self.time_left(), 0.0)
        finished_now = self.done - self.done_at_start
        if finished_now <= 0:
            return left
        eta = (time.monotonic() - self.started) / finished_now * max(self.total - self.done, 0)
        return eta if left is None else min(eta, left)
