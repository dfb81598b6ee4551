"""Claiming trials in a study that several drivers may share, and keeping them.

Before a trial runs, its driver claims it against the study's total
(``StudyStore.claim``): a proposal the study already holds, or one another
driver runs, is a DUPLICATE and the strategy is asked again; a study at its
total is FULL. While trials run, the driver renews their heartbeat so other
drivers see they are alive (drivers.py).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from archgram.search.drivers import HEARTBEAT_S, this_driver
from archgram.search.store import DUPLICATE, FULL, StudyStore

#: proposals a driver tries before it decides the strategy only repeats what
#: the study already holds
CLAIM_TRIES = 50
DRIVER = this_driver()


@dataclass
class Claim:
    """A proposal the study accepted as a new trial, and the time spent asking for it."""

    proposal: Any
    trial: Any
    ask_s: float


def claim_next(strategy, store: StudyStore, total: int) -> Claim | None:
    """The next trial of the strategy's that no driver holds yet; None when the
    study is full or the strategy keeps proposing what it holds (the space is spent)."""
    strategy.seen |= store.hashes()
    ask_s = 0.0
    for _ in range(CLAIM_TRIES):
        t_ask = time.perf_counter()
        proposal = strategy.ask()
        ask_s += time.perf_counter() - t_ask
        rung = {"rung": proposal.info["rung"]} if proposal.info.get("rung") else {}  # multi-fidelity
        trial = store.claim(proposal.derivation, total, strategy=strategy.name, origin=proposal.origin,
                            parents=proposal.parents, driver=DRIVER, heartbeat=time.time(), **rung)
        if trial == FULL:
            return None
        if trial != DUPLICATE:
            return Claim(proposal, trial, ask_s)
        strategy.seen.add(proposal.derivation.hash())
    return None


def keep_alive(store: StudyStore, running: Callable[[], list], stop: threading.Event) -> None:
    """Renew the heartbeat of this driver's ``running()`` trials until ``stop`` is set."""
    while not stop.wait(HEARTBEAT_S):
        try:
            store.heartbeat(running())
        except Exception:  # noqa: BLE001 - a missed heartbeat only risks a stale mark
            pass
