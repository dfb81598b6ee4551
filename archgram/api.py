"""The one entry point: ``archgram.search(...) -> Study`` and ``archgram.open_study(path)``.

    import archgram
    study = archgram.search("einspace", data="train.npz", trials=16, budget="10s")
    study = archgram.search("einspace", data=(x, y), study="runs/mine.db")
    study = archgram.search("attention", task="my_tasks:Blobs", strategy="tpe")
    study.best(); study.to_dataframe(); study.export("best/")
    again = archgram.open_study("runs/mine.db", data=(x, y))   # data from Python: give it again

``archgram search`` on the command line is a thin layer over ``search``: every
default and check lives here or in ``archgram.search.plan``, so both run the
same search. Bad input raises ArchgramError (one line) before the study file
is created or changed.
"""
from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archgram.errors import ArchgramError
from archgram.search import plan
from archgram.search.config import SearchConfig
from archgram.search.progress import Progress
from archgram.search.runner import run_search
from archgram.search.schedulers import SCHEDULERS
from archgram.search.store import StudyStore, TrialRecord
from archgram.tasks.base import Task
from archgram.tasks.reference import DATA_PREFIX, rebuild, reference_of, resolve


@dataclass
class TaskChoice:
    """The task of a search and how the study will name it."""

    task: Task | None  # None for a multi-task search (tasks travel by name)
    reference: str  # "" when it cannot be rebuilt from a reference (data from Python)
    options: dict[str, Any]
    label: str  # default study name, display title
    names: tuple[str, ...] = ()  # a multi-task search's tasks


def choose_task(task: Any = None, data: Any = None, *, target: str | None = None, task_kind: str | None = None,
                task_options: dict[str, Any] | None = None, data_options: dict[str, Any] | None = None) -> TaskChoice:
    """The task from exactly one of ``task`` (a name, ``module:Class``,
    ``file.py:Class``, a Task class or object, or several names) and ``data``
    (a path, arrays, tensors, a Dataset)."""
    from archgram.tasks.data import DataTask, data_task

    task_options = dict(task_options or {})
    if data is not None:
        if task is not None:
            raise ArchgramError("give a task or data, not both")
        options = {k: v for k, v in {"target": target, "kind": task_kind, **(data_options or {})}.items() if v is not None}
        built = data_task(data, **options)
        path = built.info.get("path")
        ref = f"{DATA_PREFIX}{path}" if path else ""
        label = Path(path).stem if path else "data"
        return TaskChoice(built, ref, options if path else {}, label)
    if target is not None or task_kind is not None:
        raise ArchgramError("--target and --task-kind apply to --data")
    if isinstance(task, DataTask):
        path = task.info.get("path")
        return TaskChoice(task, f"{DATA_PREFIX}{path}" if path else "", getattr(task, "options", {}), "data")
    if isinstance(task, Task):
        return TaskChoice(task, reference_of(task), task_options or task.config(), task.name)
    if isinstance(task, type) and issubclass(task, Task):
        built = task(**task_options)
        return TaskChoice(built, reference_of(built), task_options, built.name)
    items = [task] if isinstance(task, str) else list(task or ["digits"])
    if len(items) == 1 and ":" in str(items[0]):
        built = resolve(str(items[0]), task_options)
        return TaskChoice(built, reference_of(built) or str(items[0]), task_options, built.name)
    from archgram.search.multitask import TaskSet

    task_set = TaskSet.parse(items)
    if task_set.multi:
        if task_options:
            raise ArchgramError("task options apply to one task, not to a multi-task search")
        return TaskChoice(None, "", {}, task_set.label, task_set.names)
    built = resolve(task_set.names[0], task_options)
    return TaskChoice(built, task_set.names[0], task_options, task_set.label)


@dataclass
class SearchRequest:
    """A checked search, ready to run: what ``prepare`` returns."""

    config: SearchConfig
    task: Task | None
    grammar_name: str
    label: str  # the task (or tasks) as shown to people


