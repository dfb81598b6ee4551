"""The strategy interface: strategies propose derivations and learn from scores.

A strategy never trains anything. ``ask`` returns a proposal; ``tell`` reports
its outcome. Strategies keep no state that cannot be rebuilt by replaying
``tell`` over a study's finished trials in order, so a resumed search needs no
pickled strategy (see ``replay``).
"""
from __future__ import annotations

import importlib
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from archgram.errors import SamplingError
from archgram.grammar.derivation import Derivation
from archgram.grammar.model import Grammar, Limits
from archgram.registry import Registry, same_class
from archgram.shapes import Shape


@dataclass
class Proposal:
    """A derivation to evaluate, and how the strategy came to it."""

    derivation: Derivation
    origin: str = "sample"  # sample | mutation | crossover | seed | ...
    parents: list[str] = field(default_factory=list)  # hashes
    info: dict[str, Any] = field(default_factory=dict)
    #: training budget of this proposal (multi-fidelity rungs); None: the search's budget
    budget: str | None = None


class Strategy(ABC):
    """Base class: subclasses set ``name`` and implement ``ask`` (and usually ``tell``)."""

    name: ClassVar[str] = ""
    #: Catalog rows this strategy implements (see ``archgram catalog``).
    refs: ClassVar[tuple[str, ...]] = ()
    #: How many distinct architectures ``ask`` tries before accepting a repeat.
    dedup_tries: ClassVar[int] = 20

    def __init__(
        self,
        grammar: Grammar,
        input_shape: Shape,
        *,
        seed: int = 0,
        target: tuple | None = None,
        limits: Limits | dict | None = None,
    ):
        self.grammar = grammar
        self.input_shape = tuple(input_shape)
        self.target = target
        self.limits = limits
        self.rng = random.Random(seed)
        self.seen: set[str] = set()
        self.history: list[tuple[Derivation, float | None]] = []
        #: proposals asked before the strategy's own (e.g. the task's reference)
        self.queue: list[Proposal] = []
        #: every proposal ever enqueued (the queue empties as they are asked)
        self.queued: list[Proposal] = []

    # -- to implement ------------------------------------------------------
    @abstractmethod
    def propose(self) -> Proposal:
        """One proposal (may repeat an architecture; ``ask`` deduplicates)."""

    def observe(self, derivation: Derivation, score: float | None, metrics: dict | None = None) -> None:
        """Learn from one finished trial (``score`` None when it failed; ``metrics``
        holds the other measurements, e.g. params and latency_ms). Default: learn nothing."""
        return None

    # -- shared ------------------------------------------------------------
    def enqueue(self, derivation: Derivation, origin: str = "seed") -> None:
        """Propose ``derivation`` before anything else (once: a replayed study that
        already holds it skips it)."""
        self.queue.append(Proposal(derivation, origin=origin))
        self.queued.append(self.queue[-1])

    def ask(self) -> Proposal:
        while self.queue:
            first = self.queue.pop(0)
            if first.derivation.hash() not in self.seen:
                self.seen.add(first.derivation.hash())
                return first
        proposal = self.propose()
        for _ in range(self.dedup_tries):
            if proposal.derivation.hash() not in self.seen:
                break
            proposal = self.propose()
        else:
            proposal.info["duplicate"] = True
        self.seen.add(proposal.derivation.hash())
        return proposal

    def tell(self, derivation: Derivation, score: float | None, metrics: dict | None = None) -> None:
        self.seen.add(derivation.hash())
        self.history.append((derivation, score))
        self.observe(derivation, score, metrics)

    def replay(self, finished: list[tuple]) -> None:
        """Rebuild state from a study's finished trials (resume without pickles):
        tuples of (derivation, score) or (derivation, score, metrics)."""
        for derivation, score, *metrics in finished:
            self.tell(derivation, score, metrics[0] if metrics else None)

    def sample(self) -> Derivation:
        seed = self.rng.randrange(2**31)
        return self.grammar.sample(self.input_shape, seed=seed, target=self.target, limits=self.limits)


#: Every strategy by name; the first lookup imports archgram.search.strategies,
#: which imports each of its modules (a strategy registers itself with
#: ``@register_strategy``).
STRATEGIES: Registry[type[Strategy]] = Registry(
    "strategy", loader=lambda: importlib.import_module("archgram.search.strategies"), same=same_class)
register_strategy = STRATEGIES.decorator()


def strategy_names() -> list[str]:
    return STRATEGIES.names()


def get_strategy(name: str) -> type[Strategy]:
    return STRATEGIES.get(name)


__all__ = ["STRATEGIES", "Proposal", "SamplingError", "Strategy", "get_strategy", "register_strategy", "strategy_names"]


class StrategyWrapper:
    """A budget policy around a strategy (successive halving, prescreening): it
    passes the strategy interface through to ``inner`` and overrides what it
    changes (usually ``ask`` and ``tell``)."""

    def __init__(self, inner):
        self.inner = inner

    @property
    def queue(self):
        return self.inner.queue

    @property
    def seen(self) -> set[str]:
        """Architectures the wrapped strategy will not propose again (the runner adds the study's)."""
        return self.inner.seen

    @seen.setter
    def seen(self, value: set[str]) -> None:
        self.inner.seen = value

    def enqueue(self, derivation: Derivation, origin: str = "seed") -> None:
        self.inner.enqueue(derivation, origin)

    def ask(self) -> Proposal:
        return self.inner.ask()

    def tell(self, derivation: Derivation, score: float | None, metrics: dict[str, Any] | None = None) -> None:
        self.inner.tell(derivation, score, metrics)

    def replay(self, finished: list[tuple]) -> None:
        self.inner.replay(finished)
