"""The study store keeps every finished trial, refuses foreign files, survives kills."""
from __future__ import annotations

import sqlite3

import pytest

import archgram
from archgram.search.store import INTERRUPTED, StudyError, StudyStore

SHAPE = (2, 3, 8, 8)


@pytest.fixture(scope="module")
def samples():
    g = archgram.load_grammar("einspace")
    return [g.sample(SHAPE, seed=s) for s in range(4)]


def ok(score, params=100):
    return {"status": "ok", "score": score, "params": params, "latency_ms": 1.0, "metric": "accuracy"}


def test_trials_round_trip_with_their_derivations(tmp_path, samples):
    store = StudyStore(tmp_path / "s.db", meta={"task": "digits"})
    for i, d in enumerate(samples[:3]):
        trial = store.start(d, strategy="random")
        store.finish(trial, ok(0.1 * i))
    again = StudyStore(tmp_path / "s.db", meta={"task": "digits"})
    records = again.records()
    assert [r.derivation.hash() for r in records] == [d.hash() for d in samples[:3]]
    assert [r.score for r in records] == pytest.approx([0.0, 0.1, 0.2])
    assert again.leaderboard(1)[0].derivation.hash() == samples[2].hash()


def test_failures_are_results_with_reasons(tmp_path, samples):
    store = StudyStore(tmp_path / "s.db")
    trial = store.start(samples[0])
    store.finish(trial, {"status": "failed", "failure": "nan", "message": "loss became nan at step 3"})
    (rec,) = store.records()
    assert not rec.ok and rec.attrs["failure"] == "nan" and rec.score is None


def test_a_trial_left_running_by_a_killed_driver_is_not_counted(tmp_path, samples):
    store = StudyStore(tmp_path / "s.db")
    store.finish(store.start(samples[0]), ok(0.5))
    store.start(samples[1])  # the driver dies here
    resumed = StudyStore(tmp_path / "s.db")
    assert resumed.count_finished() == 1
    states = [t.user_attrs.get("failure") for t in resumed.study.trials]
    assert states == [None, INTERRUPTED]


def test_multi_objective_study_records_score_and_params(tmp_path, samples):
    store = StudyStore(tmp_path / "m.db", objectives=("score", "params"))
    store.finish(store.start(samples[0]), ok(0.9, params=1000))
    assert store.study.trials[0].values == [0.9, 1000.0]
    with pytest.raises(StudyError, match="optimises"):
        StudyStore(tmp_path / "m.db", objectives=("score",))


def test_a_file_that_is_not_sqlite_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("my precious notes\n")
    with pytest.raises(StudyError, match="not a SQLite database"):
        StudyStore(path)
    assert path.read_text() == "my precious notes\n"


def test_a_foreign_sqlite_file_is_refused(tmp_path):
    path = tmp_path / "other.db"
    con = sqlite3.connect(path)
    con.execute("create table accounts (id integer)")
    con.commit()
    con.close()
    with pytest.raises(StudyError):
        StudyStore(path)


def test_a_study_of_another_task_is_refused(tmp_path, samples):
    StudyStore(tmp_path / "s.db", meta={"task": "digits"})
    with pytest.raises(StudyError, match="task"):
        StudyStore(tmp_path / "s.db", meta={"task": "mnist1d"})


def test_a_rerun_with_other_training_settings_is_refused(tmp_path):
    path = tmp_path / "s.db"
    StudyStore(path, meta={"task": "digits", "training": {"lr": 0.001, "optimizer": "adamw"}})
    StudyStore(path, meta={"task": "digits", "training": {"lr": 0.001, "optimizer": "adamw"}})  # same: resumes
    with pytest.raises(StudyError, match="training"):
        StudyStore(path, meta={"task": "digits", "training": {"lr": 0.01, "optimizer": "adamw"}})
