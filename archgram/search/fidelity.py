"""Multi-fidelity search: successive-halving rungs around any strategy.

Many cheap trials first, the best promoted to longer budgets. With rungs
``r`` and reduction ``eta`` on a step budget ``B``, rung ``k`` trains for
``B / eta**(r-1-k)`` steps: rung 0 is ``B / eta**(r-1)``, the top rung the full
``B``. Promotion follows asynchronous successive halving (ASHA, Li et al.
2020), so it needs no synchronisation barrier and works with any number of
workers: whenever a proposal is asked for, the highest rung that has a
candidate in the top ``1/eta`` of its finished trials, not yet promoted, sends
that candidate one rung up; otherwise the wrapped strategy proposes a new
architecture for rung 0.

Unlike ASHA as a scheduler (which only stops bad trials early), the wrapped
strategy *learns* from the cheap rung: evolution selects parents and TPE fits
its densities on rung-0 scores, which are comparable among themselves. Scores
of other rungs are never told to it (one architecture, one vote). A promoted
trial is a new trial of the study with the same derivation and a longer
budget. With ``warm_start`` (on under ``--inherit``, the default) it continues
from the weights its shorter run trained and trains only the difference, so it
has trained rung ``k``'s full budget in all while costing
``B_k - B_{k-1}`` steps (a fresh optimizer and schedule: the weights carry
over, the optimizer state does not); without it the promoted trial trains the
whole rung budget again from the initialisation.

The wrapper is a strategy itself (ask/tell/replay), so the Ray runner and the
local loop run it unchanged; a proposal carries its rung's budget.
"""
from __future__ import annotations

from typing import Any

from archgram.errors import ArchgramError
from archgram.grammar.derivation import Derivation
from archgram.search.strategies.base import Proposal, StrategyWrapper

#: a rung shorter than this many steps says nothing about an architecture
MIN_RUNG_STEPS = 10


def rung_budgets(steps: int, rungs: int, eta: int) -> list[int]:
    """Step budgets of the rungs, cheapest first; raises when the budget cannot hold them."""
    if rungs < 1 or eta < 2:
        raise ArchgramError(f"multi-fidelity needs rungs >= 1 and eta >= 2, got rungs={rungs}, eta={eta}")
    budgets = [steps // eta ** (rungs - 1 - k) for k in range(rungs)]
    if budgets[0] < MIN_RUNG_STEPS:
        raise ArchgramError(f"multi-fidelity: {rungs} rungs with eta {eta} on a {steps}-step budget give a first rung "
                            f"of {budgets[0]} steps (< {MIN_RUNG_STEPS}); use fewer rungs, a smaller eta or a larger "
                            "--budget")
    return budgets


def step_budget(budget) -> int:
    """The steps of a pure step budget; raises for a time or epoch budget (rungs
    must not depend on machine load)."""
    from archgram.search.budget import Budget

    budget = Budget.parse(budget)
    if budget.steps is None or budget.seconds is not None or budget.epochs is not None:
        raise ArchgramError(f"multi-fidelity rungs need a pure step budget (e.g. --budget 900steps), got '{budget}'")
    return int(budget.steps)


class SuccessiveHalving(StrategyWrapper):
    """Wraps a strategy (``inner``) with successive-halving rungs over a step budget."""

    def __init__(self, inner, budget, *, rungs: int = 3, eta: int = 3, warm_start: bool = False):
        super().__init__(inner)
        self.name = f"{inner.name}+sh"
        self.eta = eta
        self.warm_start = warm_start
        self.budgets = rung_budgets(step_budget(budget), rungs, eta)
        self.scores: list[dict[str, float]] = [{} for _ in self.budgets]  # per rung: hash -> score
        self.promoted: list[set[str]] = [set() for _ in self.budgets]
        self.derivations: dict[str, Derivation] = {}
        self.pending: dict[str, int] = {}  # hash -> rung asked and not told yet

    # -- the strategy interface ---------------------------------------------
    def ask(self) -> Proposal:
        for rung in range(len(self.budgets) - 2, -1, -1):
            candidate = self._promotable(rung)
            if candidate is not None:
                self.promoted[rung].add(candidate)
                self.pending[candidate] = rung + 1
                # cold_budget: what to train instead when the shorter run's weights are gone
                return Proposal(self.derivations[candidate].copy(), origin="promotion", parents=[candidate],
                                info={"rung": rung + 1, "cold_budget": self.budget_text(rung + 1)},
                                budget=self.promotion_budget(rung + 1))
        proposal = self.inner.ask()
        h = proposal.derivation.hash()
        self.derivations[h] = proposal.derivation
        self.pending[h] = 0
        proposal.budget = self.budget_text(0)
        proposal.info["rung"] = 0
        return proposal

    def tell(self, derivation: Derivation, score: float | None, metrics: dict[str, Any] | None = None) -> None:
        h = derivation.hash()
        rung = self.pending.pop(h, None)
        if rung is None:
            rung = self._rung_of(metrics)
        self.derivations.setdefault(h, derivation)
        self.scores[rung][h] = score if score is not None else float("-inf")
        if rung == 0:
            self.inner.tell(derivation, score, metrics)

    def replay(self, finished: list[tuple]) -> None:
        for derivation, score, *metrics in finished:
            m = metrics[0] if metrics else None
            rung = self._rung_of(m)
            if rung > 0:  # whatever reached rung k was promoted from rung k-1
                self.promoted[rung - 1].add(derivation.hash())
            self.tell(derivation, score, m)

    # -- rungs -----------------------------------------------------------------
    def budget_text(self, rung: int) -> str:
        return f"{self.budgets[rung]}steps"

    def promotion_budget(self, rung: int) -> str:
        """What a trial promoted to ``rung`` trains: the steps it lacks when it
        continues from its shorter run (``warm_start``), else the whole rung."""
        if self.warm_start:
            return f"{self.budgets[rung] - self.budgets[rung - 1]}steps"
        return self.budget_text(rung)

    def _rung_of(self, metrics: dict[str, Any] | None) -> int:
        """A finished trial's rung: the one its study record names, else the
        rung whose fresh budget it trained."""
        metrics = metrics or {}
        if isinstance(metrics.get("rung"), int) and 0 <= metrics["rung"] < len(self.budgets):
            return metrics["rung"]
        text = str(metrics.get("budget") or "")
        for k in range(len(self.budgets)):
            if text == self.budget_text(k):
                return k
        return len(self.budgets) - 1  # a trial of the full budget (or of an older run without rungs)

    def _promotable(self, rung: int) -> str | None:
        """The best not-yet-promoted trial of ``rung`` among its top 1/eta, if any."""
        done = self.scores[rung]
        top = len(done) // self.eta
        if top == 0:
            return None
        ranked = sorted(done, key=lambda h: done[h], reverse=True)[:top]
        for h in ranked:
            if h not in self.promoted[rung] and done[h] > float("-inf") and h not in self.pending:
                return h
        return None
