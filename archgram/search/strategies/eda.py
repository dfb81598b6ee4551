"""PCFG estimation of distribution: learn the grammar's production probabilities.

einspace samples from fixed probabilities. Here, every ``refit_every`` results
the probabilities move towards the production frequencies of the elite (the
best ``elite`` fraction of successful trials so far):

    p <- (1 - lr) * p + lr * (count + prior) / (total + prior * alternatives)

with a floor so no production dies out. New proposals sample the refitted PCFG.
"""
from __future__ import annotations

import copy
import dataclasses
from collections import Counter

from archgram.errors import ArchgramError
from archgram.grammar.derivation import Derivation, RuleNode, walk
from archgram.grammar.model import Grammar
from archgram.search.strategies.base import Proposal, Strategy, register_strategy


def reweighted(grammar: Grammar, table: dict[str, list[float]]) -> Grammar:
    """A copy of ``grammar`` whose rules take the production probabilities in ``table``."""
    out = copy.copy(grammar)
    out.rules = dict(grammar.rules)
    for name, probs in table.items():
        rule = grammar.rules[name]
        prods = [dataclasses.replace(p, prob=q) for p, q in zip(rule.productions, probs)]
        out.rules[name] = dataclasses.replace(rule, productions=prods)
    return out


def production_counts(derivations: list[Derivation]) -> Counter:
    """How often each (rule, alternative) was chosen across ``derivations``."""
    return Counter((n.symbol, n.alt) for d in derivations for n in walk(d.root) if isinstance(n, RuleNode))


@register_strategy
class PcfgEda(Strategy):
    name = "pcfg-eda"

    def __init__(
        self,
        grammar,
        input_shape,
        *,
        elite: float = 0.25,
        refit_every: int = 8,
        lr: float = 0.5,
        prior: float = 1.0,
        floor: float = 0.02,
        **kwargs,
    ):
        super().__init__(grammar, input_shape, **kwargs)
        if not 0 < elite <= 1 or not 0 < lr <= 1 or refit_every < 1:
            raise ArchgramError("pcfg-eda needs 0 < elite <= 1, 0 < lr <= 1 and refit_every >= 1")
        self.elite, self.refit_every, self.lr, self.prior, self.floor = elite, refit_every, lr, prior, floor
        self.table = {name: [p.prob for p in rule.productions] for name, rule in grammar.rules.items()}
        self.model = grammar
        self.results: list[tuple[Derivation, float]] = []
        self.told = 0

    def propose(self) -> Proposal:
        seed = self.rng.randrange(2**31)
        d = self.model.sample(self.input_shape, seed=seed, target=self.target, limits=self.limits)
        return Proposal(d, info={"refits": self.told // self.refit_every})

    def observe(self, derivation: Derivation, score: float | None, metrics: dict | None = None) -> None:
        self.told += 1
        if score is not None:
            self.results.append((derivation, score))
        if self.told % self.refit_every == 0 and self.results:
            self.refit()

    def refit(self) -> None:
        ranked = sorted(self.results, key=lambda r: r[1], reverse=True)
        elite = [d for d, _ in ranked[: max(1, round(self.elite * len(ranked)))]]
        counts = production_counts(elite)
        for name, probs in self.table.items():
            n = len(probs)
            if n == 1:
                continue
            total = sum(counts[(name, i)] for i in range(n))
            if total == 0:
                continue
            target = [(counts[(name, i)] + self.prior) / (total + self.prior * n) for i in range(n)]
            mixed = [(1 - self.lr) * p + self.lr * t for p, t in zip(probs, target)]
            floored = [max(m, self.floor) if p > 0 else 0.0 for m, p in zip(mixed, probs)]
            s = sum(floored)
            self.table[name] = [f / s for f in floored]
        self.model = reweighted(self.grammar, self.table)
