"""Zero-cost proxy pre-screening (``--prescreen K``) around any strategy.

For every trial, ask the wrapped strategy for ``K`` candidates, score each
with a zero-cost proxy (``archgram.search.proxies``: one batch at
initialisation, about one training step each), and train only the best. The
others are never trained, and the strategy learns only from what was trained.
A candidate the proxy cannot run (shape error) scores -inf and loses to any
that can, which also screens out architectures that would fail.

Cost: K proxy evaluations per trial, each about one training step; with a
budget of B steps per trial this adds K/B to the compute, and
:func:`check_prescreen` refuses settings where that exceeds half the budget.
"""
from __future__ import annotations

from archgram.errors import ArchgramError
from archgram.search.proxies import PROXIES, proxy_score
from archgram.search.strategies.base import Proposal, StrategyWrapper

#: the proxy used unless another is named (see experiments/search_quality/proxies.py)
DEFAULT_PROXY = "synflow"


def check_prescreen(k: int, budget_steps: int | None, proxy: str) -> None:
    """Refuse a prescreen the budget cannot hold, before any trial runs."""
    if k < 1:
        raise ArchgramError(f"--prescreen must be at least 1 (1 = off), got {k}")
    PROXIES.get(proxy)
    if k > 1 and budget_steps is not None and k > budget_steps / 2:
        raise ArchgramError(f"--prescreen {k} costs about {k} steps per trial, more than half of the {budget_steps}-step "
                            f"budget; use --prescreen {max(1, budget_steps // 2)} or less, or a larger --budget")


class Prescreen(StrategyWrapper):
    """Wraps a strategy: each ask draws ``k`` candidates and keeps the proxy's best."""

    def __init__(self, inner, task, batch_size: int, *, k: int = 4, proxy: str = DEFAULT_PROXY, seed: int = 0):
        check_prescreen(k, None, proxy)
        super().__init__(inner)
        self.task, self.batch_size, self.k, self.proxy, self.seed = task, batch_size, k, proxy, seed
        self.name = f"{inner.name}+prescreen{k}"
        self.asked = 0
        #: proxy evaluations so far (each ~ one training step of compute)
        self.evaluations = 0

    def ask(self) -> Proposal:
        self.asked += 1
        if self.inner.queue:  # seeds (the task's reference) are trained as they are
            return self.inner.ask()
        best, best_score = None, float("-inf")
        for i in range(self.k):
            proposal = self.inner.ask()
            if self.k == 1:
                return proposal
            score = proxy_score(self.proxy, proposal.derivation, self.task, self.batch_size,
                                seed=self.seed * 100_003 + self.asked * 97 + i)
            self.evaluations += 1
            if best is None or score > best_score:
                best, best_score = proposal, score
        best.info["proxy"] = {self.proxy: best_score, "of": self.k}
        return best
