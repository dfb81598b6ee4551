"""A search in one process, metered in training steps (no Ray, no study file).

The Ray runner meters a search in trials and wall-clock time; comparing
strategies fairly needs equal *compute* whatever the machine load, so this
loop runs ask -> evaluate -> tell until a total number of training steps is
spent. A trial costs the steps it trained (a failure costs the steps it got
through, at least one); a prescreen's proxy evaluations cost one step each.
It keeps the weights of the best trial so far and scores that final pick on
the test split once, at the end. ``experiments/search_quality`` runs it.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archgram.search.evaluator import evaluate
from archgram.search.inherit import inherits, trial_budget
from archgram.search.scoring import score_split
from archgram.search.time_limit import TimeLimit, trial_cap


@dataclass
class LoopResult:
    """What a metered search found: every trial, and the final pick's scores."""

    trials: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    best: float | None = None
    best_trial: int | None = None
    test: float | None = None
    #: set when ``time_limit`` ended the loop before its steps were spent
    stopped: str | None = None

    def curve(self) -> list[tuple[int, float | None]]:
        """(steps spent, best validation score so far) after each trial."""
        return [(t["spent"], t["best"]) for t in self.trials]


def run_local(strategy, task, recipe, total_steps: int, *, seed: int = 0, threads: int = 1,
              max_trials: int | None = None, inherit: bool = False,
              time_limit: str | float | None = None) -> LoopResult:
    """Ask ``strategy`` for proposals and train them under ``recipe`` (a Task
    Recipe; a proposal's own budget wins) until ``total_steps`` are spent.
    ``inherit``: a mutated or crossed-over child starts from its (first)
    parent's trained weights for the subtrees it shares with it, and a
    promotion continues from its shorter run's weights. ``time_limit`` ("60m",
    or seconds) from this call: no trial starts after it, and each trial is
    capped at the time left (past it: a failed 'timeout', as in a Ray search)."""
    out = LoopResult()
    limit = TimeLimit.start(time_limit)
    options = {**recipe.train_options(), "threads": threads}
    with tempfile.TemporaryDirectory(prefix="archgram-loop-") as tmp:
        best_path = Path(tmp) / "best.safetensors"
        trial_path = Path(tmp) / "trial.safetensors"
        trained: dict[str, tuple[Path, object]] = {}  # hash -> (weights, derivation), for inheritance
        number = 0
        while out.steps < total_steps and (max_trials is None or number < max_trials):
            if limit is not None and limit.passed():
                out.stopped = f"time limit {limit.text} reached after {number} trials ({out.steps} steps)"
                break
            before = getattr(strategy, "evaluations", 0)
            proposal = strategy.ask()
            out.steps += getattr(strategy, "evaluations", 0) - before  # proxy evaluations
            parent = trained.get(proposal.parents[0]) if inherit and inherits(proposal) else None
            budget = trial_budget(proposal, parent, recipe.budget)
            r = evaluate(proposal.derivation, task, budget, seed=seed * 10_000 + number, batch_size=recipe.batch_size,
                         lr=recipe.lr, optimizer=recipe.optimizer, train_options=options, weights=str(trial_path),
                         timeout=trial_cap(None, budget, limit.left() if limit is not None else None),
                         inherit_from=None if parent is None else (str(parent[0]), parent[1]))
            out.steps += max(1, r.steps)
            score = r.score if r.ok else None
            strategy.tell(proposal.derivation, score, {"params": r.params, "budget": budget})
            if score is not None and (out.best is None or score > out.best):
                out.best, out.best_trial = score, number
                best_path.write_bytes(trial_path.read_bytes())
            if inherit and score is not None:
                kept = Path(tmp) / f"{number}.safetensors"
                trial_path.replace(kept)
                trained[proposal.derivation.hash()] = (kept, proposal.derivation)
            out.trials.append({"number": number, "hash": proposal.derivation.hash(), "origin": proposal.origin,
                               "budget": budget, "score": score, "steps": r.steps, "spent": out.steps,
                               "best": out.best, "failure": r.failure, "params": r.params,
                               "seconds": round(r.total_seconds, 3), "cpu_seconds": round(r.cpu_seconds, 3),
                               "inherited": r.extras.get("inherited"),
                               "derivation": proposal.derivation.to_json(indent=None)})
            number += 1
        if out.best_trial is not None:
            out.test = _test_of(out.trials[out.best_trial]["derivation"], best_path, task, recipe.batch_size)
    return out


def _test_of(derivation_json: str, path: Path, task, batch_size: int) -> float:
    from archgram.grammar.derivation import Derivation
    from archgram.search.task_model import build_model
    from archgram.search.weights import load_weights

    model, _, _ = build_model(Derivation.from_json(derivation_json), task, batch_size)
    model.load_state_dict(load_weights(path), strict=True)
    return score_split(model, task, task.data(0), "test", batch_size)[0]
