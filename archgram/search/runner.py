"""Run a search: strategy proposals, evaluated as Ray Tune trials, stored in the study.

The driver process owns the strategy and the study store; Ray workers only
evaluate. Our strategy acts as a Ray Tune ``Searcher``: ``suggest`` asks the
strategy and records the trial as RUNNING, ``on_trial_complete`` stores the
result and tells the strategy. ``trials`` is the study's total, so rerunning a
command continues to it; a killed run loses only its unfinished trials.

Schedulers: ``fifo`` runs every trial to its budget (no intermediate reports,
so nothing slows training down). ``asha`` (Ray Tune's ASHA) makes each trial
report its mean training loss ``asha_reports`` times over its budget; the
scheduler's clock is ``progress``, the percent of the budget spent, so rungs are
fractions of the budget whatever its unit (steps, seconds, epochs). A trial ASHA
stops is stored as Optuna PRUNED (finished and counted, not re-run) with its
last training loss; the strategy is told score ``None`` with
``metrics["pruned"] = True``: a stopped trial has no validation score (it is
stopped before scoring), and a training loss is not comparable to the scores
the strategy ranks, so like a failure it is never chosen as a parent.

Overhead: the driver times each trial's proposal (``strategy.ask``), storage
(``store.start``/``finish``) and the worker's evaluate; ``Progress.timings``
holds them (see experiments/search/bench_overhead.py).
"""
from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from archgram.errors import ArchgramError
from archgram.grammar.derivation import Derivation
from archgram.grammar.model import load_grammar
from archgram.registry import Registry
from archgram.search.drivers import HEARTBEAT_S, this_driver
from archgram.search.store import DUPLICATE, FULL, PROTOCOL, StudyStore
from archgram.search.strategies import get_strategy
from archgram.search.weights import WeightKeeper, weights_file
from archgram.tasks.reference import record, resolve

#: proposals a driver tries before it decides the strategy only repeats what
#: the study already holds
CLAIM_TRIES = 50
DRIVER = this_driver()


@dataclass
class SearchConfig:
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
    pruned: int = 0  # stopped early by the scheduler (not counted in ``failed``)
    #: per trial finished in this run: ask_s, store_start_s, store_finish_s,
    #: eval_s and wall-clock stamps (t_suggested, t_eval_start, t_eval_end, t_complete)
    timings: list[dict[str, Any]] = field(default_factory=list)

    def eta_seconds(self) -> float | None:
        finished_now = self.done - self.done_at_start
        if finished_now <= 0:
            return None
        rate = (time.monotonic() - self.started) / finished_now
        return rate * max(self.total - self.done, 0)


# ------------------------------------------------------------------ worker side
#: Tasks built in this worker process, by (name, options): a reused Ray actor
#: generates a task's data once, not once per trial.
_WORKER_TASKS: dict[str, Any] = {}


def _worker_task(name: str, options: dict[str, Any]):
    from archgram.tasks import get_task

    key = json.dumps([name, options], sort_keys=True, default=str)
    if key not in _WORKER_TASKS:
        task = get_task(name, **options)
        task.data(0)
        _WORKER_TASKS[key] = task
    return _WORKER_TASKS[key]


class _Reporter:
    """``on_step`` for evaluate: every ``1/reports`` of the budget, report the mean
    training loss since the last report to Ray Tune (which lets ASHA compare and
    stop trials). ``progress`` (percent of the budget) is the scheduler's clock.
    A trial the scheduler stops does not return from ``report``."""

    def __init__(self, report, budget, steps_per_epoch: int, reports: int):
        self.report, self.reports = report, reports
        self.total = budget.total_steps(steps_per_epoch)
        self.seconds = budget.seconds
        self.next = 1
        self.losses: list[float] = []
        self.t0: float | None = None

    def __call__(self, step: int, loss: float) -> None:
        now = time.perf_counter()
        if self.t0 is None:
            self.t0 = now
        self.losses.append(loss)
        done = max(step / self.total if self.total else 0.0, (now - self.t0) / self.seconds if self.seconds else 0.0)
        # the last report is the final result, so intermediate ones stop short of it
        if self.next < self.reports and done >= self.next / self.reports:
            while self.next < self.reports and done >= self.next / self.reports:
                self.next += 1
            mean = sum(self.losses) / len(self.losses)
            self.losses = []
            self.report({"train_loss": mean, "step": step, "progress": round(100 * (self.next - 1) / self.reports)})


