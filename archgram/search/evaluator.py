"""Evaluator: train one derivation on one task under a budget and score it.

``evaluate`` is the one place where an architecture meets data. It builds
stem -> network -> head (task_model.py), trains with AdamW (cosine or constant
learning rate) until the budget (steps, seconds or epochs, whichever ends
first) is spent (training/trainer.py), scores the validation split and
measures parameters, FLOPs and latency (scoring.py).

A bad architecture is a *result*, never a crash: a derivation that does not
type-check for the task, a NaN/inf loss, running out of memory, running past the
wall-clock cap and any other exception inside model code come back as a
``TrialResult`` with ``status='failed'``, the failure kind and the message
(trial_result.py). Mistakes of the caller (an unknown task, an unreadable
budget, a bad option) still raise ``ArchgramError`` at once, before anything
is trained.

Under a seed the run is deterministic on the CPU: weights are initialised and
batches drawn from generators seeded by ``seed`` (the global RNG state is left
as it was, guards.py), so the same call gives exactly the same score.
"""
from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from archgram.errors import ArchgramError
from archgram.grammar.derivation import Derivation
from archgram.search.budget import Budget
from archgram.search.guards import alarm, seeded, threads, warm_up
from archgram.search.scoring import latency_ms, score_split
from archgram.search.task_model import TaskModel, build_model
from archgram.search.training.options import TrainOptions, check_training
from archgram.search.training.trainer import TrainSetup, auxiliary_loss, train, train_batches
from archgram.search.trial_result import FAILURES, TrialResult, TrialTimeout, classify, failure_message
from archgram.tasks import Task, get_task

__all__ = ["FAILURES", "Budget", "TaskModel", "TrialResult", "auxiliary_loss", "build_model", "classify", "evaluate",
           "score_split", "train_batches"]


def evaluate(
    derivation: Derivation,
    task: Task | str,
    budget: Budget | str | int,
    seed: int = 0,
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    lr: float = 1e-3,
    optimizer: str = "adamw",
    train_options: dict[str, Any] | None = None,
    *,
    timeout: float | None = None,
    on_step: Callable[[int, float], Any] | None = None,
    data_seed: int = 0,
    weights: str | None = None,
    inherit_from: tuple[str, Derivation] | None = None,
) -> TrialResult:
    """Train ``derivation`` on ``task`` within ``budget`` and score it on the val split.

    ``batch_size`` defaults to the batch the derivation was sampled for.
    ``timeout`` is the hard wall-clock cap of the whole call (build, train,
    score); it defaults to 3x the seconds budget plus 10 s, and to none when the
    budget has no seconds. ``on_step(step, loss)`` is called after every
    training step; returning True stops training early (a pruned trial is still
    scored). ``data_seed`` picks the generated data set (kept fixed across
    trials so their scores compare); ``seed`` drives initialisation and batches.
    ``weights``: a path where a successful run keeps its trained state dict
    (safetensors; ``archgram export`` reads it). ``inherit_from``: (weights
    file, derivation) of a trained parent; the model starts from its weights
    for every subtree it shares with it (``archgram.search.inherit``).
    """
    warm_up()
    started, cpu_started = time.perf_counter(), time.process_time()
    task = get_task(task) if isinstance(task, str) else task
    setup = _setup(derivation, budget, seed, device, batch_size, lr, optimizer, train_options)
    data = task.data(data_seed)
    if setup.batch_size < 1 or setup.batch_size > data.n_train:
        raise ArchgramError(f"batch size {setup.batch_size} does not fit the {data.n_train} training examples of "
                            f"'{task.name}'")
    if timeout is None:
        timeout = setup.budget.default_timeout()
    run = _Run(derivation, task, setup, data, _new_result(derivation, task, setup),
               deadline=started + timeout if timeout is not None else None, on_step=on_step, inherit_from=inherit_from)
    try:
        with alarm(run.deadline), threads(setup.options.threads), seeded(seed, setup.device, setup.options.deterministic):
            run.execute()
            if weights is not None:
                run.keep(weights)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        _fail(run.result, exc, timeout)
    finally:
        run.release()
        gc.collect()
        if setup.device.type == "cuda":
            torch.cuda.empty_cache()
    run.result.total_seconds = time.perf_counter() - started
    run.result.cpu_seconds = time.process_time() - cpu_started
    return run.result


