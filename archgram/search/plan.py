"""Search policy: what a search request turns into before anything runs.

The defaults and checks every entry point shares (``archgram.search`` in
Python, ``archgram search`` on the command line): objectives per strategy,
evolution's population sized to the run, the tournament checked against it,
baseline seeds that fit the task, and the sampling precheck that refuses a
grammar unable to produce anything for the task's input shape. Each function
raises ArchgramError (one line) and writes nothing.
"""
from __future__ import annotations

import math
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from archgram.errors import ArchgramError
from archgram.registry import did_you_mean
from archgram.search.store import OBJECTIVES, storage_url

#: Sampling seeds tried before a search starts, to refuse a grammar that cannot
#: produce anything for the task's input shape (its every trial would fail).
PRECHECK_SEEDS = 8
#: evolution: population = half the trials, within these bounds
POPULATION_MAX, POPULATION_MIN = 20, 2
#: tournament = half the population, within these bounds: at least 2, since a
#: tournament of 1 picks a random parent and evolution degrades to a random walk
TOURNAMENT_MIN, TOURNAMENT_MAX = 2, 5
#: pcfg-eda: refit the production probabilities every quarter of the trials,
#: within these bounds (at a fixed 8, a search of 8 trials or fewer never refits
#: and is random search)
EDA_REFIT_MIN, EDA_REFIT_MAX = 2, 8


def _names(text: str | Sequence[str] | None) -> list[str]:
    if text is None:
        return []
    parts = text.split(",") if isinstance(text, str) else [p for item in text for p in str(item).split(",")]
    return [p.strip() for p in parts if p.strip()]


def objectives(text: str | Sequence[str] | None, strategy: str) -> tuple[str, ...]:
    """The objectives: ``score`` first, then any of params, latency, flops once
    each; by default score (and params for nsga2, which needs two)."""
    if text is None:
        return ("score", "params") if strategy == "nsga2" else ("score",)
    names = _names(text)
    for name in names:
        if name not in OBJECTIVES:
            raise ArchgramError(f"--objectives: {OBJECTIVES.unknown(name)}")
    if not names or names[0] != "score" or len(set(names)) != len(names):
        raise ArchgramError(f"--objectives {text!r}: give 'score' first, then any of params, latency, flops once each "
                            "(e.g. score,params)")
    return tuple(names)


