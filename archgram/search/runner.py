"""Run a search: strategy proposals, evaluated as Ray Tune trials, stored in the study.

``run_search`` checks a ``SearchConfig`` against the task's recipe, opens (or
creates) the study, rebuilds the strategy from the trials the study holds, and
runs the rest on Ray (ray_tuner.py). ``trials`` is the study's total, so
rerunning a command continues to it; a killed run loses only its unfinished
trials. ``config.time_limit`` ends one invocation early (time_limit.py):
``Progress.stopped`` then says so. Where the work happens:

- searcher.py: the driver side of a trial (propose, claim, store, tell);
- worker.py: the Ray worker side (evaluate, report);
- schedulers.py: fifo or asha, and the reports ASHA needs;
- claims.py: claiming trials in a study several drivers share.
"""
from __future__ import annotations

from collections.abc import Callable

from archgram.errors import ArchgramError
from archgram.grammar.model import load_grammar
from archgram.search.config import SearchConfig, resolve_recipe
from archgram.search.outcomes import replayed, strategy_metrics
from archgram.search.progress import Progress
from archgram.search.ray_tuner import run_trials
from archgram.search.schedulers import check_scheduler
from archgram.search.store import PROTOCOL, StudyStore
from archgram.search.strategies import get_strategy
from archgram.search.time_limit import TimeLimit
from archgram.tasks.reference import record, resolve

__all__ = ["Progress", "SearchConfig", "run_search"]


def run_search(config: SearchConfig, on_update: Callable[[Progress], None] = lambda p: None,
               task=None) -> StudyStore:
    """Run (or resume) the search described by ``config``; return its store.
    ``task``: the task object (a data task, a task from Python); by default the
    one ``config.task`` names, built with ``config.task_options``."""
    from archgram.tasks import get_task

    if config.trials < 1 or config.workers < 1:
        raise ArchgramError("--trials and --workers must be at least 1")
    limit = TimeLimit.start(config.time_limit, config.started)  # counts from the invocation's start
    if task is None:
        task = resolve(config.task, config.task_options) if not config.tasks else get_task(config.task)
    config, recipe = resolve_recipe(config, task)
    _check(config)
    grammar = load_grammar(config.grammar)
    shape = task.body_input_shape(config.batch_size)
    store = StudyStore(config.study, objectives=config.objectives, meta=_study_meta(config, task, grammar, shape))
    strategy = get_strategy(config.strategy)(grammar, shape, seed=config.seed,
                                             target=task.output_target(config.batch_size),
                                             **dict(config.strategy_options))
    strategy = _wrap(strategy, config, task)
    if not config.tasks:
        _reference(store, strategy, config, task, recipe, grammar)
    records = store.records()
    strategy.replay([(r.derivation, r.score, strategy_metrics(replayed(r))) for r in records
                     if r.derivation is not None])
    progress = Progress.resuming(config.trials, records, store.leaderboard(1))
    progress.time_left = None if limit is None else limit.left
    remaining = config.trials - len(records)
    on_update(progress)
    if remaining > 0 and limit is not None and limit.passed():  # e.g. the reference took it all: no Ray
        progress.stopped = limit.reason(progress.done, config.trials)
    elif remaining > 0:
        run_trials(config, strategy, store, progress, remaining, on_update, None if config.tasks else task,
                   limit=limit)
    on_update(progress)
    if not config.tasks and config.final_test:
        from archgram.search.final import record_final

        record_final(store, task, config.batch_size)  # test, once, for the final pick
    return store


def _check(config: SearchConfig) -> None:
    """Refuse, before any trial, what every worker would fail on: an unknown
    scheduler, an unreadable budget, a bad learning rate or optimizer, and
    multi-fidelity rungs or a prescreen that the trial budget cannot hold."""
    from archgram.search.budget import Budget
    from archgram.search.fidelity import rung_budgets, step_budget
    from archgram.search.prescreen import check_prescreen
    from archgram.search.training.options import check_training

    check_scheduler(config)
    budget = Budget.parse(config.budget)
    check_training(config.lr, config.optimizer, lr_name="--lr")
    if config.rungs > 1:
        rung_budgets(step_budget(budget), config.rungs, config.eta)  # raises with the reason
    check_prescreen(config.prescreen, budget.steps, config.proxy)


def _study_meta(config: SearchConfig, task, grammar, shape) -> dict:
    """What the study records about its search, to resume, show and export it."""
    return {
        "task": "+".join(config.tasks) if config.tasks else task.name,
        **({} if config.tasks else {"task_ref": record(task, config.task, config.task_options)}),
        "input_shape": list(shape),
        "grammar": grammar.name,
        "grammar_sha256": grammar.sha256[:16],
        "objectives": list(config.objectives),
        **({"tasks": list(config.tasks)} if config.tasks else {}),
        **({"train_options": config.train_options} if config.train_options else {}),
        "training": {"lr": config.lr, "optimizer": config.optimizer},
        "protocol": PROTOCOL,
    }


def _reference(store: StudyStore, strategy, config: SearchConfig, task, recipe, grammar) -> None:
    """Train the task's reference once (cached in the study; raises if it cannot
    train) and start the search from it where the grammar can express it."""
    from archgram.search.reference_arch import cached_reference, seed_derivation

    if config.reference:
        cached_reference(store, task, recipe, train_options=config.train_options)
    if config.seed_reference:
        seed = seed_derivation(task, grammar, config.batch_size)
        if seed is not None:
            strategy.enqueue(seed, origin="reference")


def _wrap(strategy, config: SearchConfig, task):
    """The strategy behind the budget policies the config asks for: prescreen
    (proxy's best of K), then successive-halving rungs on top."""
    if config.prescreen > 1:
        from archgram.search.prescreen import Prescreen

        strategy = Prescreen(strategy, task, config.batch_size, k=config.prescreen, proxy=config.proxy,
                             seed=config.seed)
    if config.rungs > 1:
        from archgram.search.fidelity import SuccessiveHalving

        strategy = SuccessiveHalving(strategy, config.budget, rungs=config.rungs, eta=config.eta,
                                     warm_start=config.inherit)
    return strategy
