"""Multi-task search in one run (FBNetV5, S29): per-task arms of ``*_per_task`` rules,
retyping per task, one objective per task in the study, the per-task Pareto report,
and clean errors for bad tasks and grammars."""
from __future__ import annotations

import json

import pytest

import archgram
from archgram import cli
from archgram.errors import ArchgramError, DerivationError
from archgram.grammar.model import Grammar
from archgram.search import report
from archgram.search.evaluator import evaluate
from archgram.search.multitask import TaskSet, evaluate_tasks, for_task, precheck
from archgram.search.store import StudyStore, TrialRecord
from archgram.tasks import get_task

B = 16
# digits (B,1,8,8) and mnist1d (B,40,1): a channel linear types for both; task 0
# (digits) takes arm 0 of cell_per_task (relu), task 1 (mnist1d) arm 1 (a linear).
SHARED = """
net : linear(out=16) cell_per_task linear(out=16)
cell_per_task : clone(2) a b add
a : relu
b : linear(out=16)
"""


def _ops(d) -> list[str]:
    return [n.op for n in d.ops()]


@pytest.fixture(scope="module")
def tasks():
    out = [get_task("digits"), get_task("mnist1d")]
    for t in out:
        t.data(0)
    return out


def sample(text: str, task, batch: int = B):
    return Grammar.from_text(text).sample(task.body_input_shape(batch), seed=0, target=task.output_target(batch))


@pytest.mark.catalog("S29")
def test_each_task_trains_its_own_arm_of_a_per_task_rule(tasks):
    d = sample(SHARED, tasks[0])
    assert _ops(d) == ["linear", "clone", "relu", "linear", "add", "linear"]  # the joint derivation
    assert _ops(for_task(d, 0, 2)) == ["linear", "relu", "linear"]
    assert _ops(for_task(d, 1, 2)) == ["linear", "linear", "linear"]
    # same as writing the task's architecture out by hand
    hand = sample("net : linear(out=16) relu linear(out=16)\n", tasks[0])
    assert for_task(d, 0, 2).hash() == hand.hash()
    assert for_task(d, 0, 1).hash() == d.hash()  # one task: the per-task rule is a plain branching


def test_per_task_rules_must_have_one_arm_per_task(tasks):
    three = sample(SHARED.replace("clone(2) a b add", "clone(3) a b a add"), tasks[0])
    with pytest.raises(DerivationError, match="3 arms for 2 tasks"):
        for_task(three, 0, 2)
    plain = sample(SHARED.replace("clone(2) a b add", "a"), tasks[0])
    with pytest.raises(DerivationError, match="must be one branching"):
        for_task(plain, 0, 2)


@pytest.mark.catalog("S29")
def test_evaluate_tasks_scores_each_task_as_its_own_run(tasks):
    """Per-task results equal separate evaluations of each task's arm (an independent
    reference); score is their mean, params their sum."""
    d = sample(SHARED, tasks[0])
    r = evaluate_tasks(d, tasks, "6steps", seed=1, train_options={"threads": 1})
    assert r.ok, r.message
    alone = [evaluate(for_task(d, i, 2), t, "6steps", seed=1, batch_size=B, train_options={"threads": 1})
             for i, t in enumerate(tasks)]
    assert [r.extras[f"score:{t.name}"] for t in tasks] == [a.score for a in alone]
    assert r.score == pytest.approx(sum(a.score for a in alone) / 2)
    assert r.params == sum(a.params for a in alone) and r.task == "digits+mnist1d"
    assert r.extras["params:digits"] != r.extras["params:mnist1d"]  # different arms, different models


def test_a_derivation_that_does_not_fit_a_task_fails_that_trial_cleanly(tasks):
    d = sample("net : conv2d(out=8, k=3) relu\n", tasks[0])  # an image op: no sequence fits
    r = evaluate_tasks(d, tasks, "3steps", train_options={"threads": 1})
    assert (r.status, r.failure) == ("failed", "shape") and r.message.startswith("task mnist1d:")


def test_task_sets_and_bad_input():
    assert TaskSet.parse(["digits,mnist1d"]).names == TaskSet.parse(["digits", "mnist1d"]).names == ("digits", "mnist1d")
    ts = TaskSet.parse(["digits", "mnist1d"])
    assert ts.objectives(("score", "params")) == ("score", "score:digits", "score:mnist1d", "params")
    assert TaskSet.parse("digits").objectives(("score",)) == ("score",) and ts.label == "digits+mnist1d"
    with pytest.raises(ArchgramError, match="unknown task 'digitz'; did you mean 'digits'"):
        TaskSet.parse(["digitz", "mnist1d"])
    with pytest.raises(ArchgramError, match="digits given twice"):
        TaskSet.parse(["digits,mnist1d,digits"])
    with pytest.raises(ArchgramError, match="at least one task"):
        TaskSet.parse([" , "])


def test_precheck_refuses_grammars_no_sample_of_which_fits_every_task():
    ts = TaskSet.parse("digits,mnist1d")
    precheck(Grammar.from_text(SHARED), ts, B)
    with pytest.raises(ArchgramError, match="3 arms for 2 tasks"):
        precheck(Grammar.from_text(SHARED.replace("clone(2) a b add", "clone(3) a b a add")), ts, B)
    with pytest.raises(ArchgramError, match="runs on every task of digits\\+mnist1d.*mnist1d"):
        precheck(Grammar.from_text("net : conv2d(out=8, k=3) relu\n"), ts, B)


