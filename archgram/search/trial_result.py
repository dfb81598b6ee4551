"""What one evaluation produced, and how a failure in model code is named.

A bad architecture is a *result*, never a crash: the evaluator turns any
exception inside model code into a failed ``TrialResult`` whose ``failure`` is
one of ``FAILURES`` (``classify``) and whose message says where it happened.
"""
from __future__ import annotations

import traceback
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

from archgram.errors import CompileError, DerivationError, SamplingError, ShapeError

FAILURES = ("shape", "nan", "oom", "timeout", "error")
MESSAGE_CHARS = 600


@dataclass
class TrialResult:
    """What one evaluation produced; ``failure`` is set exactly when status is 'failed'."""

    status: str  # 'ok' | 'failed'
    score: float | None = None
    metric: str = ""
    params: int | None = None
    flops: int | None = None  # forward FLOPs of one batch (body + stem + head)
    latency_ms: float | None = None  # median forward of one batch, eval mode
    train_seconds: float = 0.0
    steps: int = 0
    failure: str | None = None  # one of FAILURES
    message: str = ""
    task: str = ""
    arch_hash: str = ""
    seed: int = 0
    device: str = "cpu"
    budget: str = ""
    batch_size: int = 0
    epochs: float = 0.0
    train_loss: float | None = None  # mean loss over the last 10% of steps
    val_loss: float | None = None
    total_seconds: float = 0.0  # wall clock of the whole call
    #: CPU time of the whole call (this process; one thread per trial makes it the
    #: trial's compute whatever else loads the machine)
    cpu_seconds: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialResult:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def summary(self) -> str:
        if self.ok:
            return (f"{self.metric}={self.score:.4f} params={self.params:,} flops={self.flops:.3g} "
                    f"latency={self.latency_ms:.2f}ms steps={self.steps} ({self.train_seconds:.1f}s)")
        return f"failed ({self.failure}): {self.message}"


class TrialTimeout(Exception):
    """The wall-clock cap passed."""


class NonFinite(Exception):
    """A loss or prediction became NaN or infinite."""


def classify(exc: BaseException) -> str:
    """The failure kind of an exception raised while evaluating a model."""
    if isinstance(exc, TrialTimeout):
        return "timeout"
    if isinstance(exc, (ShapeError, CompileError, DerivationError, SamplingError)):
        return "shape"
    if isinstance(exc, NonFinite):
        return "nan"
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if isinstance(exc, MemoryError) or (oom is not None and isinstance(exc, oom)):
        return "oom"
    if isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower():
        return "oom"
    return "error"


def failure_message(exc: BaseException, kind: str) -> str:
    """The stored message of a failure: an 'error' names its type and the line it came from."""
    text = str(exc).strip() or type(exc).__name__
    if kind == "error":
        text = f"{type(exc).__name__}: {text}"
        tb = traceback.extract_tb(exc.__traceback__)
        if tb:
            last = tb[-1]
            text += f" (at {last.filename}:{last.lineno} in {last.name})"
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 3] + "..."
