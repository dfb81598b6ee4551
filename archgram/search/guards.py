"""The process state one evaluation sets and restores: a hard wall-clock stop,
torch's thread count and a seeded RNG, plus the one-off warm-up before the clock.

Each is a context manager, so an evaluation that fails anywhere leaves the
caller's signal handlers, threads and random state as they were.
"""
from __future__ import annotations

import contextlib
import signal
import threading
import time

import torch
from torch import nn

from archgram.search.trial_result import TrialTimeout


@contextlib.contextmanager
def alarm(deadline: float | None):
    """Hard stop: raise TrialTimeout in the main thread when ``deadline`` passes, even
    inside a long forward. Only where SIGALRM is free (main thread, no handler or
    timer installed by someone else); the training loop also checks the clock."""
    usable = (
        deadline is not None
        and hasattr(signal, "SIGALRM")
        and threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, None)
        and signal.getitimer(signal.ITIMER_REAL)[0] == 0
    )
    if not usable:
        yield
        return

    def fire(signum, frame):
        raise TrialTimeout("wall-clock cap reached (interrupted)")

    previous = signal.signal(signal.SIGALRM, fire)
    try:
        signal.setitimer(signal.ITIMER_REAL, max(deadline - time.perf_counter(), 1e-3))
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def threads(n: int | None):
    """torch's intra-op threads set to ``n`` for the block (None: unchanged)."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device, deterministic: bool):
    """Seed torch for this run only; the caller's RNG state is restored afterwards."""
    devices = [device.index or 0] if device.type == "cuda" else []
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        if device.type == "cuda" and deterministic:
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        try:
            yield
        finally:
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer reads what it measures."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_WARM = False


def warm_up() -> None:
    """The first optimizer built in a process imports torch._dynamo (seconds);
    do that before the clock starts so it is not charged to the first trial."""
    global _WARM
    if not _WARM:
        torch.optim.AdamW([nn.Parameter(torch.zeros(1))])
        _WARM = True
