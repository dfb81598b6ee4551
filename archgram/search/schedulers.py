"""Ray Tune trial schedulers a search can run under, and what each asks of a trial.

``fifo`` runs every trial to its budget (no intermediate reports, so nothing
slows training down). ``asha`` (Ray Tune's ASHA) makes each trial report its
mean training loss ``asha_reports`` times over its budget; the scheduler's
clock is ``progress``, the percent of the budget spent, so rungs are fractions
of the budget whatever its unit (steps, seconds, epochs).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from archgram.errors import ArchgramError
from archgram.registry import Registry
from archgram.search.config import SearchConfig


def _fifo(config: SearchConfig):
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()


def _asha(config: SearchConfig):
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="progress",
        metric="train_loss",
        mode="min",
        max_t=100,
        grace_period=max(1, round(100 * config.asha_grace)),
        reduction_factor=config.asha_reduction,
    )


#: name -> factory of the Ray Tune scheduler
SCHEDULERS: Registry[Callable[[SearchConfig], Any]] = Registry("scheduler", entries={"fifo": _fifo, "asha": _asha})


def check_scheduler(config: SearchConfig) -> None:
    SCHEDULERS.get(config.scheduler)
    if config.scheduler == "asha":
        if not 0 < config.asha_grace < 1:
            raise ArchgramError(f"ASHA grace must be a fraction of the budget in (0, 1), got {config.asha_grace}")
        if not config.asha_reduction > 1:
            raise ArchgramError(f"ASHA reduction factor must be above 1, got {config.asha_reduction}")
        if config.asha_reports < 2:
            raise ArchgramError(f"ASHA needs at least 2 reports per trial, got {config.asha_reports}")


def reports_per_trial(config: SearchConfig) -> int:
    """Reports per trial: none under FIFO (nothing would read them); under ASHA
    ``asha_reports``, but no more than a steps budget has steps."""
    if config.scheduler == "fifo":
        return 0
    from archgram.search.budget import Budget

    budget = Budget.parse(config.budget)
    return min(config.asha_reports, budget.steps) if budget.steps is not None else config.asha_reports
