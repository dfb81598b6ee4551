"""Random search: independent samples from the grammar (einspace's RS baseline)."""
from __future__ import annotations

from archgram.search.strategies.base import Proposal, Strategy, register_strategy


@register_strategy
class RandomSearch(Strategy):
    name = "random"
    refs = ("S57",)

    def propose(self) -> Proposal:
        return Proposal(self.sample())
