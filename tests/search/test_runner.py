"""The Ray runner: completes the study's total, stores every trial (failures and
early stops included) and resumes without re-running finished trials.

One local Ray (2 CPUs) serves the whole module: run_search joins a running Ray
instead of starting its own, which saves 3-8 s of startup per search."""
from __future__ import annotations

import sys

import pytest

from archgram.errors import ArchgramError
from archgram.grammar.model import Grammar
from archgram.search import ray_tuner, runner, worker
from archgram.search.runner import SearchConfig, run_search
from archgram.search.store import StudyStore
from archgram.search.strategies.base import Proposal, Strategy, register_strategy

BUDGET = "20steps"


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()


def config(tmp_path, name="s.db", **kw) -> SearchConfig:
    base = dict(grammar="einspace", task="digits", study=str(tmp_path / name), strategy="random", trials=3,
                workers=2, budget=BUDGET, seed=0, reference=False, seed_reference=False)  # runner mechanics only
    return SearchConfig(**(base | kw))


@register_strategy
class _BadEveryOther(Strategy):
    """Every other proposal is typed for a sequence input, so it cannot run on digits."""

    name = "test-bad-every-other"

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.n = 0
        self.bad = Grammar.from_text("net : permute(order=(0,2,1)) linear(out=8|16|24|32)\n")

    def propose(self) -> Proposal:
        self.n += 1
        if self.n % 2:
            return Proposal(self.bad.sample((32, 10, 4), seed=self.rng.randrange(2**31)), origin="bad")
        return Proposal(self.sample())


def _crashing_trainable(config, task=None):
    raise RuntimeError("worker exploded on purpose")


def test_unknown_scheduler_and_bad_asha_options_raise_before_ray(tmp_path):
    with pytest.raises(ArchgramError, match="unknown scheduler 'ashaa'.*did you mean 'asha'"):
        run_search(config(tmp_path, scheduler="ashaa"))
    with pytest.raises(ArchgramError, match="reduction"):
        run_search(config(tmp_path, scheduler="asha", asha_reduction=1))
    assert not (tmp_path / "s.db").exists()


def test_scheduler_attributes_not_names_decide_reports_and_multi_task(tmp_path):
    """What a search asks of trials comes from the scheduler class: FIFO reads no
    reports (none are made), ASHA reads asha_reports (capped by a steps budget),
    and a newly registered scheduler that reads reports gets them, runs its own
    option check and is refused for a multi-task search -- with no name checks."""
    from archgram import api
    from archgram.search.schedulers import SCHEDULERS, Scheduler, check_scheduler, reports_per_trial

    assert reports_per_trial(config(tmp_path)) == 0
    assert reports_per_trial(config(tmp_path, scheduler="asha", asha_reports=30)) == 20  # 20steps
    assert reports_per_trial(config(tmp_path, scheduler="asha", asha_reports=5)) == 5

    @SCHEDULERS.decorator()
    class _Reading(Scheduler):
        name = "test-reading"
        reads_reports = True

        @classmethod
        def check(cls, config):
            if config.asha_reports > 7:
                raise ArchgramError("test-reading: too many reports")

    try:
        assert reports_per_trial(config(tmp_path, scheduler="test-reading", asha_reports=6)) == 6
        with pytest.raises(ArchgramError, match="too many reports"):
            check_scheduler(config(tmp_path, scheduler="test-reading", asha_reports=8))
        with pytest.raises(ArchgramError, match="multi-task search .* runs with --scheduler fifo$"):
            api.prepare("einspace", ["digits", "mnist1d"], scheduler="test-reading", study=tmp_path / "m.db")
    finally:
        SCHEDULERS.remove("test-reading")


def test_pruned_trials_are_finished_not_lost(tmp_path):
    g = Grammar.from_text("net : linear(out=8)\n")
    store = StudyStore(tmp_path / "p.db")
    store.finish(store.start(g.sample((2, 3, 8), seed=0)), {"status": "pruned", "train_loss": 1.5, "progress": 20})
    store.finish(store.start(g.sample((2, 3, 8), seed=0)), {"status": "ok", "score": 0.5})
    again = StudyStore(tmp_path / "p.db")
    pruned, ok = again.records()
    assert (pruned.state, pruned.pruned, pruned.score, pruned.attrs["train_loss"]) == ("PRUNED", True, None, 1.5)
    assert ok.ok and again.count_finished() == 2


def test_search_completes_its_total_stores_failures_and_resumes(tmp_path, ray_local, monkeypatch):
    """FIFO: every trial is stored, shape failures included, and the search goes on;
    a rerun with the same total starts no Ray trial."""
    updates = []
    store = run_search(config(tmp_path, strategy="test-bad-every-other", trials=4), updates.append)
    records = store.records()
    assert [r.number for r in records] == [0, 1, 2, 3]
    bad = [r for r in records if r.attrs.get("origin") == "bad"]
    assert len(bad) == 2
    assert all(r.state == "FAIL" and r.attrs["failure"] == "shape" and "does not type-check" in r.attrs["message"]
               for r in bad)
    assert all(r.attrs.get("steps") == 20 for r in records if r.ok)
    last = updates[-1]
    assert last.done == 4 and last.running == 0 and last.failed >= 2 and len(last.timings) == 4
    t = next(t for t in last.timings if t["status"] == "ok")
    assert t["ask_s"] >= 0 and t["store_start_s"] > 0 and t["eval_s"] > 0 and t["t_eval_end"] >= t["t_eval_start"]

    def no_ray(*a, **k):
        raise AssertionError("a finished study must not start Ray trials")

    monkeypatch.setattr(runner, "run_trials", no_ray)
    again = []
    run_search(config(tmp_path, strategy="test-bad-every-other", trials=4), again.append)
    assert again[-1].done == 4 and again[-1].done_at_start == 4


