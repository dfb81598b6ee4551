"""PCFG estimation of distribution: learn the grammar's production probabilities.

einspace samples from fixed probabilities. Here, every ``refit_every`` results
the probabilities move towards what the elite (the best ``elite`` fraction of
successful trials so far, ``k`` derivations) chose, shrunk towards the
grammar's own probabilities ``p0`` by a Dirichlet prior centred on them. For
each rule, with ``c_i`` the elite's choices of alternative ``i`` counted in
derivations (each elite derivation that expands the rule adds its share of
expansions choosing ``i``, so ``sum(c) = n``, the elite derivations that
expand the rule) and ``s = prior_strength``:

    target_i = (c_i + s * p0_i) / (n + s)
    p <- (1 - lr_k) * p + lr_k * target,    lr_k = lr * k / (k + s)

then a floor so no production dies out (productions with ``p0 == 0`` stay 0)
and renormalisation. A rule no elite derivation expands keeps its
probabilities, and an elite choosing as the grammar does leaves them where the
grammar put them. New proposals sample the refitted PCFG.
"""
from __future__ import annotations

import copy
import dataclasses
import math
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


def derivation_shares(derivations: list[Derivation]) -> tuple[Counter, Counter]:
    """Production choices counted in derivations: ``(rule, alt) -> sum`` over the
    derivations of the share of their expansions of ``rule`` that chose ``alt``,
    and ``rule -> how many derivations expand it``. A derivation that recursed
    six times through a rule is one piece of evidence about it, not seven."""
    shares: Counter = Counter()
    users: Counter = Counter()
    for d in derivations:
        counts = production_counts([d])
        per_rule = Counter()
        for (rule, _), c in counts.items():
            per_rule[rule] += c
        for (rule, alt), c in counts.items():
            shares[(rule, alt)] += c / per_rule[rule]
        users.update(per_rule.keys())
    return shares, users


@register_strategy
class PcfgEda(Strategy):
    """Refits production probabilities towards the elite (see the module docstring).

    ``prior_strength`` (s) is how many derivations' worth of evidence the
    grammar's own probabilities count as. The default 1 is a unit-information
    prior: the grammar author's weights weigh as much as one elite derivation,
    so a single derivation can move a rule's target at most half way to its own
    choices, while an elite of ten consistent derivations gets 10/11 of the say.
    The step uses the same unit, ``lr * k / (k + s)``: a refit trusts the elite
    in the proportion the posterior mean does, half of ``lr`` for one elite
    derivation, nearly all of it for many. ``prior_strength=0`` turns both off
    (the elite's frequencies, full steps).
    """

    name = "pcfg-eda"

    def __init__(
        self,
        grammar,
        input_shape,
        *,
        elite: float = 0.25,
        refit_every: int = 8,
        lr: float = 0.5,
        prior_strength: float = 1.0,
        floor: float = 0.02,
        **kwargs,
    ):
        super().__init__(grammar, input_shape, **kwargs)
        if not 0 < elite <= 1 or not 0 < lr <= 1 or refit_every < 1:
            raise ArchgramError("pcfg-eda needs 0 < elite <= 1, 0 < lr <= 1 and refit_every >= 1")
        if not (math.isfinite(prior_strength) and prior_strength >= 0):
            raise ArchgramError(
                f"pcfg-eda needs a finite prior_strength >= 0 (derivations' worth of evidence), got {prior_strength}")
        self.elite, self.refit_every, self.lr, self.floor = elite, refit_every, lr, floor
        self.prior_strength = prior_strength
        self.original = {name: [p.prob for p in rule.productions] for name, rule in grammar.rules.items()}
        self.table = {name: list(probs) for name, probs in self.original.items()}
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
        shares, users = derivation_shares(elite)
        s, k = self.prior_strength, len(elite)
        step = self.lr * k / (k + s)
        for name, probs in self.table.items():
            p0, n = self.original[name], users[name]
            if len(probs) == 1 or n == 0:
                continue
            target = [(shares[(name, i)] + s * q) / (n + s) for i, q in enumerate(p0)]
            mixed = [(1 - step) * p + step * t for p, t in zip(probs, target)]
            floored = [max(m, self.floor) if q > 0 else 0.0 for m, q in zip(mixed, p0)]
            total = sum(floored)
            if total > 0:  # 0 only with floor 0 and an elite that chose nothing the grammar allows
                self.table[name] = [f / total for f in floored]
        self.model = reweighted(self.grammar, self.table)