def _setup(derivation: Derivation, budget, seed: int, device, batch_size: int | None, lr: float, optimizer: str,
           train_options: dict[str, Any] | None) -> TrainSetup:
    """The checked training settings; a caller's mistake raises ArchgramError here."""
    budget = Budget.parse(budget)
    opts = TrainOptions.from_dict(train_options)
    check_training(lr, optimizer)
    batch_size = int(batch_size or derivation.input_shape[0])
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ArchgramError("device 'cuda' requested but CUDA is not available")
    return TrainSetup(budget, batch_size, lr, optimizer, opts, seed, device)


def _new_result(derivation: Derivation, task: Task, setup: TrainSetup) -> TrialResult:
    result = TrialResult(status="ok", metric=task.metric_name, task=task.name, seed=setup.seed,
                         device=str(setup.device), budget=str(setup.budget), batch_size=setup.batch_size)
    try:
        result.arch_hash = derivation.hash()
    except Exception as exc:  # a derivation naming unknown ops still gets a result
        result.arch_hash = ""
        result.message = str(exc)
    return result


def _fail(result: TrialResult, exc: Exception, timeout: float | None) -> None:
    """Turn an exception from model code into a failed result."""
    kind = classify(exc)
    result.status, result.failure, result.message = "failed", kind, failure_message(exc, kind)
    if kind == "timeout" and timeout is not None:
        result.message = f"ran past the {timeout:g}s wall-clock cap ({result.message}; {result.steps} steps done)"
    result.score = None


class _Run:
    """The state of one evaluation, so a failure at any point can be cleaned up."""

    def __init__(self, derivation: Derivation, task: Task, setup: TrainSetup, data, result: TrialResult, *,
                 deadline: float | None, on_step, inherit_from: tuple[str, Derivation] | None):
        self.derivation, self.task, self.setup, self.data, self.result = derivation, task, setup, data, result
        self.deadline, self.on_step, self.inherit_from = deadline, on_step, inherit_from
        self.model: nn.Module | None = None

    def check_clock(self) -> None:
        if self.deadline is not None and time.perf_counter() > self.deadline:
            raise TrialTimeout("wall-clock cap reached")

    def release(self) -> None:
        self.model = self.data = None

    def execute(self) -> None:
        r, task, setup = self.result, self.task, self.setup
        model, _, flops = build_model(self.derivation, task, setup.batch_size)
        r.params = sum(p.numel() for p in model.parameters())
        r.flops = flops
        if self.inherit_from is not None:
            self.inherit(model)
        self.check_clock()
        self.model = model = model.to(setup.device)
        data = self.data.to(setup.device)
        train(model, task, data, setup, r, self.check_clock, self.on_step)
        r.score, r.val_loss = score_split(model, task, data, "val", setup.batch_size, self.check_clock)
        r.latency_ms = latency_ms(model, data, setup.batch_size, setup.device, setup.options.latency_repeats,
                                  self.check_clock)

    def inherit(self, model: nn.Module) -> None:
        """Start from the parent's trained weights where the child shares its subtrees."""
        from archgram.search.inherit import inherit
        from archgram.search.weights import load_weights

        path, parent = self.inherit_from
        try:
            state = load_weights(path)
        except (OSError, ValueError) as exc:  # the parent's file is gone: train from scratch, say so
            self.result.extras["inherit_error"] = f"{type(exc).__name__}: {exc}"
            return
        self.result.extras["inherited"] = inherit(model, state, parent, self.derivation)

    def keep(self, path: str) -> None:
        """Save the trained state dict for export; a failure to save is noted, not fatal."""
        from archgram.search.weights import save_weights

        r = self.result
        problem = save_weights(self.model, path, {"hash": r.arch_hash, "score": r.score, "task": self.task.name,
                                                  "seed": self.setup.seed})
        if problem:
            r.extras["weights_error"] = problem