def prepare(
    grammar: str = "einspace", task: Any = None, data: Any = None, *, target: str | None = None,
    task_kind: str | None = None, strategy: str = "evolution", trials: int = 16, budget: str | int | None = None,
    workers: int = 2, study: str | Path | None = None, seed: int = 0, batch_size: int | None = None,
    lr: float | None = None, optimizer: str | None = None, objectives: str | Sequence[str] | None = None,
    address: str | None = None, cpus_per_trial: float = 1.0, gpus_per_trial: float = 0.0,
    population: int | None = None, tournament: int | None = None, seed_baselines: str | Sequence[str] | None = None,
    scheduler: str = "fifo", train_options: dict[str, Any] | None = None, task_options: dict[str, Any] | None = None,
    data_options: dict[str, Any] | None = None, warn: Callable[[str], None] | None = None, reference: bool = True,
    rungs: int = 1, eta: int = 3, prescreen: int = 1, proxy: str = "synflow", inherit: bool = True,
    time_limit: str | float | None = None,
) -> SearchRequest:
    """Check a search request and apply the search policy (``plan``); runs
    nothing and writes nothing. Arguments as for ``search``."""
    from archgram.grammar.model import load_grammar
    from archgram.search.multitask import TaskSet
    from archgram.search.strategies import get_strategy
    from archgram.search.time_limit import limit_text

    warn = warn or (lambda text: warnings.warn(text, stacklevel=3))
    limit = None if time_limit is None else limit_text(time_limit)
    choice = choose_task(task, data, target=target, task_kind=task_kind, task_options=task_options,
                         data_options=data_options)
    get_strategy(strategy)
    scheduler_cls = SCHEDULERS.get(scheduler)
    objs = plan.objectives(objectives, strategy)
    if choice.names and scheduler_cls.reads_reports:
        raise ArchgramError(f"--scheduler {scheduler} compares one task's training loss; a multi-task search "
                            f"({choice.label}) runs with --scheduler "
                            + " or ".join(n for n, cls in SCHEDULERS.items() if not cls.reads_reports))
    task_set = TaskSet(choice.names) if choice.names else None
    first = choice.task if choice.task is not None else resolve(choice.names[0])
    # the task's recipe fills whatever training setting the caller left unset
    recipe = first.recipe.override(budget=budget, lr=lr, optimizer=optimizer, batch_size=batch_size)
    budget_text, train_opts = plan.training(recipe, train_options)
    plan.check_resources(trials, workers, recipe.batch_size, cpus_per_trial, gpus_per_trial, address)
    g = load_grammar(grammar)
    shape = first.body_input_shape(recipe.batch_size)
    per_task = task_set.objectives(objs) if task_set else None
    options = plan.strategy_options(strategy, trials, population, tournament, objs, per_task)
    plan.precheck(g, shape, first.output_target(recipe.batch_size), task_set, recipe.batch_size)
    options.update(plan.evolution_seeds(strategy, seed_baselines, g, shape, warn))
    config = SearchConfig(
        grammar=str(grammar), task=choice.reference if choice.task is not None else choice.names[0],
        study=plan.study_path(study, choice.label), strategy=strategy, trials=trials, workers=workers,
        budget=budget_text, seed=seed, batch_size=recipe.batch_size, lr=recipe.lr, optimizer=recipe.optimizer,
        objectives=per_task or objs, address=address, cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
        strategy_options=options, scheduler=scheduler, tasks=choice.names, train_options=train_opts,
        task_options=choice.options, reference=reference, seed_reference=reference, rungs=rungs, eta=eta,
        prescreen=prescreen, proxy=proxy, inherit=inherit, time_limit=limit,
    )
    return SearchRequest(config, choice.task, g.name, choice.label)


def run(request: SearchRequest, on_update: Callable[[Progress], None] | None = None, *,
        started: float | None = None) -> Study:
    """Run (or resume) a prepared search; ``on_update(progress)`` as trials finish.
    ``started``: the ``time.monotonic()`` its time limit counts from (default: now).
    The Study's ``stopped`` says why the run ended short of its trials, if by design."""
    config = dataclasses.replace(request.config, started=started) if started is not None else request.config
    last: list[Progress] = []

    def update(progress: Progress) -> None:
        last[:] = [progress]
        if on_update is not None:
            on_update(progress)

    store = run_search(config, update, task=request.task)
    study = Study(store, config.study, request.task)
    study.stopped = last[0].stopped if last else None
    return study


