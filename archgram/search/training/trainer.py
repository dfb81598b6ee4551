"""The training loop of one trial: batches, optimizer, schedule, until the budget is spent.

``train`` runs steps until the budget's steps, epochs or seconds end (whichever
comes first) or ``on_step`` returns True, and fills the result's steps, time
and training loss. A NaN or infinite loss raises NonFinite; ``check`` (the
evaluation's wall clock) is asked before every step.
"""
from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from archgram.search.budget import Budget
from archgram.search.guards import sync
from archgram.search.training.options import OPTIMIZERS, TrainOptions
from archgram.search.trial_result import NonFinite, TrialResult


@dataclass(frozen=True)
class TrainSetup:
    """How one trial trains (checked by the evaluator before anything is built)."""

    budget: Budget
    batch_size: int
    lr: float
    optimizer: str
    options: TrainOptions
    seed: int
    device: torch.device


def auxiliary_loss(model: nn.Module) -> torch.Tensor | float:
    """Sum of the ``aux_loss`` tensors ops stored during the last forward. Only
    instance attributes count, so a wrapper exposing its inner module's loss as a
    property is not counted twice."""
    total: torch.Tensor | float = 0.0
    for m in model.modules():
        aux = m.__dict__.get("aux_loss")
        if isinstance(aux, torch.Tensor) and aux.requires_grad:
            total = total + aux
    return total


def train_batches(data, batch_size: int, gen: torch.Generator, device: torch.device):
    """Training batches (x, y) without end: each epoch a permutation drawn from
    ``gen``, cut into full batches (the body is typed for ``batch_size``). Inputs
    that stay on disk (``loader``: data larger than memory) are read ahead by a
    DataLoader's worker processes; tensors are indexed in place."""
    n = data.n_train

    def index_batches():
        while True:
            perm = torch.randperm(n, generator=gen)
            for k in range(n // batch_size):
                yield perm[k * batch_size:(k + 1) * batch_size]

    loader = getattr(data.x_train, "loader", None)
    if loader is not None:
        pending: collections.deque = collections.deque()

        def recorded():
            for idx in index_batches():
                pending.append(idx)
                yield idx

        stream = loader(recorded())
        try:
            for xb in stream:
                idx = pending.popleft()
                yield xb.to(device), data.y_train[idx].to(device)
        finally:
            del stream  # shuts the loader's workers down
    else:
        for idx in index_batches():
            idx = idx.to(device)
            yield data.x_train[idx], data.y_train[idx]


def train(model: nn.Module, task, data, setup: TrainSetup, result: TrialResult, check: Callable[[], None],
          on_step: Callable[[int, float], Any] | None = None) -> None:
    """Train ``model`` on ``data`` under ``setup``; record steps, time and loss in ``result``."""
    bs, opts = setup.batch_size, setup.options
    per_epoch = data.n_train // bs  # the last partial batch is dropped: the body is typed for ``bs``
    total, seconds = setup.budget.total_steps(per_epoch), setup.budget.seconds
    params = [p for p in model.parameters() if p.requires_grad]
    opt = OPTIMIZERS[setup.optimizer](params, setup.lr, opts) if params else None
    losses: list[float] = []
    curriculum = [m for m in model.modules() if callable(getattr(m, "set_progress", None))]
    model.train()
    t0 = time.perf_counter()
    step = 0
    batches = train_batches(data, bs, torch.Generator().manual_seed(setup.seed), setup.device)
    try:
        while True:
            elapsed = time.perf_counter() - t0
            if step > 0 and ((total is not None and step >= total) or (seconds is not None and elapsed >= seconds)):
                break
            check()
            xb, yb = next(batches)
            _follow_progress(opt, curriculum, setup,
                             max(step / total if total else 0.0, elapsed / seconds if seconds else 0.0))
            value = _step(model, task, opt, params, xb, yb, opts, step)
            step += 1
            losses.append(value)
            result.steps, result.train_seconds, result.epochs = step, time.perf_counter() - t0, step / per_epoch
            if on_step is not None and on_step(step, value) is True:
                result.extras["stopped_early"] = True
                break
    finally:
        batches.close()  # stops a data loader's worker processes
    sync(setup.device)
    result.train_seconds = time.perf_counter() - t0
    tail = losses[-max(1, len(losses) // 10):]
    result.train_loss = sum(tail) / len(tail)


def _follow_progress(opt, curriculum: list[nn.Module], setup: TrainSetup, progress: float) -> None:
    """Learning rate from the schedule, and training curricula, at ``progress`` of the budget."""
    if opt is not None:
        for group in opt.param_groups:
            group["lr"] = setup.lr * setup.options.factor(progress)
    for m in curriculum:  # training curricula, e.g. progressive masking (S08)
        m.set_progress(round(progress * 1000), 1000)


def _step(model: nn.Module, task, opt, params: list, xb, yb, opts: TrainOptions, step: int) -> float:
    """One optimizer step on one batch; the batch's loss."""
    with task.teaching(model, yb):  # teacher forcing, for heads that read their own outputs
        if opts.adversarial:  # AT / VAT on the embedding (S74, S75)
            from archgram.search.training import training_loss

            loss = training_loss(model, task, xb, yb, opts)
        else:
            loss = task.loss(model(xb), yb)
    if opts.aux_weight:
        loss = loss + opts.aux_weight * auxiliary_loss(model)
    value = float(loss.detach())
    if not math.isfinite(value):
        raise NonFinite(f"training loss became {value} at step {step}")
    if opt is not None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if opts.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, opts.grad_clip)
        opt.step()
    return value
