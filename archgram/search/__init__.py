"""Search: strategies, the evaluator, the runner and the study store."""
from archgram.search.budget import Budget
from archgram.search.evaluator import evaluate
from archgram.search.trial_result import TrialResult

__all__ = ["Budget", "TrialResult", "evaluate"]
