"""Search strategies: one file each, behind ``Strategy`` (base.py)."""
from archgram.search.strategies import eda, evolution, optuna_samplers, random_search  # noqa: F401  (registration)
from archgram.search.strategies.base import Proposal, Strategy, get_strategy, register_strategy, strategy_names

__all__ = ["Proposal", "Strategy", "get_strategy", "register_strategy", "strategy_names"]
