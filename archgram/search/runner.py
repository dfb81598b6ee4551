"""Run a search: strategy proposals, evaluated as Ray Tune trials, stored in the study.

The driver process owns the strategy and the study store; Ray workers only
evaluate. Our strategy acts as a Ray Tune ``Searcher``: ``suggest`` asks the
strategy and records the trial as RUNNING, ``on_trial_complete`` stores the
result and tells the strategy. ``trials`` is the study's total, so rerunning a
command continues to it; a killed run loses only its unfinished trials.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from archgram.errors import ArchgramError
from archgram.grammar.derivation import Derivation
from archgram.grammar.model import load_grammar
from archgram.search.store import StudyStore
from archgram.search.strategies import get_strategy


@dataclass
class SearchConfig:
    grammar: str
    task: str
    study: str
    strategy: str = "evolution"
    trials: int = 20
    workers: int = 1
    budget: str = "10s"
    seed: int = 0
    batch_size: int = 32
    objectives: tuple[str, ...] = ("score",)
    address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    device: str = "auto"
    strategy_options: dict[str, Any] = field(default_factory=dict)
    task_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Progress:
    """What a live display shows; updated in the driver as trials finish."""

    total: int
    done: int = 0  # finished in the study, this run and before
    failed: int = 0
    running: int = 0
    best: float | None = None
    best_hash: str | None = None
    started: float = field(default_factory=time.monotonic)
    done_at_start: int = 0
    last: dict[str, Any] = field(default_factory=dict)

    def eta_seconds(self) -> float | None:
        finished_now = self.done - self.done_at_start
        if finished_now <= 0:
            return None
        rate = (time.monotonic() - self.started) / finished_now
        return rate * max(self.total - self.done, 0)


def _trainable(config: dict[str, Any]) -> None:
    """Runs on a Ray worker: evaluate one derivation, report its metrics."""
    from ray import tune

    from archgram.search.evaluator import Budget, evaluate
    from archgram.tasks import get_task

    derivation = Derivation.from_json(config["derivation"])
    task = get_task(config["task"], **config.get("task_options", {}))
    device = config.get("device", "cpu")
    result = evaluate(
        derivation,
        task,
        Budget.parse(config["budget"]),
        seed=config["seed"],
        device=device,
        batch_size=config["batch_size"],
        train_options={"threads": max(1, int(config.get("cpus", 1)))},
    )
    tune.report({k: v for k, v in result.to_dict().items() if v is not None} | {"done": 1})


def _searcher(strategy, store: StudyStore, config: SearchConfig, progress: Progress, remaining: int,
              on_update: Callable[[Progress], None]):
    from ray.tune.search import Searcher

    class StrategySearcher(Searcher):
        def __init__(self):
            super().__init__(metric="score", mode="max")
            self.suggested = 0
            self.pending: dict[str, tuple[Any, Derivation]] = {}

        def suggest(self, trial_id: str):
            if self.suggested >= remaining:
                return Searcher.FINISHED
            self.suggested += 1
            proposal = strategy.ask()
            trial = store.start(
                proposal.derivation,
                strategy=strategy.name,
                origin=proposal.origin,
                parents=proposal.parents,
            )
            self.pending[trial_id] = (trial, proposal.derivation)
            progress.running += 1
            on_update(progress)
            return {
                "derivation": proposal.derivation.to_json(indent=None),
                "task": config.task,
                "task_options": config.task_options,
                "budget": config.budget,
                "seed": config.seed + trial.number,
                "batch_size": config.batch_size,
                "device": _device(config),
                "cpus": config.cpus_per_trial,
            }

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
            trial, derivation = self.pending.pop(trial_id)
            progress.running -= 1
            if error or not result or "status" not in result:
                outcome = {"status": "failed", "failure": "error", "message": "the Ray worker running this trial failed"}
            else:
                outcome = {k: v for k, v in result.items() if k in _RESULT_KEYS}
            store.finish(trial, outcome)
            ok = outcome.get("status") == "ok"
            strategy.tell(derivation, outcome.get("score") if ok else None)
            progress.done += 1
            progress.failed += 0 if ok else 1
            if ok and (progress.best is None or outcome["score"] > progress.best):
                progress.best, progress.best_hash = outcome["score"], derivation.hash()
            progress.last = outcome
            on_update(progress)

    return StrategySearcher()


_RESULT_KEYS = ("status", "score", "metric", "params", "flops", "latency_ms", "train_seconds", "steps", "failure", "message")


def _device(config: SearchConfig) -> str:
    if config.device != "auto":
        return config.device
    return "cuda" if config.gpus_per_trial > 0 else "cpu"


def run_search(config: SearchConfig, on_update: Callable[[Progress], None] = lambda p: None) -> StudyStore:
    """Run (or resume) the search described by ``config``; return its store."""
    from archgram.tasks import get_task

    if config.trials < 1 or config.workers < 1:
        raise ArchgramError("--trials and --workers must be at least 1")
    grammar = load_grammar(config.grammar)
    task = get_task(config.task, **config.task_options)
    shape = task.body_input_shape(config.batch_size)
    store = StudyStore(
        config.study,
        objectives=config.objectives,
        meta={
            "task": config.task,
            "input_shape": list(shape),
            "grammar": grammar.name,
            "grammar_sha256": grammar.sha256[:16],
            "objectives": list(config.objectives),
        },
    )
    options = dict(config.strategy_options)
    strategy = get_strategy(config.strategy)(grammar, shape, seed=config.seed, target=task.output_target(config.batch_size), **options)
    records = store.records()
    strategy.replay([(r.derivation, r.score) for r in records if r.derivation is not None])
    progress = Progress(total=config.trials, done=len(records), failed=sum(not r.ok for r in records), done_at_start=len(records))
    best = store.leaderboard(1)
    if best:
        progress.best, progress.best_hash = best[0].score, best[0].attrs.get("hash")
    remaining = config.trials - len(records)
    on_update(progress)
    if remaining <= 0:
        return store
    _run_ray(config, strategy, store, progress, remaining, on_update)
    return store


def _ray_dir(url: str) -> str:
    """Ray Tune's scratch files go beside a SQLite study, else to a temp folder."""
    if url.startswith("sqlite:///"):
        return os.path.join(os.path.dirname(url[len("sqlite:///"):]), ".ray")
    import tempfile

    return tempfile.mkdtemp(prefix="archgram-ray-")


