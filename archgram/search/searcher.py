"""Our strategy as a Ray Tune ``Searcher``: the driver's side of every trial.

``suggest`` asks the strategy, claims the trial in the study (claims.py) and
hands Tune the trial config a worker evaluates (worker.py);
``on_trial_complete`` stores the outcome, tells the strategy and updates the
``Progress`` a display shows. A trial ASHA stops is stored as Optuna PRUNED
(finished and counted, not re-run) with its last training loss; the strategy
is told score ``None`` with ``metrics["pruned"] = True``: a stopped trial has
no validation score, and a training loss is not comparable to the scores the
strategy ranks, so like a failure it is never chosen as a parent.

Under a time limit (time_limit.py) ``suggest`` returns FINISHED once it has
passed, and gives each trial it starts the cap min(trial_seconds, time left).

Overhead: each trial's proposal (``strategy.ask``), storage
(``store.start``/``finish``) and the worker's evaluate are timed into
``Progress.timings`` (see experiments/search/bench_overhead.py).
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

from ray.tune import Callback
from ray.tune.search import Searcher

from archgram.grammar.derivation import Derivation
from archgram.search.claims import claim_next
from archgram.search.config import SearchConfig, trial_device
from archgram.search.inherit import inherits, trial_budget
from archgram.search.outcomes import stored, strategy_metrics
from archgram.search.progress import Progress
from archgram.search.schedulers import reports_per_trial
from archgram.search.store import StudyStore
from archgram.search.time_limit import TimeLimit, trial_cap
from archgram.search.weights import WeightKeeper, weights_file

#: on_update callbacks of running searches, by token. Tune may pickle the
#: searcher: the caller's callback (which may hold a console or a lock) stays
#: out of it, reachable through this module-level table.
_CALLBACKS: dict[int, Callable[[Progress], None]] = {}


class ErrorLog(Callback):
    """A Tune callback that keeps each trial object, so the searcher can read the
    error Ray recorded for a trial whose worker died."""

    def __init__(self):
        super().__init__()
        self.trials: dict[str, Any] = {}

    def on_trial_start(self, iteration, trials, trial, **info):
        self.trials[trial.trial_id] = trial

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


def outcome(result: dict | None, error: bool, errors: ErrorLog, trial_id: str) -> dict[str, Any]:
    """What the store records for a trial that Ray Tune says is complete."""
    if error or not result:
        return {"status": "failed", "failure": "error", "message": errors.message(trial_id)}
    errors.trials.pop(trial_id, None)
    if "status" in result:  # per-task values of a multi-task trial are named 'score:<task>' etc.
        return stored(result)
    # the last result was an intermediate report: the scheduler stopped the trial
    return {
        "status": "pruned",
        "train_loss": result.get("train_loss"),
        "steps": result.get("step"),
        "progress": result.get("progress"),
        "message": f"stopped early by the scheduler at {result.get('progress')}% of the budget",
    }


class StrategySearcher(Searcher):
    """Our strategy as a Ray Tune searcher. Metric-less on purpose: the store,
    not Tune, ranks trials, and failed results carry no score."""

    def __init__(self, strategy, store: StudyStore, config: SearchConfig, progress: Progress, remaining: int,
                 on_update: Callable[[Progress], None], errors: ErrorLog, limit: TimeLimit | None = None):
        super().__init__(metric=None, mode=None)
        self.strategy, self.store, self.config, self.progress = strategy, store, config, progress
        self.remaining, self.errors, self.limit = remaining, errors, limit
        #: Tune trial ids of trials whose wall-clock cap is the time left to ``limit``
        self.capped: set[str] = set()
        self.reports = reports_per_trial(config)
        self.token = id(progress)
        self.suggested = 0
        self.keeper = WeightKeeper.for_url(store.url)  # the best trials' weight files
        self.pending: dict[str, tuple[Any, Derivation, dict[str, float]]] = {}
        #: hash -> (trial number, derivation) of successful trials: parents to inherit from
        self.trained = {r.attrs.get("hash"): (r.number, r.derivation) for r in store.records() if r.ok}
        _CALLBACKS[self.token] = on_update

    def close(self) -> None:
        """Forget the caller's callback (the search is over)."""
        _CALLBACKS.pop(self.token, None)

    def running(self) -> list:
        """The trials this driver runs now (for their heartbeat)."""
        return [trial for trial, _, _ in list(self.pending.values())]

    def _notify(self) -> None:
        _CALLBACKS.get(self.token, lambda _: None)(self.progress)

    def suggest(self, trial_id: str):
        if self.suggested >= self.remaining:
            return Searcher.FINISHED
        if self.limit is not None and self.limit.passed():  # running trials finish by their caps
            if self.progress.stopped is None:
                self.progress.stopped = self.limit.reason(self.progress.done + self.progress.running,
                                                          self.progress.total)
                self._notify()
            return Searcher.FINISHED
        self.suggested += 1
        t0 = time.perf_counter()
        # drivers sharing the study: skip what it holds or others run, and
        # claim the trial against the study's total (store.claim)
        claim = claim_next(self.strategy, self.store, self.config.trials)
        if claim is None:
            return Searcher.FINISHED
        t2 = time.perf_counter()
        timing = {"ask_s": claim.ask_s, "store_start_s": t2 - t0 - claim.ask_s, "t_suggested": time.time()}
        self.pending[trial_id] = (claim.trial, claim.proposal.derivation, timing)
        self.progress.running += 1
        self._notify()
        return self._trial_config(claim.proposal, claim.trial.number, trial_id)

    def _trial_config(self, proposal, number: int, trial_id: str = "") -> dict[str, Any]:
        """What the worker needs to evaluate one proposal (worker.trainable)."""
        config = self.config
        parent = self._parent(proposal) if config.inherit else None
        budget = trial_budget(proposal, parent, config.budget)
        left = self.limit.left() if self.limit is not None else None
        timeout = trial_cap(config.trial_seconds, budget, left)
        if left is not None and timeout < trial_cap(config.trial_seconds, budget, math.inf):  # the limit's cap
            self.capped.add(trial_id)
        return {
            "derivation": proposal.derivation.to_json(indent=None),
            "task": config.task,
            "task_options": config.task_options,
            "tasks": list(config.tasks),
            "train_options": config.train_options,
            "weights": None if config.tasks else weights_file(self.store.url, number),  # for `archgram export`
            "budget": budget,
            "inherit": parent,
            "timeout": timeout,
            "seed": config.seed + number,
            "batch_size": config.batch_size,
            "lr": config.lr,
            "optimizer": config.optimizer,
            "device": trial_device(config),
            "cpus": config.cpus_per_trial,
            "reports": self.reports,
        }

    def _parent(self, proposal) -> dict[str, str] | None:
        """The kept weights of a mutated or crossed-over proposal's first parent
        (of a promotion: its own run on the rung below)."""
        if not inherits(proposal):
            return None
        number, derivation = self.trained.get(proposal.parents[0], (None, None))
        path = None if number is None else weights_file(self.store.url, number)
        if path is None or not os.path.isfile(path):
            return None
        return {"path": path, "derivation": derivation.to_json(indent=None)}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        t_complete = time.time()
        if trial_id not in self.pending:  # Tune reports each trial once; be safe anyway
            return
        trial, derivation, timing = self.pending.pop(trial_id)
        self.progress.running -= 1
        done = outcome(result, error, self.errors, trial_id)
        if trial_id in self.capped and done.get("failure") == "timeout":
            done["message"] = f"{done.get('message') or 'timeout'} (the time left of --time-limit {self.limit.text})"
        self.capped.discard(trial_id)
        ok = done.get("status") == "ok"
        t0 = time.perf_counter()
        self.store.finish(trial, done)
        self.keeper.add(trial.number, done.get("score") if ok else None)
        timing["store_finish_s"] = time.perf_counter() - t0
        # Tune flattens nested results: the worker's stamps arrive as timing/<key>
        timing.update({k[7:]: v for k, v in (result or {}).items() if k.startswith("timing/")})
        timing.update(t_complete=t_complete, number=trial.number, status=done["status"],
                      eval_s=done.get("total_seconds"))
        self.progress.timings.append(timing)
        if ok:
            self.trained[derivation.hash()] = (trial.number, derivation)
        self.strategy.tell(derivation, done.get("score") if ok else None, strategy_metrics(done))
        self.progress.finished(done, trial.number, derivation.hash())
        self._notify()