def _rec(n, a, b, params=100):
    return TrialRecord(n, "COMPLETE", None, (a + b) / 2, {"score:x": a, "score:y": b, "params": params, "hash": str(n)})


def test_task_pareto_front_is_the_non_dominated_set():
    records = [_rec(0, 0.9, 0.05), _rec(1, 0.5, 0.5), _rec(2, 0.4, 0.5), _rec(3, 0.1, 0.8), _rec(4, 0.5, 0.5, 50),
               TrialRecord(5, "FAIL", None, None, {"failure": "shape"})]
    front = report.task_pareto_front(records, ["x", "y"])
    # 2 is beaten by 1 on x at equal y; 1 and 4 tie on both (both kept), best mean first, fewer params first
    assert [r.number for r in front] == [4, 1, 0, 3]
    rep = report.task_report(records, ["x", "y"])
    assert rep["best"]["x"]["trial"] == 0 and rep["best"]["y"]["trial"] == 3
    assert report.study_tasks(("score", "score:x", "score:y", "params")) == ["x", "y"]


def test_store_takes_one_objective_per_task(tmp_path):
    objs = TaskSet.parse("digits,mnist1d").objectives(("score",))
    store = StudyStore(tmp_path / "m.db", objectives=objs, meta={"tasks": ["digits", "mnist1d"]})
    d = Grammar.from_text("net : linear(out=8)\n").sample((2, 3, 8), seed=0)
    store.finish(store.start(d), {"status": "ok", "score": 0.5, "score:digits": 0.7, "score:mnist1d": 0.3})
    assert store.study.directions[1].name == "MAXIMIZE" and store.study.trials[0].values == [0.5, 0.7, 0.3]
    with pytest.raises(ArchgramError, match="tasks"):
        StudyStore(tmp_path / "m.db", objectives=objs, meta={"tasks": ["mnist1d", "digits"]})


def invoke(capsys, *args):
    code = cli.run([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


@pytest.mark.parametrize("args, message", [
    (["--task", "digits", "--task", "mnist1dd"], "unknown task 'mnist1dd'"),
    (["--task", "digits,mnist1d", "--scheduler", "asha"], "multi-task search"),
    (["--task", "digits", "--train-option", "fgsm"], "give a method"),
    (["--task", "digits", "--train-option", "at", "--train-option", "adv_eps=0"], "adv_eps must be positive"),
])
def test_cli_refuses_bad_tasks_and_options_before_running(capsys, tmp_path, args, message):
    grammar = tmp_path / "g.pcfg"
    grammar.write_text(SHARED)
    code, _, err = invoke(capsys, "search", grammar, *args, "--study", tmp_path / "s.db")
    assert code == 2 and message in err
    assert not (tmp_path / "s.db").exists()


@pytest.mark.slow  # a real Ray search: 15-50 s depending on the load
@pytest.mark.catalog("S29", "S74")
def test_cli_multi_task_search_with_adversarial_training_and_per_task_report(capsys, tmp_path):
    """One search on digits and mnist1d with AT: the study keeps both tasks' scores and the
    train options, and ``show`` prints the per-task Pareto front."""
    pytest.importorskip("ray")
    grammar, study = tmp_path / "g.pcfg", tmp_path / "mt.db"
    grammar.write_text(SHARED.replace("a : relu", "a : relu | gelu"))
    code, out, err = invoke(capsys, "search", grammar, "--task", "digits", "--task", "mnist1d", "--strategy", "random",
                            "--trials", "2", "--workers", "1", "--budget", "4steps", "--batch-size", B,
                            "--train-option", "at", "--study", study, "--json")
    assert code == 0, err
    store = report.open_study(study)
    assert store.objectives == ("score", "score:digits", "score:mnist1d")
    assert store.meta["tasks"] == ["digits", "mnist1d"] and store.meta["train_options"]["adversarial"] == "at"  # beside the recipe's schedule
    records = store.records()
    assert len(records) == 2 and all(r.ok for r in records)
    assert all(r.score == pytest.approx((r.attrs["score:digits"] + r.attrs["score:mnist1d"]) / 2) for r in records)
    code, out, _ = invoke(capsys, "show", study, "--json", "--no-plots")
    shown = json.loads(out)
    assert code == 0 and shown["per_task"]["tasks"] == ["digits", "mnist1d"] and shown["per_task"]["front"]
    code, out, _ = invoke(capsys, "show", study, "--out", tmp_path / "plots")
    assert "per-task Pareto front" in out and (tmp_path / "plots" / "pareto_tasks.png").exists()


@pytest.mark.catalog("S29")
def test_nsga2_maximises_each_task_score_and_reads_it_from_the_metrics():
    from archgram.search.strategies import get_strategy

    g = archgram.load_grammar("einspace")
    strategy = get_strategy("nsga2")(g, (8, 40, 1), seed=0, objectives=("score:digits", "score:mnist1d", "params"))
    assert strategy.study_directions() == ["maximize", "maximize", "minimize"]
    values = strategy._values(0.5, {"score:digits": 0.9, "score:mnist1d": 0.1, "params": 10})
    assert values == [0.9, 0.1, 10.0]