def _run_ray(config, strategy, store, progress, remaining, on_update) -> None:
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    import ray
    from ray import tune

    started_here = not ray.is_initialized()
    if started_here:
        init: dict[str, Any] = {"include_dashboard": False, "logging_level": "ERROR", "log_to_driver": False}
        if config.address:
            init["address"] = config.address
        else:
            init["num_cpus"] = max(1, int(config.workers * config.cpus_per_trial))
            if config.gpus_per_trial:
                init["num_gpus"] = int(config.workers * config.gpus_per_trial)
        try:
            ray.init(**init)
        except ConnectionError as exc:
            raise ArchgramError(f"cannot join the Ray cluster at {config.address}: {exc}") from None
    try:
        searcher = _searcher(strategy, store, config, progress, remaining, on_update)
        resources = {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial}
        tuner = tune.Tuner(
            tune.with_resources(_trainable, resources),
            tune_config=tune.TuneConfig(
                search_alg=searcher, num_samples=-1, max_concurrent_trials=config.workers, reuse_actors=True
            ),
            run_config=tune.RunConfig(
                name=f"archgram-{os.getpid()}",
                storage_path=_ray_dir(store.url),
                verbose=0,
                log_to_file=False,
            ),
        )
        tuner.fit()
    finally:
        if started_here:
            ray.shutdown()
