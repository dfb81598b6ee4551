"""Scoring a trained model: its metric and loss on one split, and its forward latency.

Both run in batches of the size the body was typed for; a last partial batch
is padded up to it. Non-finite predictions or scores raise NonFinite, so a
broken model never scores.
"""
from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from archgram.search.guards import sync
from archgram.search.trial_result import NonFinite
from archgram.tasks import Task


def pad(x: torch.Tensor, size: int) -> torch.Tensor:
    """Fill a last partial batch up to ``size`` rows (the body was typed for that batch)."""
    if len(x) == size:
        return x
    reps = math.ceil(size / len(x))
    return torch.cat([x] * reps)[:size] if reps > 1 else torch.cat([x, x[: size - len(x)]])


@torch.no_grad()
def score_split(model: nn.Module, task: Task, data, split: str, batch_size: int,
                check: Callable[[], None] | None = None) -> tuple[float, float]:
    """(metric, loss) of ``model`` on one split of ``data`` ('val' during search;
    'test' once, for the final pick), in batches of the size the body was typed
    for. Non-finite predictions or scores raise, so a broken model never scores."""
    model.eval()
    x, y = data.split(split)
    preds = []
    for i in range(0, len(x), batch_size):
        if check is not None:
            check()
        xb = x[i:i + batch_size]
        preds.append(model(pad(xb, batch_size))[: len(xb)].float().cpu())
    pred = torch.cat(preds)
    name = {"val": "validation"}.get(split, split)
    if not torch.isfinite(pred).all():
        raise NonFinite(f"{name} predictions contain NaN or inf")
    y = y.cpu()
    score = float(task.metric(pred, y))
    if not math.isfinite(score):
        raise NonFinite(f"{name} {task.metric_name} is {score}")
    return score, float(task.loss(pred, y))


@torch.no_grad()
def latency_ms(model: nn.Module, data, batch_size: int, device: torch.device, repeats: int,
               check: Callable[[], None]) -> float | None:
    """Median milliseconds of one eval-mode forward of a batch, after two warm-up calls."""
    model.eval()
    xb = pad(data.x_val[:batch_size], batch_size)  # any split would do: latency only
    times = []
    for i in range(2 + repeats):
        check()
        sync(device)
        t = time.perf_counter()
        model(xb)
        sync(device)
        if i >= 2:  # two warm-up calls
            times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times) if times else None