def test_asha_records_pruned_or_complete(tmp_path, ray_local):
    updates = []
    store = run_search(config(tmp_path, trials=4, scheduler="asha", asha_reduction=2), updates.append)
    records = store.records()
    assert len(records) == 4
    for r in records:
        assert r.state in ("COMPLETE", "PRUNED", "FAIL"), r.state
        if r.pruned:
            assert r.score is None and 0 < r.attrs["progress"] < 100 and r.attrs["train_loss"] > 0
    assert updates[-1].pruned == sum(r.pruned for r in records)


def test_a_crashed_worker_is_a_failed_error(tmp_path, ray_local, monkeypatch):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setattr(ray_tuner, "trainable", _crashing_trainable)
    store = run_search(config(tmp_path, trials=2))
    records = store.records()
    assert len(records) == 2
    for r in records:
        assert r.state == "FAIL" and r.attrs["failure"] == "error"
        assert "worker exploded on purpose" in r.attrs["message"]


class _FlakyRay:
    """Stands in for the ray module: ``init`` times out ``fails`` times, then works."""

    def __init__(self, fails: int, message: str = "The current node timed out during startup. ..."):
        self.fails, self.message, self.inits, self.shutdowns = fails, message, 0, 0

    def init(self, **kwargs):
        self.inits += 1
        if self.inits <= self.fails:
            raise Exception(self.message)

    def shutdown(self):
        self.shutdowns += 1


def test_local_ray_start_is_retried_after_a_startup_timeout(monkeypatch):
    monkeypatch.setattr(ray_tuner.time, "sleep", lambda s: None)
    ray = _FlakyRay(fails=2)
    ray_tuner.start_ray(ray, {}, None)
    assert (ray.inits, ray.shutdowns) == (3, 2)

    ray = _FlakyRay(fails=99)
    with pytest.raises(ArchgramError, match="did not start in 3 tries"):
        ray_tuner.start_ray(ray, {}, None)
    # other failures, and any failure joining a cluster, are not retried
    ray = _FlakyRay(fails=1, message="something else")
    with pytest.raises(Exception, match="something else"):
        ray_tuner.start_ray(ray, {}, None)
    ray = _FlakyRay(fails=1)
    with pytest.raises(Exception, match="timed out"):
        ray_tuner.start_ray(ray, {}, "10.0.0.1:6379")
    assert ray.inits == 1


def test_a_trial_trains_with_the_search_learning_rate_and_optimizer(monkeypatch):
    """lr/optimizer travel in the trial config to evaluate (and default for older configs)."""
    ray_tune = pytest.importorskip("ray.tune")
    from archgram.search import evaluator

    seen, reported = {}, []

    def fake_evaluate(derivation, task, budget, **kwargs):
        seen.update(kwargs)
        return evaluator.TrialResult(status="failed", failure="error", message="stop here")

    monkeypatch.setattr(evaluator, "evaluate", fake_evaluate)
    monkeypatch.setattr(ray_tune, "report", reported.append)
    d = Grammar.from_text("start n\nn : linear(out=4)").sample((2, 3, 5), seed=0)
    config = {"derivation": d.to_json(), "task": "digits", "budget": "1steps", "seed": 3, "batch_size": 2,
              "lr": 0.02, "optimizer": "sgd"}
    worker.trainable(config)
    assert (seen["lr"], seen["optimizer"], seen["seed"]) == (0.02, "sgd", 3)
    del config["lr"], config["optimizer"]
    worker.trainable(config)
    assert (seen["lr"], seen["optimizer"]) == (1e-3, "adamw")
    assert reported and reported[-1]["status"] == "failed"


def test_rungs_under_inheritance_continue_a_promotion_from_its_kept_rung_zero_weights(tmp_path, ray_local):
    """One worker, 30-step budget, 2 rungs of eta 3: three 10-step trials, then the
    best is promoted and trains the 20 steps it lacks from its own kept weights."""
    grammar = tmp_path / "convs.pcfg"
    grammar.write_text("start network\nnetwork : conv2d(out=4 | 8 | 12 | 16 | 24 | 32, k=3) relu\n")
    store = run_search(config(tmp_path, grammar=str(grammar), trials=4, workers=1, budget="30steps", rungs=2, eta=3,
                              inherit=True))
    records = store.records()
    promoted = [r for r in records if r.attrs.get("origin") == "promotion"]
    assert len(promoted) == 1 and promoted[0].ok
    first = next(r for r in records if r.number < promoted[0].number and r.attrs["hash"] == promoted[0].attrs["hash"])
    assert first.attrs["steps"] == 10 and promoted[0].attrs["steps"] == 20
    assert promoted[0].attrs["rung"] == 1 and promoted[0].attrs["inherited"] > 0


def test_a_time_limit_stops_starting_trials_ends_near_it_and_says_so(tmp_path, ray_local):
    """--trials 1000 under a 10 s limit: no trial starts after it, the running one
    is capped at the time left, every finished trial is stored, and the progress
    says why the study is short of its total."""
    import time

    updates = []
    t0 = time.monotonic()
    store = run_search(config(tmp_path, trials=1000, workers=1, time_limit="10s"), updates.append)
    wall = time.monotonic() - t0
    records = store.records()
    assert 0 < len(records) < 1000
    assert updates[-1].stopped == f"time limit 10s reached after {len(records)} of 1000 trials"
    assert wall < 10 + 20, wall  # the last trial ends by the limit; then Tune's teardown and the final test
    assert all(r.state in ("COMPLETE", "FAIL") for r in records)
