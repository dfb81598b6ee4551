"""How long a trial trains: a ``Budget`` of steps, seconds or epochs, read from text.

Training stops at whichever set limit comes first, so ``"1000steps,60s"``
bounds both the work and the wall clock.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from archgram.errors import ArchgramError

_UNITS = {
    "": ("steps", 1),
    "step": ("steps", 1), "steps": ("steps", 1),
    "s": ("seconds", 1), "sec": ("seconds", 1), "secs": ("seconds", 1), "second": ("seconds", 1), "seconds": ("seconds", 1),
    "m": ("seconds", 60), "min": ("seconds", 60), "mins": ("seconds", 60), "minute": ("seconds", 60), "minutes": ("seconds", 60),
    "h": ("seconds", 3600), "hour": ("seconds", 3600), "hours": ("seconds", 3600),
    "ep": ("epochs", 1), "epoch": ("epochs", 1), "epochs": ("epochs", 1),
}
_PART = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(?:e([+-]?\d+))?\s*([a-z]*)$")


@dataclass(frozen=True)
class Budget:
    """How long to train: training stops at whichever set limit comes first."""

    steps: int | None = None
    seconds: float | None = None
    epochs: float | None = None

    def __post_init__(self) -> None:
        if self.steps is None and self.seconds is None and self.epochs is None:
            raise ArchgramError("a budget needs steps, seconds or epochs")
        for name in ("steps", "seconds", "epochs"):
            v = getattr(self, name)
            if v is not None and not (v > 0 and math.isfinite(v)):
                raise ArchgramError(f"budget {name} must be positive, got {v}")
        if self.steps is not None and int(self.steps) != self.steps:
            raise ArchgramError(f"budget steps must be a whole number, got {self.steps}")

    @classmethod
    def parse(cls, text: str | int | float | Budget) -> Budget:
        """``"500steps"``, ``"200"`` (steps), ``"60s"``, ``"2min"``, ``"2epochs"``,
        or several joined by commas (``"1000steps,60s"``: whichever ends first)."""
        if isinstance(text, Budget):
            return text
        if isinstance(text, bool):
            raise ArchgramError(f"budget {text!r} is not a number of steps")
        if isinstance(text, int):
            return cls(steps=text)
        if isinstance(text, float):
            raise ArchgramError(f"budget {text!r}: say '{text:g}s' for seconds or '{text:g}epochs' for epochs")
        values: dict[str, float] = {}
        parts = [p.strip() for p in str(text).strip().lower().replace("+", ",").split(",")]
        for part in parts:
            m = _PART.match(part)
            unit = _UNITS.get(m.group(3)) if m else None
            if unit is None:
                raise ArchgramError(
                    f"cannot read budget {text!r} (part {part!r}); write e.g. '500steps', '200' (steps), "
                    "'60s', '5min' or '2epochs', several joined by commas"
                )
            name, scale = unit
            if name in values:
                raise ArchgramError(f"budget {text!r} gives {name} twice")
            value = float(m.group(1)) * (10 ** int(m.group(2)) if m.group(2) else 1) * scale
            if name == "steps":
                if value != int(value):
                    raise ArchgramError(f"budget {text!r}: steps must be a whole number")
                value = int(value)
            values[name] = value
        return cls(**values)

    def total_steps(self, steps_per_epoch: int) -> int | None:
        """Steps the run will take, or None when only seconds limit it."""
        limits = []
        if self.steps is not None:
            limits.append(int(self.steps))
        if self.epochs is not None:
            limits.append(max(1, math.ceil(self.epochs * steps_per_epoch)))
        return min(limits) if limits else None

    def default_timeout(self) -> float | None:
        """The evaluator's wall-clock cap of a trial given none: 3x the seconds
        budget plus 10 s; none when the budget has no seconds."""
        return 3 * self.seconds + 10 if self.seconds is not None else None

    def __str__(self) -> str:
        parts = []
        if self.steps is not None:
            parts.append(f"{self.steps}steps")
        if self.seconds is not None:
            parts.append(f"{self.seconds:g}s")
        if self.epochs is not None:
            parts.append(f"{self.epochs:g}epochs")
        return ",".join(parts)
