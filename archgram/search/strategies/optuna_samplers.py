"""Optuna samplers (TPE; NSGA-II for several objectives) over grammar choices.

Define-by-run: the sampler's choice points (which production a rule takes,
which arguments an op takes, which split/merge ops a branch uses) are named by
their place in the derivation (``network/sequential/1/module``), and each
becomes a categorical trial parameter the first time it is reached. Shape
typing still decides: a suggested option that does not type-check is skipped
and the sampler's usual order takes over.

Because of that fallback, the parameters Optuna is told are read back from the
derivation actually built (``choice_params``), not taken from its suggestions;
the same function rebuilds the study from stored derivations on resume.
"""
from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from archgram.grammar.derivation import BranchNode, Derivation, Node, OpNode, RuleNode
from archgram.grammar.model import Branch, Grammar, NonTerm, Term
from archgram.grammar.sampler import Chooser, sample, weighted_order
from archgram.search.store import direction
from archgram.search.strategies.base import Proposal, Strategy, register_strategy

optuna.logging.set_verbosity(logging.WARNING)


def _labels(texts: list[str]) -> list[str]:
    return [f"{i}:{t}" for i, t in enumerate(texts)]


def _combo_label(combo: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in combo.items())


class OptunaChooser(Chooser):
    """Suggests each choice point's first option from an Optuna trial."""

    def __init__(self, trial: optuna.trial.Trial, rng: random.Random):
        super().__init__(rng)
        self.trial = trial
        self.asked: set[str] = set()

    def order(self, key: str, probs: list[float], labels: Callable[[], list[str]]) -> Iterator[int]:
        if key in self.asked or sum(p > 0 for p in probs) < 2:
            yield from weighted_order(self.rng, probs)
            return
        self.asked.add(key)
        names = _labels(labels())
        try:
            first = names.index(self.trial.suggest_categorical(key, names))
        except ValueError:  # the same name met with other options: not steerable
            yield from weighted_order(self.rng, probs)
            return
        if probs[first] > 0:
            yield first
        rest = list(probs)
        rest[first] = 0.0
        yield from weighted_order(self.rng, rest)


def choice_params(grammar: Grammar, derivation: Derivation) -> tuple[dict[str, str], dict[str, CategoricalDistribution]]:
    """The choice-point parameters of a built derivation, named as the sampler names them."""
    params: dict[str, str] = {}
    dists: dict[str, CategoricalDistribution] = {}

    def record(key: str, texts: list[str], index: int) -> None:
        if len(texts) > 1:
            names = _labels(texts)
            params[key] = names[index]
            dists[key] = CategoricalDistribution(names)

    def term(t: Term, node: OpNode, key: str) -> None:
        if t.combos is None:  # a large space is steered argument by argument
            for name, space in t.args.items():
                if node.args.get(name) in space.values:
                    record(f"{key}/{t.op.name}/{name}", [str(v) for v in space.values], space.values.index(node.args[name]))
            return
        combos = [c for c, _ in t.combos]
        if node.args in combos:
            record(f"{key}/{t.op.name}", [_combo_label(c) for c in combos], combos.index(node.args))

    def rule(node: RuleNode, key: str) -> None:
        r = grammar.rules.get(node.symbol)
        if r is None or node.alt >= len(r.productions):
            return
        here = f"{key}/{node.symbol}" if key else node.symbol
        record(here, [p.text for p in r.productions], node.alt)
        children = iter(enumerate(node.children))
        for elem in r.productions[node.alt].elems:
            for copy in range(getattr(elem, "repeat", 1)):
                index, child = next(children, (None, None))
                if child is None:
                    return
                if copy == 0:
                    one(elem, child, f"{here}/{index}")

    def one(elem, child: Node, key: str) -> None:
        if isinstance(elem, Term) and isinstance(child, OpNode):
            term(elem, child, key)
        elif isinstance(elem, NonTerm) and isinstance(child, RuleNode):
            rule(child, key)
        elif isinstance(elem, Branch) and isinstance(child, BranchNode):
            j = 0
            for arm in elem.arms:
                if j < len(child.arms):
                    one(arm.elem, child.arms[j], f"{key}/arm{j}")
                j += arm.copies

    if isinstance(derivation.root, RuleNode):
        rule(derivation.root, "")
    return params, dists


class _OptunaStrategy(Strategy):
    """Runs an in-memory Optuna study whose trials are grammar choice paths."""

    directions: tuple[str, ...] = ("maximize",)

    def __init__(self, grammar, input_shape, *, objectives: tuple[str, ...] = ("score",), **kwargs):
        super().__init__(grammar, input_shape, **kwargs)
        self.objective_names = tuple(objectives)
        self.study = optuna.create_study(sampler=self.make_sampler(), directions=self.study_directions())
        self.pending: dict[str, optuna.trial.Trial] = {}

    def make_sampler(self) -> optuna.samplers.BaseSampler:
        raise NotImplementedError

    def study_directions(self) -> list[str]:
        """Each objective's direction by the study store's rule (score and score:<task> up, costs down)."""
        return [direction(o) for o in self.objective_names]

    def propose(self) -> Proposal:
        trial = self.study.ask()
        chooser = OptunaChooser(trial, self.rng)
        d = sample(self.grammar, self.input_shape, rng=self.rng, target=self.target, limits=self.limits, chooser=chooser)
        # The asked trial only steered sampling; what was built is told in observe().
        self.study.tell(trial, state=TrialState.FAIL)
        return Proposal(d, info={"suggested": len(chooser.asked)})

    def observe(self, derivation: Derivation, score: float | None, metrics: dict | None = None) -> None:
        params, dists = choice_params(self.grammar, derivation)
        values = self._values(score, metrics or {})
        state = TrialState.COMPLETE if values is not None else TrialState.FAIL
        self.study.add_trial(
            optuna.trial.create_trial(params=params, distributions=dists, values=values, state=state)
        )

    def _values(self, score: float | None, metrics: dict) -> list[float] | None:
        if score is None:
            return None
        out = []
        for name in self.objective_names:
            value = score if name == "score" else metrics.get({"latency": "latency_ms"}.get(name, name))
            if value is None:
                return None
            out.append(float(value))
        return out


@register_strategy
class TPE(_OptunaStrategy):
    name = "tpe"

    def make_sampler(self):
        return optuna.samplers.TPESampler(seed=self.rng.randrange(2**31), n_startup_trials=10, multivariate=True)


@register_strategy
class NSGA2(_OptunaStrategy):
    """Several objectives (e.g. score and params): NSGA-II keeps the Pareto front."""

    name = "nsga2"

    def __init__(self, grammar, input_shape, *, objectives: tuple[str, ...] = ("score", "params"), population: int = 20, **kwargs):
        self.population = population
        super().__init__(grammar, input_shape, objectives=objectives, **kwargs)

    def make_sampler(self):
        return optuna.samplers.NSGAIISampler(seed=self.rng.randrange(2**31), population_size=self.population)
