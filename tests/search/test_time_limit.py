"""``--time-limit``: reading the duration, the per-trial cap min(own cap, time
left), the searcher that stops starting trials once the limit has passed (a
fake clock, no Ray), and run_search / run_local ending early with a message."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from archgram.errors import ArchgramError
from archgram.grammar.model import Grammar
from archgram.search import runner
from archgram.search.budget import Budget
from archgram.search.config import SearchConfig
from archgram.search.time_limit import TimeLimit, parse_time_limit, trial_cap

#: tiny conv nets (as in tests/cli/test_search_cli.py): a trial trains in well under a second
TINY = (Path(__file__).resolve().parents[1] / "data" / "tiny_conv.pcfg").read_text()
SHAPE = (16, 1, 8, 8)


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("60m", 3600), ("1.5h", 5400), (" 2min ", 120),
                                           (30, 30), (2.5, 2.5)])
def test_durations_read_as_seconds(text, seconds):
    assert parse_time_limit(text) == seconds


@pytest.mark.parametrize("text", ["abc", "0s", "-5m", "0", "200", "500steps", "2epochs", "60s,100steps", "", -3, 0,
                                  float("inf"), True])
def test_bad_durations_are_refused_naming_the_option(text):
    with pytest.raises(ArchgramError, match="--time-limit"):
        parse_time_limit(text)


def test_trial_cap_is_the_smaller_of_the_trial_s_own_cap_and_the_time_left():
    assert trial_cap(30.0, "500steps", None) == 30.0  # no limit: unchanged
    assert trial_cap(None, "500steps", None) is None
    assert trial_cap(30.0, "500steps", 12.5) == 12.5
    assert trial_cap(30.0, "500steps", 100.0) == 30.0
    assert trial_cap(None, "500steps", 100.0) == 100.0  # no cap of its own, no seconds in the budget
    # no cap of its own: the evaluator's default for a seconds budget (3x + 10 s) still counts
    assert Budget.parse("5s").default_timeout() == 25
    assert trial_cap(None, "5s", 100.0) == 25 and trial_cap(None, "5s", 7.0) == 7.0
    assert trial_cap(30.0, "500steps", 9.88705) == 9.9 and trial_cap(30.0, "500steps", 0.01) == 0.1  # readable


def test_the_limit_counts_from_its_start_on_its_clock():
    clock = FakeClock()
    limit = TimeLimit.start("1m", started=clock.now - 20, clock=clock)
    assert (limit.text, limit.seconds, limit.left(), limit.passed()) == ("1m", 60, 40, False)
    clock.now += 40
    assert limit.passed() and limit.reason(23, 100) == "time limit 1m reached after 23 of 100 trials"
    assert TimeLimit.start(None) is None and TimeLimit.start(90).text == "90s"


def _searcher(tmp_path, clock, trial_seconds=None):
    from archgram.search.progress import Progress
    from archgram.search.searcher import ErrorLog, StrategySearcher
    from archgram.search.store import StudyStore
    from archgram.search.strategies import get_strategy
    from archgram.tasks import get_task

    config = SearchConfig(grammar="tiny", task="digits", study=str(tmp_path / "s.db"), strategy="random", trials=50,
                          budget="5steps", batch_size=16, lr=1e-3, optimizer="adam", trial_seconds=trial_seconds,
                          time_limit="1m")
    strategy = get_strategy("random")(Grammar.from_text(TINY), SHAPE, seed=0,
                                      target=get_task("digits").output_target(16))
    store = StudyStore(config.study, meta={"task": "digits", "input_shape": list(SHAPE), "objectives": ["score"]})
    progress = Progress(total=50)
    limit = TimeLimit.start("1m", clock=clock)
    updates = []
    return StrategySearcher(strategy, store, config, progress, 50, updates.append, ErrorLog(), limit), updates


def test_the_searcher_caps_trials_at_the_time_left_and_stops_once_it_passed(tmp_path):
    from ray.tune.search import Searcher

    clock = FakeClock()
    searcher, updates = _searcher(tmp_path, clock, trial_seconds=30.0)
    try:
        assert searcher.suggest("a")["timeout"] == 30.0  # 60 s left: the trial's own cap is smaller
        clock.now += 45
        assert searcher.suggest("b")["timeout"] == pytest.approx(15.0)  # 15 s left
        clock.now += 15
        assert searcher.suggest("c") is Searcher.FINISHED and searcher.suggest("d") is Searcher.FINISHED
        assert searcher.suggested == 2 and len(searcher.store.study.trials) == 2
        assert searcher.progress.stopped == "time limit 1m reached after 2 of 50 trials"  # both still running
        assert updates and updates[-1].stopped == searcher.progress.stopped
        # a trial the limit's cap cut is a 'timeout' failure that says so; one its own cap cut is not
        searcher.on_trial_complete("b", {"status": "failed", "failure": "timeout", "message": "ran past the 15s cap"})
        searcher.on_trial_complete("a", {"status": "failed", "failure": "timeout", "message": "ran past the 30s cap"})
        messages = {r.attrs["message"] for r in searcher.store.records()}
        assert messages == {"ran past the 15s cap (the time left of --time-limit 1m)", "ran past the 30s cap"}
    finally:
        searcher.close()


def test_run_search_past_its_limit_starts_no_ray_and_says_why(tmp_path, monkeypatch):
    import time

    def no_ray(*a, **k):
        raise AssertionError("no trial may start after the time limit")

    monkeypatch.setattr(runner, "run_trials", no_ray)
    config = SearchConfig(grammar="einspace", task="digits", study=str(tmp_path / "s.db"), strategy="random",
                          trials=5, budget="5steps", reference=False, seed_reference=False, time_limit="2s",
                          started=time.monotonic() - 3)  # as if start-up took 3 s
    updates = []
    store = runner.run_search(config, updates.append)
    assert store.records() == [] and updates[-1].stopped == "time limit 2s reached after 0 of 5 trials"


def test_run_search_refuses_a_bad_limit_before_it_creates_the_study(tmp_path):
    config = SearchConfig(grammar="einspace", task="digits", study=str(tmp_path / "s.db"), time_limit="-5m")
    with pytest.raises(ArchgramError, match="--time-limit '-5m'"):
        runner.run_search(config)
    assert not (tmp_path / "s.db").exists()


def test_run_local_stops_at_its_limit():
    from archgram.search.loop import run_local
    from archgram.search.strategies import get_strategy
    from archgram.tasks import get_task

    task = get_task("digits")
    strategy = get_strategy("random")(Grammar.from_text(TINY), SHAPE, seed=0, target=task.output_target(16))
    recipe = task.recipe.override(budget="5steps", batch_size=16)
    out = run_local(strategy, task, recipe, 10_000, time_limit="1e-6s")
    assert out.trials == [] and out.stopped == "time limit 1e-6s reached after 0 trials (0 steps)"


def test_a_multi_task_trial_shares_one_cap_across_its_tasks():
    from archgram.search.multitask import evaluate_tasks
    from archgram.tasks import get_task

    digits = get_task("digits")
    d = Grammar.from_text(TINY).sample(SHAPE, seed=0)
    r = evaluate_tasks(d, [digits, digits], "5steps", timeout=1e-3, train_options={"threads": 1})
    assert (r.status, r.failure) == ("failed", "timeout") and r.message.startswith("task digits: ran past")
    assert evaluate_tasks(d, [digits, digits], "5steps", timeout=60, train_options={"threads": 1}).ok


def test_eta_never_passes_the_time_limit():
    from archgram.search.progress import Progress

    p = Progress(total=1000, started=time.monotonic() - 10.0)
    assert p.eta_seconds() is None  # nothing finished, no limit: unknown
    p.finished({"status": "ok", "score": 0.5}, 0, "h0")
    assert p.eta_seconds() == pytest.approx(10.0 * 999, rel=0.01)  # 10 s a trial, 999 to go
    p.time_left = lambda: 120.0
    assert p.eta_seconds() == 120.0
    p.time_left = lambda: -5.0  # past the limit: the running trials end now
    assert p.eta_seconds() == 0.0
