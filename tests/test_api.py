"""The Python API: archgram.search(...) -> Study, archgram.open_study, and the
search policy the CLI and Python share (archgram.api.prepare, search.plan).
Nothing here starts Ray: prepare checks and plans without running."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

import archgram
from archgram import api
from archgram.errors import ArchgramError
from archgram.search import plan
from archgram.search.store import StudyStore
from archgram.tasks.reference import record, reference_of


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tiny(tmp_path) -> str:
    """A two-choice grammar: planning and prechecks stay fast."""
    path = tmp_path / "tiny.pcfg"
    path.write_text("start net\nnet : linear(out=8|16) relu\n")
    return str(path)


def table(tmp_path, n=80):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=(x[:, 0] > 0).astype(np.int64))
    return tmp_path / "d.npz"


def test_archgram_search_is_the_api_and_still_the_package():
    import archgram.search.runner as runner

    assert callable(archgram.search) and archgram.search.runner is runner
    assert archgram.search.evaluator.Budget.parse("5steps").steps == 5
    assert archgram.open_study is api.open_study


def test_prepare_sizes_evolution_to_the_run_as_the_cli_did(tmp_path):
    request = api.prepare("einspace", "digits", trials=10, study=tmp_path / "s.db")
    assert request.config.strategy_options == {"population": 5, "tournament": 2}
    assert api.prepare("einspace", "digits", trials=100, study=tmp_path / "s.db").config.strategy_options == {
        "population": 20, "tournament": 5}
    assert plan.strategy_options("nsga2", 8, None, None, ("score", "params")) == {"objectives": ("score", "params")}
    assert plan.objectives(None, "nsga2") == ("score", "params")
    assert not (tmp_path / "s.db").exists()  # prepare writes nothing


def test_short_evolution_runs_keep_a_tournament_of_two_so_parents_are_not_random_picks():
    assert plan.strategy_options("evolution", 6, None, None, ("score",)) == {"population": 3, "tournament": 2}
    assert plan.strategy_options("evolution", 4, None, None, ("score",)) == {"population": 2, "tournament": 2}
    assert plan.strategy_options("evolution", 16, None, None, ("score",)) == {"population": 8, "tournament": 4}


def test_short_pcfg_eda_runs_refit_within_the_run_instead_of_staying_random_search():
    assert plan.strategy_options("pcfg-eda", 6, None, None, ("score",)) == {"refit_every": 2}
    assert plan.strategy_options("pcfg-eda", 100, None, None, ("score",)) == {"refit_every": 8}


def test_prepare_builds_a_data_task_with_its_reference_and_default_study(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = table(tmp_path)
    request = api.prepare(tiny(tmp_path), data=path, target=None, data_options={"val_fraction": 0.2})
    assert request.config.task == f"data:{path.resolve()}"
    assert request.config.task_options == {"val_fraction": 0.2}
    assert request.config.study.endswith("runs/d.db") and request.task.data(0).n_val == 16
    assert request.task.body_input_shape(32) == (32, 4, 16)


@pytest.mark.parametrize("kwargs, message", [
    ({"data": (np.zeros((5, 2)), np.zeros(4, int))}, "x has 5 rows but y has 4"),
    ({"data": (np.array([[0.0], [np.nan], [1.0]]), np.array([0, 1, 0]))}, "NaN or inf"),
    ({"data": (np.zeros((6, 2)), np.ones(6, int))}, "single class"),
    ({"task": "no_such_mod_abc:Task"}, "cannot import module"),
    ({"task": "archgram.errors:ArchgramError"}, "not a Task subclass"),
    ({"task": "digits", "data": "x.npz"}, "not both"),
    ({"task": "digits", "target": "y"}, "apply to --data"),
    ({"task": "digits", "time_limit": "1.5 fortnights"}, "--time-limit '1.5 fortnights'"),
    ({"task": "digits", "time_limit": 0}, "--time-limit 0"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, kwargs, message):
    study = tmp_path / "s.db"
    with pytest.raises(ArchgramError) as err:
        api.prepare("einspace", study=study, **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not study.exists()


def test_resume_with_changed_data_is_refused_and_the_study_is_untouched(tmp_path):
    path = table(tmp_path)
    request = api.prepare(tiny(tmp_path), data=path, study=tmp_path / "s.db", trials=2)
    task = request.task
    StudyStore(request.config.study, meta={"task": task.name, "task_ref": record(task, request.config.task, {}),
                                           "input_shape": list(task.body_input_shape(32))})
    before = digest(tmp_path / "s.db")
    x = np.load(path)["x"]
    np.savez(path, x=x * 2, y=(x[:, 0] > 0).astype(np.int64))
    with pytest.raises(ArchgramError) as err:
        archgram.search(tiny(tmp_path), data=path, study=tmp_path / "s.db", trials=2)
    assert "changed since the study began" in str(err.value) and "x contents" in str(err.value)
    assert "y contents" not in str(err.value)
    assert digest(tmp_path / "s.db") == before


def test_study_reads_trials_best_and_a_dataframe(tmp_path):
    from archgram.grammar.model import load_grammar

    g = load_grammar("einspace")
    store = StudyStore(tmp_path / "s.db", meta={"task": "digits"})
    for i, score in enumerate((0.2, None, 0.7)):
        trial = store.start(g.sample((16, 1, 8, 8), seed=i), strategy="random", origin="sample")
        result = {"status": "ok", "score": score, "params": 10 * i} if score is not None else \
            {"status": "failed", "failure": "nan"}
        store.finish(trial, result)
    study = api.open_study(tmp_path / "s.db")
    assert [r.number for r in study.trials()] == [0, 1, 2] and study.best().number == 2
    frame = study.to_dataframe()
    assert list(frame["state"]) == ["COMPLETE", "FAIL", "COMPLETE"] and frame["score"].iloc[2] == pytest.approx(0.7)
    assert frame["failure"].iloc[1] == "nan"


def test_open_study_of_python_data_needs_the_same_data(tmp_path):
    from archgram.tasks.data import from_arrays

    x, y = np.arange(60.0).reshape(30, 2), np.arange(30) % 2
    task = from_arrays(x, y)
    StudyStore(tmp_path / "s.db", meta={"task": task.name, "task_ref": record(task, reference_of(task), {})})
    with pytest.raises(ArchgramError, match="given from Python"):
        _ = api.open_study(tmp_path / "s.db").task
    assert api.open_study(tmp_path / "s.db", data=(x, y)).task.data(0).n_train == 24
    with pytest.raises(ArchgramError, match="y contents"):
        api.open_study(tmp_path / "s.db", data=(x, 1 - y))


@pytest.mark.slow  # one local Ray start and two short trials
def test_workers_get_the_data_from_the_object_store_not_the_path(tmp_path):
    """The data file is deleted after the driver read it and before any trial
    runs: the workers still train, because the task travels through Ray's object
    store; the study records the reference and the content hash."""
    grammar = tmp_path / "tiny.pcfg"
    grammar.write_text("start net\nnet : linear(out=8|16) relu\n")
    path = table(tmp_path, n=200)
    request = api.prepare(str(grammar), data=path, task_kind="sequence", trials=2, workers=1, budget="10steps",
                          batch_size=16, study=tmp_path / "s.db", strategy="random")
    path.unlink()
    study = api.run(request)
    assert [r.state for r in study.trials()] == ["COMPLETE", "COMPLETE"], [r.attrs for r in study.trials()]
    stored = study.meta["task_ref"]
    assert stored["ref"] == f"data:{path.resolve()}" and stored["sha256"] == request.task.fingerprint["sha256"]