def strategy_options(strategy: str, trials: int, population: int | None, tournament: int | None,
                     objectives: tuple[str, ...], per_task: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Constructor options of the strategy for a run of ``trials``.

    Evolution only mutates once its population is full, so by default it is
    half the trials (at most einspace-like 20) and the tournament half of that
    (2 to 5): short searches still evolve. Optuna strategies optimise the
    objectives; a multi-task run gives each task's score (``per_task``) instead
    of their mean."""
    options: dict[str, Any] = {}
    if population is not None or tournament is not None:
        if strategy not in ("evolution", "nsga2") or (tournament is not None and strategy != "evolution"):
            raise ArchgramError(f"--population/--tournament apply to evolution (and --population to nsga2), "
                                f"not to '{strategy}'")
        if population is not None:
            if population < POPULATION_MIN:
                raise ArchgramError(f"--population must be at least {POPULATION_MIN}, got {population}")
            options["population"] = population
        if strategy == "evolution":
            pop = population if population is not None else POPULATION_MAX
            tour = tournament if tournament is not None else min(TOURNAMENT_MAX, pop)
            if not 1 <= tour <= pop:
                raise ArchgramError(f"--tournament must be between 1 and the population ({pop}), got {tour}")
            options["tournament"] = tour
    if strategy == "evolution" and population is None:
        options["population"] = max(POPULATION_MIN, min(POPULATION_MAX, trials // 2))
        pop = options["population"]
        options.setdefault("tournament", min(pop, max(TOURNAMENT_MIN, min(TOURNAMENT_MAX, pop // 2))))
    if strategy == "pcfg-eda":  # refit a few times within the run, not only every 8th result
        options["refit_every"] = max(EDA_REFIT_MIN, min(EDA_REFIT_MAX, trials // 4))
    if strategy in ("tpe", "nsga2"):
        options["objectives"] = tuple(o for o in per_task if o != "score") if per_task else objectives
    return options


def precheck_sampling(grammar: Any, shape: tuple, target: tuple | None) -> None:
    """Refuse a grammar that samples nothing for this shape: every trial would fail."""
    first = None
    for seed in range(PRECHECK_SEEDS):
        try:
            grammar.sample(shape, seed=seed, target=target)
            return
        except ArchgramError as exc:
            first = first or str(exc).splitlines()[0]
    raise ArchgramError(f"no architecture of grammar '{grammar.name}' can be sampled for the task's input shape "
                        f"({','.join(map(str, shape))}): tried seeds 0..{PRECHECK_SEEDS - 1}; first error: {first}")


def baseline_seeds(names: str | Sequence[str] | None, grammar: Any, shape: tuple,
                   warn: Callable[[str], None]) -> list:
    """Baselines as derivations of the searched grammar; those the task's input
    shape cannot take are skipped with a warning."""
    from archgram.grammar.baselines import BASELINES, baseline

    out = []
    for name in _names(names):
        if name not in BASELINES:
            raise ArchgramError(f"--seed-baselines: unknown baseline '{name}'{did_you_mean(name, BASELINES)} (baselines: {', '.join(BASELINES)})")
        try:
            out.append(baseline(name, grammar, shape))
        except ArchgramError as exc:
            first = str(exc).splitlines()[0]
            warn(f"--seed-baselines: skipping '{name}': it does not fit input shape "
                 f"({','.join(map(str, shape))}) of this task ({first[:160]})")
    return out


def check_resources(trials: int, workers: int, batch_size: int, cpus_per_trial: float, gpus_per_trial: float,
                    address: str | None) -> None:
    for name, value, low in (("--trials", trials, 1), ("--workers", workers, 1), ("--batch-size", batch_size, 1)):
        if value < low:
            raise ArchgramError(f"{name} must be at least {low}, got {value}")
    if not cpus_per_trial > 0 or not math.isfinite(cpus_per_trial):
        raise ArchgramError(f"--cpus-per-trial must be positive, got {cpus_per_trial}")
    if gpus_per_trial < 0 or not math.isfinite(gpus_per_trial):
        raise ArchgramError(f"--gpus-per-trial must be 0 or more, got {gpus_per_trial}")
    if address:
        check_address(address)
    if gpus_per_trial > 0 and not address:
        import torch

        if not torch.cuda.is_available():
            raise ArchgramError("--gpus-per-trial: this machine has no CUDA GPU; drop the option or join a GPU "
                                "cluster with --address")


def check_address(address: str) -> None:
    """Refuse an unreachable ``--address`` at once: Ray itself retries for minutes."""
    text = address.strip()
    if text in ("auto", "local"):
        return
    hostport = text.split("://", 1)[1] if "://" in text else text
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ArchgramError(f"--address {address!r}: expected HOST:PORT (e.g. 10.0.0.5:6379), ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
            pass
    except OSError as exc:
        raise ArchgramError(f"--address {address}: no Ray cluster answers there ({exc.strerror or exc}); start one "
                            "with `ray start --head --port PORT` or check the address") from None


def training(recipe: Any, train_options: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """The budget as stored (read, then written back: '500' -> '500steps') and the
    train options, checked against the recipe's learning rate and optimizer."""
    from archgram.search.budget import Budget
    from archgram.search.training.options import TrainOptions, check_training

    try:
        budget_text = str(Budget.parse(recipe.budget))
    except ArchgramError as exc:
        raise ArchgramError(f"--budget: {exc}") from None
    check_training(recipe.lr, recipe.optimizer, lr_name="--lr")
    options = dict(train_options or {})
    TrainOptions.from_dict(options)  # names and ranges
    return budget_text, options


def precheck(grammar: Any, shape: tuple, target: tuple | None, task_set: Any, batch_size: int) -> None:
    """Refuse a grammar that samples nothing for the task (``precheck_sampling``)
    or, in a multi-task search, nothing that fits every task."""
    precheck_sampling(grammar, shape, target)
    if task_set:
        from archgram.search.multitask import precheck as precheck_tasks

        precheck_tasks(grammar, task_set, batch_size)


def evolution_seeds(strategy: str, names: str | Sequence[str] | None, grammar: Any, shape: tuple,
                    warn: Callable[[str], None]) -> dict[str, Any]:
    """Strategy options for ``--seed-baselines``: ``{"seeds": [...]}`` for evolution,
    nothing (with a warning) for any other strategy."""
    if names and strategy != "evolution":
        warn(f"--seed-baselines seeds evolution only; ignored for '{strategy}'")
    elif names:
        seeds = baseline_seeds(names, grammar, shape, warn)
        if seeds:
            return {"seeds": seeds}
    return {}


def study_path(study: Any, label: str) -> str:
    """The study (default runs/<label>.db), refused at once if it is a directory,
    a text file or a foreign SQLite file (left untouched)."""
    text = str(study) if study is not None else str(Path("runs") / f"{label}.db")
    storage_url(text)
    return text
