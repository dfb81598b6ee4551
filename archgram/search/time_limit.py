"""A wall-clock budget for one search invocation: ``archgram search --time-limit 60m``.

The clock starts when the command (or ``archgram.search``) starts, so Ray's
start-up and the reference's training count. Once the limit has passed, no
trial starts; a trial that starts before gets a wall-clock cap of the time left
(``trial_cap``: the smaller of that and the trial's own cap), the evaluator's
``timeout``, so a trial still running at the limit fails as a 'timeout' like
any trial past its cap, and the command ends near the limit. A rerun of the
same study gets a fresh limit (the limit is not stored with the study).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from archgram.errors import ArchgramError
from archgram.search.budget import Budget

_EXAMPLES = "give a positive wall-clock duration with a unit, e.g. 90s, 60m or 1.5h"


def parse_time_limit(text: str | int | float) -> float:
    """Seconds of ``"90s"``, ``"60m"``, ``"1.5h"`` (the units of ``Budget``) or
    a number of seconds; ArchgramError naming --time-limit otherwise."""
    if isinstance(text, bool):
        raise ArchgramError(f"--time-limit {text!r}: {_EXAMPLES}")
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        try:
            budget = Budget.parse(str(text))
        except ArchgramError:
            raise ArchgramError(f"--time-limit {text!r}: {_EXAMPLES}") from None
        if budget.seconds is None or budget.steps is not None or budget.epochs is not None:
            raise ArchgramError(f"--time-limit {text!r}: {_EXAMPLES} (steps and epochs are no wall-clock time)")
        seconds = budget.seconds
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ArchgramError(f"--time-limit {text!r}: {_EXAMPLES}")
    return seconds


def limit_text(text: str | int | float) -> str:
    """The limit as stored in a SearchConfig and shown: the user's text, a number as seconds."""
    parse_time_limit(text)
    return f"{float(text):g}s" if isinstance(text, (int, float)) else str(text).strip()


def trial_cap(cap: float | None, budget: Budget | str | int, left: float | None) -> float | None:
    """The wall-clock cap of a trial starting with ``left`` seconds to the limit:
    min(its own cap, left). Its own cap is ``cap`` (Recipe.trial_seconds), else
    the evaluator's default for ``budget``; ``left`` None (no limit): ``cap``.
    The time left is rounded to 0.1 s (at least 0.1 s), for readable messages."""
    if left is None:
        return cap
    left = max(round(left, 1), 0.1)
    own = cap if cap is not None else Budget.parse(budget).default_timeout()
    return left if own is None else min(own, left)


@dataclass(frozen=True)
class TimeLimit:
    """A limit of ``seconds`` counted from ``started`` (a ``clock`` reading)."""

    text: str
    seconds: float
    started: float
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def start(cls, text: str | int | float | None, started: float | None = None,
              clock: Callable[[], float] = time.monotonic) -> TimeLimit | None:
        """The limit ``text`` counted from ``started`` (default: now); None without one."""
        if text is None:
            return None
        return cls(limit_text(text), parse_time_limit(text), clock() if started is None else started, clock)

    def left(self) -> float:
        """Seconds until the limit (negative once past it)."""
        return self.started + self.seconds - self.clock()

    def passed(self) -> bool:
        return self.left() <= 0

    def reason(self, finished: int, trials: int) -> str:
        """What a summary says when the limit ended the search."""
        return f"time limit {self.text} reached after {finished} of {trials} trials"
