"""Search: strategies, the evaluator, the runner and the study store."""
from archgram.search.evaluator import Budget, TrialResult, evaluate

__all__ = ["Budget", "TrialResult", "evaluate"]