def search(grammar: str = "einspace", task: Any = None, data: Any = None, *,
           on_update: Callable[[Progress], None] | None = None, **kwargs: Any) -> Study:
    """Search ``grammar`` on a task or on data; returns the Study.

    ``task``: a registered name, ``package.module:Class``, ``file.py:Class``, a
    Task class or object, or several names (a multi-task search). ``data``: a
    file (.npz with x, y [, x_val, y_val, x_test, y_test]; .csv or .parquet with
    ``target=COLUMN``; .pt of tensors), a folder of images (one subfolder per
    class), (x, y) arrays or tensors, a dict of them, or a torch Dataset;
    ``task_kind`` overrides the inferred kind; ``data_options``: val_fraction,
    val_seed, test_fraction, image_size.

    Keywords: strategy ('evolution'), trials (16: the study's total, shared by
    every driver on the study, so a rerun resumes and a second process splits
    the work), budget, batch_size, lr, optimizer (default: the task's recipe,
    ``Task.recipe``), workers (2), study (path or RDB URL; default
    runs/<task>.db), seed, objectives, address, cpus_per_trial, gpus_per_trial,
    population, tournament, seed_baselines, scheduler, train_options,
    task_options, warn; reference (True: train the task's reference
    architecture once, cache it in the study, seed the search with it where the
    grammar can express it), rungs/eta (multi-fidelity successive halving),
    prescreen/proxy (zero-cost proxy pre-screening), inherit (True: a mutated
    or crossed-over child starts from its parent's trained weights; on by
    default, the best measured in experiments/search_quality), time_limit
    ("60m", "1.5h" or seconds: this call's wall-clock limit, counted from its
    start; no trial starts after it, a running trial is capped at the time left
    and fails as a 'timeout' past it; ``Study.stopped`` then says so).
    """
    started = time.monotonic()
    return run(prepare(grammar, task, data, **kwargs), on_update, started=started)


def best_export_dir(study: str | Path) -> Path:
    """Where ``export_best`` writes: beside the study (``runs/digits.db`` -> ``runs/digits-best/``)."""
    from archgram.export.exporter import default_out

    return default_out(study, None)


def export_best(study: str | Path):
    """Export a study's best trial to ``best_export_dir``, replacing an earlier
    export there (a folder holding model.py and derivation.json), never a foreign folder."""
    from archgram.export.exporter import export

    out = best_export_dir(study)
    ours = (out / "model.py").is_file() and (out / "derivation.json").is_file()
    return export(study, out, force=ours)


class Study:
    """A study's trials, best architecture and export. ``task`` is the task the
    search ran on; without one, it is rebuilt from the study's reference when
    needed (and refused if its data changed)."""

    def __init__(self, store: StudyStore, path: str, task: Task | None = None):
        self.store, self.path = store, path
        self._task = task
        #: why the search that returned this Study stopped short of its trials, if by design (its time limit)
        self.stopped: str | None = None

    @property
    def meta(self) -> dict[str, Any]:
        return self.store.meta

    @property
    def task(self) -> Task:
        if self._task is None:
            self._task = rebuild(self.meta, what=f"study {self.path}")
        return self._task

    def trials(self) -> list[TrialRecord]:
        """Finished trials (ok, failed, pruned) in the order they started."""
        return self.store.records()

    def best(self) -> TrialRecord | None:
        board = self.store.leaderboard(1)
        return board[0] if board else None

    def to_dataframe(self):
        """One row per finished trial: number, state, score, metric, params, flops,
        latency_ms, hash, strategy, origin, failure, message."""
        import pandas as pd

        cols = ("metric", "params", "flops", "latency_ms", "train_seconds", "hash", "strategy", "origin", "failure",
                "message")
        rows = [{"number": r.number, "state": r.state, "score": r.score, **{c: r.attrs.get(c) for c in cols}}
                for r in self.trials()]
        return pd.DataFrame(rows, columns=["number", "state", "score", *cols])

    def export(self, out: str | Path | None = None, *, trial: int | None = None, force: bool = False, **kwargs: Any):
        """Export the best trial (or ``trial``) as plain PyTorch; see archgram.export."""
        from archgram.export.exporter import export

        task = self._task if not self.meta.get("tasks") else None
        return export(self.path, out, trial=trial, force=force, task=task, **kwargs)

    def __repr__(self) -> str:
        best = self.best()
        return (f"Study({self.path!r}, {len(self.trials())} trials, best "
                f"{'-' if best is None else f'{best.score:.4f} (trial {best.number})'})")


def open_study(path: str | Path, *, task: Any = None, data: Any = None, **data_options: Any) -> Study:
    """Reopen a study for reading (never changes it). A study whose data came
    from Python needs it again (``data=``, ``task=``), checked against the
    stored content hash."""
    from archgram.search.report import open_study as open_store

    store = open_store(path)
    given = None
    if task is not None or data is not None:
        given = choose_task(task, data, **{k: data_options.pop(k) for k in ("target", "task_kind") if k in data_options},
                            data_options=data_options or None).task
    out = Study(store, str(path))
    if given is not None:
        out._task = rebuild(store.meta, given, what=f"study {path}")
    return out
