"""Honest protocol: search sees validation only; the final pick is scored on test once,
from the weights the search kept (else retrained), and stored in the study; studies
of the old test-scored protocol are refused."""
from __future__ import annotations

import pytest

from archgram.grammar.model import Grammar
from archgram.search import final as final_mod
from archgram.search.evaluator import build_model, evaluate, score_split
from archgram.search.final import FINAL_KEY, record_final
from archgram.search.store import PROTOCOL, StudyError, StudyStore
from archgram.search.weights import weights_file
from archgram.tasks import get_task

BS = 32
TINY = "start network\nnetwork : linear(out={w}) relu"


@pytest.fixture(scope="module")
def digits():
    return get_task("digits")


def _derivation(width):
    return Grammar.from_text(TINY.format(w=width), path="<tiny>").sample((BS, 1, 8, 8), seed=0)


def _trial(store, d, digits, seed, keep=True):
    """Train ``d`` as a search worker would (keeping its weights) and store the result."""
    trial = store.start(d)
    path = weights_file(store.url, trial.number) if keep else None
    r = evaluate(d, digits, "30steps", seed=seed, batch_size=BS, weights=path, train_options={"threads": 1})
    store.finish(trial, r.to_dict())
    return r


def test_final_pick_is_scored_on_test_once_from_kept_weights(tmp_path, digits, monkeypatch):
    store = StudyStore(tmp_path / "s.db", meta={"task": "digits", "protocol": PROTOCOL})
    results = [_trial(store, _derivation(w), digits, seed=i) for i, w in enumerate((4, 64))]
    best = max(range(2), key=lambda i: results[i].score)
    reads = []
    real = final_mod.score_on_test
    monkeypatch.setattr(final_mod, "score_on_test", lambda *a, **k: reads.append(1) or real(*a, **k))
    final = record_final(store, digits, BS)
    assert final["trial"] == best and final["weights"] == "kept"
    assert final["validation"] == pytest.approx(results[best].score)
    # independent check: the kept model rebuilt by hand scores the same on test
    model, _, _ = build_model(_derivation((4, 64)[best]), digits, BS)
    from archgram.search.weights import load_weights

    model.load_state_dict(load_weights(weights_file(store.url, best)))
    expected, _ = score_split(model, digits, digits.data(0), "test", BS)
    assert final["test"] == pytest.approx(expected)
    assert StudyStore(tmp_path / "s.db").meta[FINAL_KEY] == final  # stored in the study
    assert record_final(store, digits, BS) == final and len(reads) == 1  # never read twice


def test_final_pick_without_kept_weights_is_retrained_to_the_same_score(tmp_path, digits):
    kept = StudyStore(tmp_path / "a.db", meta={"task": "digits"})
    lost = StudyStore(tmp_path / "b.db", meta={"task": "digits"})
    d = _derivation(16)
    _trial(kept, d, digits, seed=3)
    _trial(lost, d, digits, seed=3, keep=False)
    a, b = record_final(kept, digits, BS), record_final(lost, digits, BS)
    assert (a["weights"], b["weights"]) == ("kept", "retrained")
    assert b["test"] == pytest.approx(a["test"])  # CPU + step budget: retraining is exact


def test_a_study_of_the_old_test_scored_protocol_is_refused(tmp_path, digits):
    old = StudyStore(tmp_path / "old.db", meta={"task": "digits"})  # written without a protocol
    old.finish(old.start(_derivation(4)), {"status": "ok", "score": 0.5})
    with pytest.raises(StudyError, match="earlier archgram.*--study"):
        StudyStore(tmp_path / "old.db", meta={"task": "digits", "protocol": PROTOCOL})
    # an empty study (no trials yet) simply takes the protocol
    StudyStore(tmp_path / "new.db", meta={"task": "digits"})
    assert StudyStore(tmp_path / "new.db", meta={"protocol": PROTOCOL}).meta["protocol"] == PROTOCOL
