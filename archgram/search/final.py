"""The final pick of a study and its one test score.

Search is selected on validation only: strategies, schedulers and the
leaderboard never see a test score. Once a search finishes, its final pick
(the trial with the best validation score) is scored on the task's test split
exactly once, and that number is stored in the study (user attribute
``final``), so ``archgram show``, the export card and the ``--json`` summary
all report the same test score without ever reading the test split again.

The score comes from the weights the search kept for that trial
(``<study>.weights/N.safetensors``); where there are none (pruned by the
keeper, a remote worker's disk) the trial is retrained with its stored seed,
step count and training settings, deterministically on the CPU, and the
record says so.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from archgram.errors import ArchgramError
from archgram.search.store import StudyStore, TrialRecord

#: the study user attribute holding the final pick
FINAL_KEY = "final"


def final_pick(records: list[TrialRecord]) -> TrialRecord | None:
    """The leaderboard's first trial (best validation score; ties as ``report.ranked``
    breaks them, as the export's best does); None if none succeeded."""
    from archgram.search.report import ranked

    best = ranked(records)
    return best[0] if best else None


def stored_final(store: StudyStore) -> dict[str, Any] | None:
    """The final pick as the study recorded it, or None."""
    value = store.meta.get(FINAL_KEY)
    return value if isinstance(value, dict) else None


def record_final(store: StudyStore, task, batch_size: int, *, retrain: bool = True) -> dict[str, Any] | None:
    """Score the study's final pick on test once and store it; later calls (and a
    resumed search whose best trial did not change) return the stored record
    without reading the test split again. None when no trial succeeded."""
    pick = final_pick(store.records())
    if pick is None or pick.derivation is None:
        return None
    done = stored_final(store)
    if done is not None and done.get("trial") == pick.number and done.get("hash") == pick.attrs.get("hash"):
        return done
    test, source = score_on_test(store, pick, task, batch_size, retrain=retrain)
    final = {"trial": pick.number, "hash": pick.attrs.get("hash"), "validation": pick.score, "test": test,
             "metric": pick.attrs.get("metric") or task.metric_name, "weights": source}
    store.study.set_user_attr(FINAL_KEY, final)
    return final


def score_on_test(store: StudyStore, record: TrialRecord, task, batch_size: int, *, retrain: bool = True) -> tuple[float, str]:
    """(test score of ``record``'s trained model, where its weights came from:
    'kept' or 'retrained')."""
    from archgram.search.scoring import score_split
    from archgram.search.task_model import build_model

    model, _, _ = build_model(record.derivation, task, batch_size)
    source = _load_kept(store, record, model)
    if source is None:
        if not retrain:
            raise ArchgramError(f"the search kept no weights for trial {record.number} and retraining is off")
        _retrain(store, record, task, batch_size, model)
        source = "retrained"
    score, _ = score_split(model, task, task.data(0), "test", batch_size)
    return score, source


def _load_kept(store: StudyStore, record: TrialRecord, model) -> str | None:
    from archgram.search.weights import load_weights, read_metadata, weights_file

    path = weights_file(store.url, record.number)
    if path is None or not Path(path).is_file():
        return None
    if read_metadata(path).get("hash") not in (None, record.attrs.get("hash")):
        return None  # a file another study left under this name
    try:
        model.load_state_dict(load_weights(path), strict=True)
    except RuntimeError:
        return None
    return "kept"


def _retrain(store: StudyStore, record: TrialRecord, task, batch_size: int, model) -> None:
    """Train the trial again: its stored seed, its step count (a time budget
    does not replay; the steps it reached do), the study's optimizer settings."""
    from archgram.search.budget import Budget
    from archgram.search.evaluator import evaluate
    from archgram.search.training.options import training_settings
    from archgram.search.weights import load_weights

    attrs, meta = record.attrs, store.meta
    budget = attrs.get("budget")
    if budget is None or Budget.parse(budget).seconds is not None:
        if not attrs.get("steps"):
            raise ArchgramError(f"trial {record.number} kept no weights and its training length is unknown")
        budget = f"{int(attrs['steps'])}steps"
    with tempfile.TemporaryDirectory(prefix="archgram-final-") as tmp:
        path = str(Path(tmp) / "w.safetensors")
        result = evaluate(record.derivation, task, budget, seed=int(attrs.get("seed", record.number)),
                          batch_size=batch_size, **training_settings(meta.get("training", {})),
                          train_options=meta.get("train_options") or None, weights=path)
        if not result.ok:
            raise ArchgramError(f"retraining trial {record.number} for its test score failed: {result.message}")
        model.load_state_dict(load_weights(path), strict=True)
