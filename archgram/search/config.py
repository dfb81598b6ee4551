"""What a search run is asked to do: ``SearchConfig``, and the task recipe that
fills the training settings a caller left unset.

``archgram.api.prepare`` builds a config from checked user input; the runner
resolves it against the task's recipe before any trial starts, so every trial
of a study trains under the same, stored settings.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SearchConfig:
    """One search run: grammar, task and study, how every trial trains, and how
    trials are proposed, scheduled and placed."""

    grammar: str
    task: str
    study: str
    strategy: str = "evolution"
    trials: int = 20
    workers: int = 1
    #: training of every trial; None takes the task's recipe (Task.recipe)
    budget: str | None = None
    seed: int = 0
    batch_size: int | None = None
    #: learning rate and optimizer of every trial's training (training.options.OPTIMIZERS)
    lr: float | None = None
    optimizer: str | None = None
    objectives: tuple[str, ...] = ("score",)
    address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    device: str = "auto"
    strategy_options: dict[str, Any] = field(default_factory=dict)
    task_options: dict[str, Any] = field(default_factory=dict)
    #: "fifo" (every trial runs its whole budget) or "asha" (stop bad trials early)
    scheduler: str = "fifo"
    #: ASHA: fraction of the budget every trial gets before it can be stopped
    asha_grace: float = 0.2
    #: ASHA: keep the best 1/reduction of trials at each rung
    asha_reduction: float = 3.0
    #: ASHA: intermediate reports per trial (fewer when the budget has fewer steps)
    asha_reports: int = 10
    #: multi-task run (S29): every task, ``task`` first; empty for one task
    tasks: tuple[str, ...] = ()
    #: evaluator train options (e.g. {"adversarial": "at"}), stored with the study
    train_options: dict[str, Any] = field(default_factory=dict)
    #: score the final pick (best validation trial) on test once and store it
    final_test: bool = True
    #: train the task's reference architecture under the recipe once, cache it in the study
    reference: bool = True
    #: start the search from the reference where the grammar can express it
    seed_reference: bool = True
    #: multi-fidelity: successive-halving rungs over the step budget (1 = off) and their reduction factor
    rungs: int = 1
    eta: int = 3
    #: zero-cost proxy pre-screening: train the proxy's best of this many candidates (1 = off)
    prescreen: int = 1
    proxy: str = "synflow"
    #: weight inheritance: a mutated or crossed-over child starts from its parent's kept weights
    inherit: bool = False
    #: wall-clock cap of one trial in seconds (a trial past it fails as a timeout); None: the recipe's
    trial_seconds: float | None = None
    #: wall-clock limit of this invocation ("90s", "60m", "1.5h"; time_limit.py): no trial starts
    #: after it, and a trial starting before is capped at the time left; None: no limit
    time_limit: str | None = None
    #: time.monotonic() when the invocation began, the limit's start; None: when run_search starts
    started: float | None = None


def resolve_recipe(config: SearchConfig, task) -> tuple[SearchConfig, Any]:
    """``config`` with every training field the user left unset taken from the
    task's recipe, and that recipe (with the user's overrides). Train options
    the user gave win over the recipe's schedule and warm-up."""
    recipe = task.recipe.override(lr=config.lr, optimizer=config.optimizer, batch_size=config.batch_size,
                                  budget=config.budget)
    options = {**recipe.train_options(), **config.train_options}
    recipe = recipe.override(schedule=options["schedule"], warmup=options["warmup"])
    recipe = recipe.override(trial_seconds=config.trial_seconds)
    resolved = dataclasses.replace(config, lr=recipe.lr, optimizer=recipe.optimizer, batch_size=recipe.batch_size,
                                   budget=recipe.budget, train_options=options, trial_seconds=recipe.trial_seconds)
    return resolved, recipe


def trial_device(config: SearchConfig) -> str:
    """The device a trial trains on: the one named, else a GPU when trials reserve one."""
    if config.device != "auto":
        return config.device
    return "cuda" if config.gpus_per_trial > 0 else "cpu"
