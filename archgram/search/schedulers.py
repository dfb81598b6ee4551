"""Ray Tune trial schedulers a search can run under, and what each asks of a trial.

``fifo`` runs every trial to its budget (no intermediate reports, so nothing
slows training down). ``asha`` (Ray Tune's ASHA) makes each trial report its
mean training loss ``asha_reports`` times over its budget; the scheduler's
clock is ``progress``, the percent of the budget spent, so rungs are fractions
of the budget whatever its unit (steps, seconds, epochs).
"""
from __future__ import annotations

from typing import Any, ClassVar

from archgram.errors import ArchgramError
from archgram.registry import Registry, same_class
from archgram.search.config import SearchConfig

#: name -> scheduler class
SCHEDULERS: Registry[type[Scheduler]] = Registry("scheduler", same=same_class)


class Scheduler:
    """A Ray Tune trial scheduler a search can run under. Subclasses register
    with ``@SCHEDULERS.decorator()``; the rest of the search reads only these
    attributes, never the name."""

    name: ClassVar[str]
    #: Whether it stops trials on the training loss they report while they run
    #: (ASHA). If not, trials report nothing (nothing would read it); if so, a
    #: multi-task search, whose trials' losses are not comparable, refuses it.
    reads_reports: ClassVar[bool] = False

    @classmethod
    def check(cls, config: SearchConfig) -> None:
        """Refuse (ArchgramError) options this scheduler cannot run with."""

    @classmethod
    def build(cls, config: SearchConfig) -> Any:
        """The Ray Tune scheduler object."""
        raise NotImplementedError


@SCHEDULERS.decorator()
class Fifo(Scheduler):
    name = "fifo"

    @classmethod
    def build(cls, config):
        from ray.tune.schedulers import FIFOScheduler

        return FIFOScheduler()


@SCHEDULERS.decorator()
class Asha(Scheduler):
    name = "asha"
    reads_reports = True

    @classmethod
    def check(cls, config):
        if not 0 < config.asha_grace < 1:
            raise ArchgramError(f"ASHA grace must be a fraction of the budget in (0, 1), got {config.asha_grace}")
        if not config.asha_reduction > 1:
            raise ArchgramError(f"ASHA reduction factor must be above 1, got {config.asha_reduction}")
        if config.asha_reports < 2:
            raise ArchgramError(f"ASHA needs at least 2 reports per trial, got {config.asha_reports}")

    @classmethod
    def build(cls, config):
        from ray.tune.schedulers import ASHAScheduler

        return ASHAScheduler(
            time_attr="progress",
            metric="train_loss",
            mode="min",
            max_t=100,
            grace_period=max(1, round(100 * config.asha_grace)),
            reduction_factor=config.asha_reduction,
        )


def check_scheduler(config: SearchConfig) -> None:
    """Refuse an unknown scheduler or options it cannot run with."""
    SCHEDULERS.get(config.scheduler).check(config)


def reports_per_trial(config: SearchConfig) -> int:
    """Reports per trial: none under a scheduler that reads none (FIFO); else
    ``asha_reports``, but no more than a steps budget has steps."""
    if not SCHEDULERS.get(config.scheduler).reads_reports:
        return 0
    from archgram.search.budget import Budget

    budget = Budget.parse(config.budget)
    return min(config.asha_reports, budget.steps) if budget.steps is not None else config.asha_reports
