"""Search strategies: one file each, behind ``Strategy`` (base.py). Every module
here is imported below, so a strategy module registers itself
(``@register_strategy``) without a line in this file."""
from archgram.registry import import_submodules
from archgram.search.strategies.base import (
    STRATEGIES,
    Proposal,
    Strategy,
    get_strategy,
    register_strategy,
    strategy_names,
)

import_submodules(__name__)

__all__ = ["STRATEGIES", "Proposal", "Strategy", "get_strategy", "register_strategy", "strategy_names"]
