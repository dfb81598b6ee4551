"""Regularized evolution (Real et al. 2019) as einspace runs it (catalog S57).

A population of the most recent ``population`` successful trials; each new
architecture mutates the best of ``tournament`` members drawn with
replacement; the oldest member leaves when a new one arrives (aging). Until the
population is full, proposals are the seed architectures (e.g. the einspace
baselines, cycled) or random samples.

Seeds do not age: a seed architecture (``seeds``, or one queued with
``enqueue`` such as the task's reference) stays in the population for the whole
search, and the oldest *other* member leaves instead. In a short asynchronous
search the first random samples finish after the seed and would age it out
before the first mutation is ever proposed (a 16-trial digits search never
mutated its reference); kept, the seed is a parent whenever it wins a
tournament. Which members are seeds is known before replay, so a resumed search
rebuilds the same population.

Fidelity (S57): einspace's regularized evolution, seeded with its baselines, is
what this runs; the grammar (archgram/grammars/einspace.pcfg) keeps its four
module kinds and probabilities, and sampling is shape-aware without einspace's
wall-clock retries (a difference in how, not what).
"""
from __future__ import annotations

from collections import deque

from archgram.errors import ArchgramError
from archgram.grammar.derivation import Derivation
from archgram.grammar.edit import crossover, mutate
from archgram.search.strategies.base import Proposal, Strategy, register_strategy


@register_strategy
class RegularizedEvolution(Strategy):
    name = "evolution"
    refs = ("S57",)

    def __init__(
        self,
        grammar,
        input_shape,
        *,
        population: int = 20,
        tournament: int = 5,
        crossover_rate: float = 0.0,
        seeds: list[Derivation] | None = None,
        **kwargs,
    ):
        super().__init__(grammar, input_shape, **kwargs)
        if population < 2 or not 1 <= tournament <= population:
            raise ArchgramError(f"evolution needs population >= 2 and 1 <= tournament <= population, got {population}/{tournament}")
        self.population_size = population
        self.tournament = tournament
        self.crossover_rate = crossover_rate
        self.seeds = list(seeds or [])
        self.population: deque[tuple[Derivation, float]] = deque()
        self.proposed = 0

    def propose(self) -> Proposal:
        self.proposed += 1
        if len(self.population) < self.population_size:
            if self.seeds:
                seed = self.seeds[(self.proposed - 1) % len(self.seeds)]
                if seed.hash() not in self.seen:
                    return Proposal(seed.copy(), origin="seed")
            return Proposal(self.sample())
        parent = self._select()
        if self.crossover_rate and self.rng.random() < self.crossover_rate:
            other = self._select()
            child = crossover(self.grammar, parent, other, rng=self.rng, limits=self.limits)
            if child is not None:
                return Proposal(child, origin="crossover", parents=[parent.hash(), other.hash()])
        try:
            child = mutate(self.grammar, parent, rng=self.rng, limits=self.limits)
        except ArchgramError:
            return Proposal(self.sample(), info={"fallback": "mutation failed"})
        return Proposal(child, origin="mutation", parents=[parent.hash()], info=dict(child.stats))

    def _select(self) -> Derivation:
        members = [self.population[self.rng.randrange(len(self.population))] for _ in range(self.tournament)]
        return max(members, key=lambda m: m[1])[0]

    def observe(self, derivation: Derivation, score: float | None, metrics: dict | None = None) -> None:
        if score is None:
            return
        self.population.append((derivation, score))
        seeds = {d.hash() for d in self.seeds} | {p.derivation.hash() for p in self.queued}
        while len(self.population) > self.population_size:
            oldest = next((m for m in self.population if m[0].hash() not in seeds), None)
            if oldest is None:
                self.population.popleft()
            else:
                self.population.remove(oldest)
