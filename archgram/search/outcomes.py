"""A trial's outcome on its way from a worker to the study and the strategy.

A worker reports the evaluator's result; the store keeps the ``RESULT_KEYS``
of it (plus per-task values named ``score:<task>`` and so on); the strategy
learns the score and a few costs (``strategy_metrics``), also when the study
replays its trials into a fresh strategy on resume.
"""
from __future__ import annotations

from typing import Any

RESULT_KEYS = (
    "status", "score", "metric", "params", "flops", "latency_ms", "train_seconds", "steps", "failure", "message",
    "train_loss", "val_loss", "total_seconds", "cpu_seconds", "seed", "budget", "batch_size",  # seed..: to retrain on export
    "inherited",  # tensors copied from the parent's (or the shorter rung's) weights
)


def stored(result: dict[str, Any]) -> dict[str, Any]:
    """The part of a worker's result the study keeps."""
    return {k: v for k, v in result.items() if k in RESULT_KEYS or ":" in k}


def strategy_metrics(outcome: dict[str, Any]) -> dict[str, Any]:
    """What a strategy learns besides the score; ``pruned`` marks an early stop."""
    out = {k: outcome[k] for k in ("params", "flops", "latency_ms", "train_loss", "budget", "rung")
           if outcome.get(k) is not None}  # rung: a multi-fidelity trial's, recorded at its claim
    if outcome.get("status") == "pruned":
        out["pruned"] = True
    return out


def replayed(record) -> dict[str, Any]:
    """A stored trial as the outcome it was recorded from (for ``strategy_metrics``)."""
    return dict(record.attrs) | {"status": {"COMPLETE": "ok", "PRUNED": "pruned"}.get(record.state, "failed")}
