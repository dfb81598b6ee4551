"""The Ray worker side of a search: evaluate one proposed derivation, report it.

Ray Tune calls ``trainable`` with the trial config the driver's searcher built;
it evaluates, and reports the result (plus, under ASHA, intermediate training
losses through ``LossReporter``). Everything but a dead worker comes back as a
result: evaluate turns model problems into failures, and ``trainable`` turns a
broken config (say, a task option this worker cannot build) into a failed
'error' with its message.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

from archgram.grammar.derivation import Derivation
from archgram.search.outcomes import stored

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


class LossReporter:
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


def trainable(config: dict[str, Any], task=None) -> None:
    """Runs on a Ray worker: evaluate one derivation, report its metrics.

    ``task`` is the driver's task object, with its data, from Ray's object store
    (``tune.with_parameters``: one copy per node, numpy arrays shared by the
    node's workers); the worker never rebuilds it from a path or a name. A
    multi-task search ships task names instead."""
    from ray import tune

    timing: dict[str, Any] = {"t_enter": time.time()}
    try:
        result = _evaluate(config, task, tune.report, timing)
    except Exception as exc:  # noqa: BLE001 - a failure is a result, never a crash
        result = {"status": "failed", "failure": "error", "message": f"{type(exc).__name__}: {exc}"[:600]}
        timing["t_eval_start"] = timing["t_eval_end"] = time.time()
    timing["pid"] = os.getpid()
    metrics = {k: v for k, v in stored(result).items() if v is not None}
    tune.report(metrics | {"progress": 100, "timing": timing})


def _evaluate(config: dict[str, Any], task, report, timing: dict[str, Any]) -> dict[str, Any]:
    """The evaluator's result for one trial config, with per-task values of a
    multi-task trial (``score:<task>`` ...) lifted out of its extras. Stamps
    ``timing`` around the evaluation itself."""
    from archgram.search.budget import Budget
    from archgram.search.evaluator import evaluate
    from archgram.search.training.options import training_settings

    derivation = Derivation.from_json(config["derivation"])
    if task is None:  # multi-task searches ship task names
        task = _worker_task(config["task"], config.get("task_options", {}))
    budget = Budget.parse(config["budget"])
    on_step = _reporter(config, task, budget, report)
    timing["t_eval_start"] = time.time()
    common = {"seed": config["seed"], "device": config.get("device", "cpu"), "batch_size": config["batch_size"],
              "train_options": {**config.get("train_options", {}), "threads": max(1, int(config.get("cpus", 1)))},
              "on_step": on_step, **training_settings(config)}
    if config.get("tasks"):  # multi-task (S29): the same derivation on every task
        from archgram.search.multitask import evaluate_tasks

        tasks = [_worker_task(name, {}) for name in config["tasks"]]
        evaluation = evaluate_tasks(derivation, tasks, budget, timeout=config.get("timeout"), **common)
    else:
        parent = config.get("inherit")  # weight inheritance: the parent's kept weights and derivation
        evaluation = evaluate(derivation, task, budget, weights=config.get("weights"), timeout=config.get("timeout"),
                              inherit_from=(parent["path"], Derivation.from_json(parent["derivation"]))
                              if parent else None, **common)
    result = evaluation.to_dict() | {k: v for k, v in evaluation.extras.items() if ":" in k or k == "inherited"}
    timing["t_eval_end"] = time.time()
    return result


def _reporter(config: dict[str, Any], task, budget, report) -> LossReporter | None:
    """Intermediate loss reports when the scheduler asks for them (ASHA)."""
    if config.get("reports", 0) <= 0:
        return None
    per_epoch = max(1, task.data(0).n_train // config["batch_size"])
    return LossReporter(report, budget, per_epoch, config["reports"])