def resolve_recipe(config: SearchConfig, task) -> tuple[SearchConfig, Any]:
    """``config`` with every training field the user left unset taken from the
    task's recipe, and that recipe (with the user's overrides). Train options
    the user gave win over the recipe's schedule and warm-up."""
    import dataclasses

    recipe = task.recipe.override(lr=config.lr, optimizer=config.optimizer, batch_size=config.batch_size,
                                  budget=config.budget)
    options = {**recipe.train_options(), **config.train_options}
    recipe = recipe.override(schedule=options["schedule"], warmup=options["warmup"])
    recipe = recipe.override(trial_seconds=config.trial_seconds)
    resolved = dataclasses.replace(config, lr=recipe.lr, optimizer=recipe.optimizer, batch_size=recipe.batch_size,
                                   budget=recipe.budget, train_options=options, trial_seconds=recipe.trial_seconds)
    return resolved, recipe


def _trainable(config: dict[str, Any], task=None) -> None:
    """Runs on a Ray worker: evaluate one derivation, report its metrics.

    ``task`` is the driver's task object, with its data, from Ray's object store
    (``tune.with_parameters``: one copy per node, numpy arrays shared by the
    node's workers); the worker never rebuilds it from a path or a name.

    Everything but a dead worker comes back as a result: evaluate turns model
    problems into failures, and this wrapper turns a broken config (say, a task
    option this worker cannot build) into a failed 'error' with its message."""
    from ray import tune

    from archgram.search.evaluator import Budget, evaluate
    from archgram.search.training.options import training_settings

    started = time.time()
    try:
        derivation = Derivation.from_json(config["derivation"])
        if task is None:  # multi-task searches ship task names
            task = _worker_task(config["task"], config.get("task_options", {}))
        budget = Budget.parse(config["budget"])
        on_step = None
        if config.get("reports", 0) > 0:
            per_epoch = max(1, task.data(0).n_train // config["batch_size"])
            on_step = _Reporter(tune.report, budget, per_epoch, config["reports"])
        eval_start = time.time()
        train_options = {**config.get("train_options", {}), "threads": max(1, int(config.get("cpus", 1)))}
        if config.get("tasks"):  # multi-task (S29): the same derivation on every task
            from archgram.search.multitask import evaluate_tasks

            tasks = [_worker_task(name, {}) for name in config["tasks"]]
            evaluation = evaluate_tasks(derivation, tasks, budget, seed=config["seed"], device=config.get("device", "cpu"),
                                        batch_size=config["batch_size"], train_options=train_options, on_step=on_step,
                                        **training_settings(config))
        else:
            parent = config.get("inherit")  # weight inheritance: the parent's kept weights and derivation
            evaluation = evaluate(derivation, task, budget, seed=config["seed"], device=config.get("device", "cpu"),
                                  batch_size=config["batch_size"], train_options=train_options, on_step=on_step,
                                  weights=config.get("weights"), **training_settings(config),
                                  timeout=config.get("timeout"),
                                  inherit_from=(parent["path"], Derivation.from_json(parent["derivation"]))
                                  if parent else None)
        result = evaluation.to_dict() | {k: v for k, v in evaluation.extras.items() if ":" in k}
        eval_end = time.time()
    except Exception as exc:  # noqa: BLE001 - a failure is a result, never a crash
        result = {"status": "failed", "failure": "error", "message": f"{type(exc).__name__}: {exc}"[:600]}
        eval_start = eval_end = time.time()
    timing = {"t_enter": started, "t_eval_start": eval_start, "t_eval_end": eval_end, "pid": os.getpid()}
    metrics = {k: v for k, v in result.items() if v is not None and (k in _RESULT_KEYS or ":" in k)}
    tune.report(metrics | {"progress": 100, "timing": timing})


# ------------------------------------------------------------------ driver side
class _ErrorLog:
    """A Tune callback that keeps each trial object, so the searcher can read the
    error Ray recorded for a trial whose worker died."""

    def __init__(self):
        from ray.tune import Callback

        class _Cb(Callback):
            def on_trial_start(cb_self, iteration, trials, trial, **info):
                self.trials[trial.trial_id] = trial

        self.trials: dict[str, Any] = {}
        self.callback = _Cb()

    def message(self, trial_id: str) -> str:
        trial = self.trials.pop(trial_id, None)
        text = ""
        try:
            with open(trial.error_file) as fh:  # type: ignore[union-attr]
                lines = [ln.strip() for ln in fh if ln.strip() and not ln.startswith("Failure #")]
            text = next((ln for ln in reversed(lines) if "Error" in ln or "Exception" in ln), lines[-1] if lines else "")
        except Exception:  # noqa: BLE001 - the message is a courtesy
            pass
        base = "the Ray worker running this trial failed"
        return (f"{base}: {text}" if text else base)[:600]


def _outcome(result: dict | None, error: bool, errors: _ErrorLog, trial_id: str) -> dict[str, Any]:
    """What the store records for a trial that Ray Tune says is complete."""
    if error or not result:
        return {"status": "failed", "failure": "error", "message": errors.message(trial_id)}
    errors.trials.pop(trial_id, None)
    if "status" in result:  # per-task values of a multi-task trial are named 'score:<task>' etc.
        return {k: v for k, v in result.items() if k in _RESULT_KEYS or ":" in k}
    # the last result was an intermediate report: the scheduler stopped the trial
    return {
        "status": "pruned",
        "train_loss": result.get("train_loss"),
        "steps": result.get("step"),
        "progress": result.get("progress"),
        "message": f"stopped early by the scheduler at {result.get('progress')}% of the budget",
    }


#: on_update callbacks of running searches, by token (see _searcher).
_CALLBACKS: dict[int, Callable[[Progress], None]] = {}


def _searcher(strategy, store: StudyStore, config: SearchConfig, progress: Progress, remaining: int,
              on_update: Callable[[Progress], None], errors: _ErrorLog):
    from ray.tune.search import Searcher

    reports = _reports(config)
    # Tune may pickle the searcher: keep the caller's callback (which may hold a
    # console or a lock) out of it, reachable through a module-level table.
    token = id(progress)
    _CALLBACKS[token] = on_update

    def notify(p: Progress) -> None:
        _CALLBACKS.get(token, lambda _: None)(p)

    class StrategySearcher(Searcher):
        """Our strategy as a Ray Tune searcher. Metric-less on purpose: the store,
        not Tune, ranks trials, and failed results carry no score."""

        def __init__(self):
            super().__init__(metric=None, mode=None)
            self.suggested = 0
            self.keeper = WeightKeeper.for_url(store.url)  # the best trials' weight files
            self.pending: dict[str, tuple[Any, Derivation, dict[str, float]]] = {}
            #: hash -> (trial number, derivation) of successful trials: parents to inherit from
            self.trained = {r.attrs.get("hash"): (r.number, r.derivation) for r in store.records() if r.ok}

        def suggest(self, trial_id: str):
            if self.suggested >= remaining:
                return Searcher.FINISHED
            self.suggested += 1
            t0 = time.perf_counter()
            ask_s = 0.0
            # drivers sharing the study: skip what it holds or others run, and
            # claim the trial against the study's total (store.claim)
            strategy.seen |= store.hashes()
            for _ in range(CLAIM_TRIES):
                t_ask = time.perf_counter()
                proposal = strategy.ask()
                ask_s += time.perf_counter() - t_ask
                rung = {"rung": proposal.info["rung"]} if proposal.info.get("rung") else {}  # multi-fidelity
                trial = store.claim(proposal.derivation, config.trials, strategy=strategy.name, origin=proposal.origin,
                                    parents=proposal.parents, driver=DRIVER, heartbeat=time.time(), **rung)
                if trial == FULL:
                    return Searcher.FINISHED
                if trial != DUPLICATE:
                    break
                strategy.seen.add(proposal.derivation.hash())
            else:  # the strategy keeps proposing what the study holds: the space is spent
                return Searcher.FINISHED
            t2 = time.perf_counter()
            timing = {"ask_s": ask_s, "store_start_s": t2 - t0 - ask_s, "t_suggested": time.time()}
            self.pending[trial_id] = (trial, proposal.derivation, timing)
            progress.running += 1
            notify(progress)
            return {
                "derivation": proposal.derivation.to_json(indent=None),
                "task": config.task,
                "task_options": config.task_options,
                "tasks": list(config.tasks),
                "train_options": config.train_options,
                "weights": None if config.tasks else weights_file(store.url, trial.number),  # for `archgram export`
                "budget": proposal.budget or config.budget,
                "inherit": self._parent(proposal) if config.inherit else None,
                "timeout": config.trial_seconds,
                "seed": config.seed + trial.number,
                "batch_size": config.batch_size,
                "lr": config.lr,
                "optimizer": config.optimizer,
                "device": _device(config),
                "cpus": config.cpus_per_trial,
                "reports": reports,
            }

        def _parent(self, proposal) -> dict[str, str] | None:
            """The kept weights of a mutated or crossed-over proposal's first parent."""
            if proposal.origin not in ("mutation", "crossover") or not proposal.parents:
                return None
            number, derivation = self.trained.get(proposal.parents[0], (None, None))
            path = None if number is None else weights_file(store.url, number)
            if path is None or not os.path.isfile(path):
                return None
            return {"path": path, "derivation": derivation.to_json(indent=None)}

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
            t_complete = time.time()
            if trial_id not in self.pending:  # Tune reports each trial once; be safe anyway
                return
            trial, derivation, timing = self.pending.pop(trial_id)
            progress.running -= 1
            outcome = _outcome(result, error, errors, trial_id)
            t0 = time.perf_counter()
            store.finish(trial, outcome)
            self.keeper.add(trial.number, outcome.get("score") if outcome.get("status") == "ok" else None)
            timing["store_finish_s"] = time.perf_counter() - t0
            # Tune flattens nested results: the worker's stamps arrive as timing/<key>
            timing.update({k[7:]: v for k, v in (result or {}).items() if k.startswith("timing/")})
            timing.update(t_complete=t_complete, number=trial.number, status=outcome["status"],
                          eval_s=outcome.get("total_seconds"))
            progress.timings.append(timing)
            ok = outcome.get("status") == "ok"
            if ok:
                self.trained[derivation.hash()] = (trial.number, derivation)
            strategy.tell(derivation, outcome.get("score") if ok else None, _metrics(outcome))
            progress.done += 1
            if outcome["status"] == "pruned":
                progress.pruned += 1
            elif not ok:
                progress.failed += 1
            if ok and (progress.best is None or outcome["score"] > progress.best):
                progress.best, progress.best_hash = outcome["score"], derivation.hash()
            progress.last = {**outcome, "number": trial.number, "hash": derivation.hash()}
            notify(progress)

    return StrategySearcher()


_RESULT_KEYS = (
    "status", "score", "metric", "params", "flops", "latency_ms", "train_seconds", "steps", "failure", "message",
    "train_loss", "val_loss", "total_seconds", "cpu_seconds", "seed", "budget", "batch_size",  # seed..: to retrain on export
)


def _metrics(outcome: dict[str, Any]) -> dict[str, Any]:
    """What a strategy learns besides the score; ``pruned`` marks an early stop."""
    out = {k: outcome[k] for k in ("params", "flops", "latency_ms", "train_loss", "budget") if outcome.get(k) is not None}
    if outcome.get("status") == "pruned":
        out["pruned"] = True
    return out




def _device(config: SearchConfig) -> str:
    if config.device != "auto":
        return config.device
    return "cuda" if config.gpus_per_trial > 0 else "cpu"


# ------------------------------------------------------------------ schedulers
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
SCHEDULERS: Registry[Callable[[SearchConfig], Any]] = Registry("scheduler")
SCHEDULERS.add("fifo", _fifo)
SCHEDULERS.add("asha", _asha)


def _check_scheduler(config: SearchConfig) -> None:
    SCHEDULERS.get(config.scheduler)
    if config.scheduler == "asha":
        if not 0 < config.asha_grace < 1:
            raise ArchgramError(f"ASHA grace must be a fraction of the budget in (0, 1), got {config.asha_grace}")
        if not config.asha_reduction > 1:
            raise ArchgramError(f"ASHA reduction factor must be above 1, got {config.asha_reduction}")
        if config.asha_reports < 2:
            raise ArchgramError(f"ASHA needs at least 2 reports per trial, got {config.asha_reports}")


def _reports(config: SearchConfig) -> int:
    """Reports per trial: none under FIFO (nothing would read them); under ASHA
    ``asha_reports``, but no more than a steps budget has steps."""
    if config.scheduler == "fifo":
        return 0
    from archgram.search.evaluator import Budget

    budget = Budget.parse(config.budget)
    return min(config.asha_reports, budget.steps) if budget.steps is not None else config.asha_reports


def run_search(config: SearchConfig, on_update: Callable[[Progress], None] = lambda p: None,
               task=None) -> StudyStore:
    """Run (or resume) the search described by ``config``; return its store.
    ``task``: the task object (a data task, a task from Python); by default the
    one ``config.task`` names, built with ``config.task_options``."""
    from archgram.search.evaluator import Budget
    from archgram.search.training.options import check_training
    from archgram.tasks import get_task

    if config.trials < 1 or config.workers < 1:
        raise ArchgramError("--trials and --workers must be at least 1")
    if task is None:
        task = resolve(config.task, config.task_options) if not config.tasks else get_task(config.task)
    config, recipe = resolve_recipe(config, task)
    _check_scheduler(config)
    budget = Budget.parse(config.budget)  # an unreadable budget fails here, not in every worker
    check_training(config.lr, config.optimizer, lr_name="--lr")
    _check_budget_policies(config, budget)  # rungs and prescreen the budget cannot hold: before any trial
    grammar = load_grammar(config.grammar)
    shape = task.body_input_shape(config.batch_size)
    store = StudyStore(
        config.study,
        objectives=config.objectives,
        meta={
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
        },
    )
    options = dict(config.strategy_options)
    strategy = get_strategy(config.strategy)(grammar, shape, seed=config.seed, target=task.output_target(config.batch_size), **options)
    strategy = _wrap(strategy, config, task)
    if config.reference and not config.tasks:
        from archgram.search.reference_arch import cached_reference

        cached_reference(store, task, recipe, train_options=config.train_options)  # raises if it cannot train
    if config.seed_reference and not config.tasks:
        from archgram.search.reference_arch import seed_derivation

        seed = seed_derivation(task, grammar, config.batch_size)
        if seed is not None:
            strategy.enqueue(seed, origin="reference")
    records = store.records()
    strategy.replay([(r.derivation, r.score, _metrics(_replayed(r))) for r in records if r.derivation is not None])
    progress = Progress(
        total=config.trials,
        done=len(records),
        failed=sum(r.state == "FAIL" for r in records),
        pruned=sum(r.state == "PRUNED" for r in records),
        done_at_start=len(records),
    )
    best = store.leaderboard(1)
    if best:
        progress.best, progress.best_hash = best[0].score, best[0].attrs.get("hash")
    remaining = config.trials - len(records)
    on_update(progress)
    if remaining > 0:
        _run_ray(config, strategy, store, progress, remaining, on_update, None if config.tasks else task)
    if not config.tasks and config.final_test:
        from archgram.search.final import record_final

        record_final(store, task, config.batch_size)  # test, once, for the final pick
    return store


def _check_budget_policies(config: SearchConfig, budget) -> None:
    """Refuse multi-fidelity rungs or a prescreen that the trial budget cannot hold."""
    from archgram.search.fidelity import rung_budgets, step_budget
    from archgram.search.prescreen import check_prescreen

    if config.rungs > 1:
        rung_budgets(step_budget(budget), config.rungs, config.eta)  # raises with the reason
    check_prescreen(config.prescreen, budget.steps, config.proxy)


def _wrap(strategy, config: SearchConfig, task):
    """The strategy behind the budget policies the config asks for: prescreen
    (proxy's best of K), then successive-halving rungs on top."""
    if config.prescreen > 1:
        from archgram.search.prescreen import Prescreen

        strategy = Prescreen(strategy, task, config.batch_size, k=config.prescreen, proxy=config.proxy,
                             seed=config.seed)
    if config.rungs > 1:
        from archgram.search.fidelity import SuccessiveHalving

        strategy = SuccessiveHalving(strategy, config.budget, rungs=config.rungs, eta=config.eta)
    return strategy


def _replayed(record) -> dict[str, Any]:
    return dict(record.attrs) | {"status": {"COMPLETE": "ok", "PRUNED": "pruned"}.get(record.state, "failed")}


def _ray_dir(url: str) -> str:
    """Ray Tune's scratch files go beside a SQLite study, else to a temp folder."""
    if url.startswith("sqlite:///"):
        return os.path.join(os.path.dirname(url[len("sqlite:///"):]), ".ray")
    import tempfile

    return tempfile.mkdtemp(prefix="archgram-ray-")


#: Ray Tune settings for many short trials; a user's environment wins.
_TUNE_ENV = {
    "RAY_DEDUP_LOGS": "0",
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # no per-trial CSV/JSON/TensorBoard files
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",  # failed results carry no score
    "TUNE_GLOBAL_CHECKPOINT_S": "600",  # the study store, not Tune's state, is what resumes
    "TUNE_WARN_THRESHOLD_S": "60",
}


#: Ray gives its raylet a fixed 30 s to register; on a loaded 2-core machine that
#: can pass, so a local start is tried this many times before giving up.
RAY_START_ATTEMPTS = 3


def _start_ray(ray, init: dict[str, Any], address: str | None) -> None:
    """ray.init, retrying a local start that timed out under load; one-line errors."""
    for attempt in range(1, RAY_START_ATTEMPTS + 1):
        try:
            ray.init(**init)
            return
        except ConnectionError as exc:
            raise ArchgramError(f"cannot join the Ray cluster at {address}: {exc}") from None
        except Exception as exc:
            if address or "timed out during startup" not in str(exc):
                raise
            ray.shutdown()
            if attempt == RAY_START_ATTEMPTS:
                raise ArchgramError(f"local Ray did not start in {attempt} tries (the machine may be overloaded): "
                                    f"{str(exc).splitlines()[0]}") from None
            time.sleep(2 * attempt)


def _heartbeats(store: StudyStore, searcher, stop) -> None:
    """Renew this driver's running trials until ``stop`` is set (drivers.py)."""
    while not stop.wait(HEARTBEAT_S):
        try:
            store.heartbeat([trial for trial, _, _ in list(searcher.pending.values())])
        except Exception:  # noqa: BLE001 - a missed heartbeat only risks a stale mark
            pass


def _run_ray(config, strategy, store, progress, remaining, on_update, task=None) -> None:
    for key, value in _TUNE_ENV.items():
        os.environ.setdefault(key, value)
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
        _start_ray(ray, init, config.address)
    stop = threading.Event()
    try:
        errors = _ErrorLog()
        searcher = _searcher(strategy, store, config, progress, remaining, on_update, errors)
        resources = {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial}
        trainable = _trainable if task is None else tune.with_parameters(_trainable, task=task)
        threading.Thread(target=_heartbeats, args=(store, searcher, stop), daemon=True).start()
        tuner = tune.Tuner(
            tune.with_resources(trainable, resources),
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=SCHEDULERS[config.scheduler](config),
                num_samples=-1,
                max_concurrent_trials=config.workers,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=f"archgram-{os.getpid()}",
                storage_path=_ray_dir(store.url),
                verbose=0,
                log_to_file=False,
                callbacks=[errors.callback],
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
            ),
        )
        tuner.fit()
    finally:
        stop.set()
        _CALLBACKS.pop(id(progress), None)
        if started_here:
            ray.shutdown()
