"""``archgram search`` / ``archgram show``: bad input refused before Ray starts (one
line, exit 2, files untouched), a real search that resumes to its total, show's
leaderboard and plots, and the report functions on hand-made records."""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from archgram import cli
from archgram.grammar.derivation import Derivation
from archgram.search import report
from archgram.search.store import PROTOCOL, StudyStore, TrialRecord

#: refused before anything runs, so the grammar does not matter
SEARCH = ["einspace", "--task", "digits", "--budget", "20steps", "--batch-size", "16"]


def invoke(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.run([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def archgram(*args: str, timeout: float = 420) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "archgram.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def rec(number: int, score: float | None, params: float | None = None, state: str | None = None, **attrs) -> TrialRecord:
    state = state or ("COMPLETE" if score is not None else "FAIL")
    a = dict(attrs, hash=f"h{number}")
    if params is not None:
        a["params"] = params
    return TrialRecord(number, state, None, score, a)


# ----------------------------------------------------------- report functions
def test_pareto_front_keeps_only_non_dominated():
    records = [
        rec(0, 0.5, 100),
        rec(1, 0.7, 1000),
        rec(2, 0.6, 2000),  # dominated by 1 (worse and bigger)
        rec(3, 0.9, 5000),
        rec(4, 0.4, 50),
        rec(5, 0.5, 100),  # same as 0: the earlier one stays
        rec(6, None, 10, failure="shape"),  # failed: never on the front
        rec(7, 0.95),  # no params: not placed
    ]
    front = report.pareto_front(records)
    assert [r.number for r in front] == [4, 0, 1, 3]
    assert report.pareto_front([]) == []
    lat = [rec(0, 0.5, latency_ms=2.0), rec(1, 0.4, latency_ms=1.0), rec(2, 0.3, latency_ms=3.0)]
    assert [r.number for r in report.pareto_front(lat, "latency")] == [1, 0]


def test_best_so_far_and_counts():
    records = [rec(3, 0.2), rec(0, None, failure="shape"), rec(1, 0.5), rec(2, None, failure="timeout"),
               rec(4, 0.4), rec(5, None, state="PRUNED")]
    assert report.best_so_far(records) == [(0, None), (1, 0.5), (2, 0.5), (3, 0.5), (4, 0.5), (5, 0.5)]
    counts = report.status_counts(records)
    assert counts["ok"] == 3 and counts["failed"] == 2 and counts["pruned"] == 1
    assert counts["failed:shape"] == 1 and counts["failed:timeout"] == 1
    rows = report.leaderboard_rows(records, top=2)
    assert [(r["rank"], r["trial"]) for r in rows] == [(1, 1), (2, 4)]


def test_plots_are_written(tmp_path):
    records = [rec(i, 0.1 * (i % 5), 10 ** (2 + i % 4)) for i in range(12)] + [rec(12, None, failure="nan")]
    a = report.plot_best_so_far(records, tmp_path / "a.png")
    b = report.plot_pareto(records, tmp_path / "b.png")
    for p in (a, b):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "args, message",
    [
        (["--task", "digts"], "did you mean 'digits'"),
        (["--task", "digits", "--strategy", "annealing"], "unknown strategy 'annealing'"),
        (["--task", "digits", "--budget", "5parsecs"], "--budget"),
        (["--task", "digits", "--budget", "0s"], "--budget"),
        (["--task", "digits", "--objectives", "score,accuracy"], "unknown objective 'accuracy'"),
        (["--task", "digits", "--objectives", "params"], "'score' first"),
        (["--task", "digits", "--trials", "0"], "--trials"),
        (["--task", "digits", "--population", "8", "--tournament", "9"], "--tournament"),
        (["--task", "digits", "--seed-baselines", "resnt"], "did you mean 'resnet'"),
        (["--task", "digits", "--optimizer", "adamax"], "unknown optimizer 'adamax'"),
        (["--task", "digits", "--lr", "-0.1"], "--lr must be a positive number"),
        (["--task", "digits", "--time-limit", "abc"], "--time-limit 'abc'"),
        (["--task", "digits", "--time-limit", "0s"], "--time-limit '0s'"),
        (["--task", "digits", "--time-limit", "-5m"], "--time-limit '-5m'"),
        (["--task", "digits", "--time-limit", "500steps"], "--time-limit '500steps'"),
    ],
)
def test_search_bad_input_is_one_line_exit_2(capsys, tmp_path, args, message):
    study = tmp_path / "s.db"
    code, out, err = invoke(capsys, "search", "einspace", *args, "--study", study)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error:") and message in err, err
    assert not study.exists()  # refused before anything was created


def test_bad_study_files_are_refused_and_untouched(capsys, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n")
    foreign = tmp_path / "other.db"
    con = sqlite3.connect(foreign)
    con.execute("create table customers (id integer, name text)")
    con.execute("insert into customers values (1, 'ada')")
    con.commit()
    con.close()
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"SQLite format 3\x00" + b"\x07" * 200)
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    before = {p: digest(p) for p in (text, foreign, corrupt, empty)}
    for path in (text, foreign, corrupt):
        code, _, err = invoke(capsys, "search", *SEARCH, "--trials", "1", "--study", path)
        assert code == 2 and err.count("\n") == 1 and err.startswith("error:"), err
    for path in (text, foreign, corrupt, empty, tmp_path / "missing.db", tmp_path):
        code, _, err = invoke(capsys, "show", path)
        assert code == 2 and err.count("\n") == 1 and err.startswith("error:"), (path, err)
    assert {p: digest(p) for p in before} == before
    assert not (tmp_path / "missing.db").exists()
    assert "of something else" in invoke(capsys, "show", foreign)[2]


def test_grammar_that_samples_nothing_is_refused(capsys, tmp_path):
    grammar = tmp_path / "seq.pcfg"
    grammar.write_text("start network\nnetwork : col2im\n")  # needs a sequence; digits gives images
    study = tmp_path / "s.db"
    code, _, err = invoke(capsys, "search", grammar, "--task", "digits", "--study", study, "--trials", "1")
    assert code == 2 and err.count("\n") == 1 and "no architecture of grammar 'seq'" in err, err
    assert not study.exists()
    code, _, err = invoke(capsys, "search", tmp_path / "nope.pcfg", "--task", "digits", "--study", study)
    assert code == 2 and "not found" in err


# --------------------------------------------------------------------- show
def _fake_study(path: Path, n: int = 8) -> None:
    """A study as a search writes it, without running one (no Ray)."""
    from archgram.grammar.model import load_grammar

    g = load_grammar("einspace")
    store = StudyStore(path, objectives=("score", "params"), meta={"task": "digits", "objectives": ["score", "params"]})
    for i in range(n):
        d: Derivation = g.sample((16, 1, 8, 8), seed=i)
        trial = store.start(d, strategy="evolution", origin="sample")
        if i % 4 == 3:
            store.finish(trial, {"status": "failed", "failure": "shape", "message": "bad shape"})
        else:
            store.finish(trial, {"status": "ok", "score": 0.1 * i, "metric": "accuracy", "params": 1000 * (n - i) ** 2,
                                 "flops": 1e6, "latency_ms": 0.5 + i})
    store.start(g.sample((16, 1, 8, 8), seed=99), strategy="evolution", origin="sample")  # left running


def test_show_prints_leaderboard_and_writes_plots(capsys, tmp_path):
    study = tmp_path / "runs" / "toy.db"
    _fake_study(study)
    before = digest(study)
    code, out, err = invoke(capsys, "show", study, "--top", "3")
    assert code == 0, err
    assert "top 3 by validation score" in out and "6 ok, 2 failed (shape 2)" in out and "1 running" in out
    assert "Pareto front" in out  # (table cells may be squeezed to the console width; --json below is exact)
    plots = tmp_path / "runs" / "toy_plots"
    assert (plots / "best_so_far.png").stat().st_size > 1000
    assert (plots / "pareto_params.png").stat().st_size > 1000
    assert digest(study) == before  # reading never writes (the running trial stays running)

    code, out, _ = invoke(capsys, "show", study, "--json", "--out", tmp_path / "p", "--top", "2")
    data = json.loads(out)
    assert code == 0 and data["status"]["ok"] == 6 and data["running"] == 1
    assert data["leaderboard"][0]["metric"] == "accuracy"
    assert [r["trial"] for r in data["leaderboard"]] == [6, 5]
    assert data["leaderboard"][0]["params"] == 4000 and data["leaderboard"][0]["hash"]
    assert data["pareto"]["params"] == [6]  # best score and fewest params
    assert len(data["plots"]) == 2 and all(Path(p).exists() for p in data["plots"])


# -------------------------------------------------------- a real, tiny search
#: a grammar of tiny conv nets, so a trial trains in well under a second
TINY = (Path(__file__).resolve().parents[1] / "data" / "tiny_conv.pcfg").read_text()


@pytest.mark.slow  # one Ray start: 35-60 s on a busy 2-core machine
def test_search_continues_to_total_then_does_nothing(tmp_path):
    """One Ray start. A study holding 2 finished trials and 1 a killed driver left
    RUNNING: ``--trials 4`` runs 2 more (the interrupted one is not counted), the
    same command again runs nothing, and show writes both plots."""
    from archgram.grammar.model import load_grammar

    grammar = tmp_path / "tiny.pcfg"
    grammar.write_text(TINY)
    study = tmp_path / "s.db"
    g = load_grammar(grammar)
    store = StudyStore(study, meta={"task": "digits", "input_shape": [16, 1, 8, 8], "objectives": ["score"],
                                    "protocol": PROTOCOL})
    ok = store.start(g.sample((16, 1, 8, 8), seed=1), strategy="evolution", origin="sample")
    store.finish(ok, {"status": "ok", "score": 0.25, "metric": "accuracy", "params": 40, "budget": "5steps", "steps": 5})
    bad = store.start(g.sample((16, 1, 8, 8), seed=2), strategy="evolution", origin="sample")
    store.finish(bad, {"status": "failed", "failure": "nan", "message": "loss is NaN"})
    store.start(g.sample((16, 1, 8, 8), seed=3), strategy="evolution", origin="sample")  # the killed one
    del store
    before = {r.number: (r.state, r.score) for r in report.open_study(study).records()}
    assert before == {0: ("COMPLETE", 0.25), 1: ("FAIL", None)}

    args = [grammar, "--task", "digits", "--budget", "5steps", "--batch-size", "16", "--trials", "4",
            "--workers", "2", "--study", study, "--no-reference"]  # 5 steps cannot train the reference
    run = archgram("search", *args, "--json")
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    data = json.loads(run.stdout)
    assert data["finished"] == 4 and not data["stopped"] and data["status"]["ok"] >= 2
    assert data["dashboard"] == f"optuna-dashboard sqlite:///{study.resolve()}"
    records = StudyStore(study).records()
    numbers = [r.number for r in records]
    assert len(numbers) == len(set(numbers)) == 4 and 2 not in numbers  # trial 2 was interrupted
    assert {r.number: (r.state, r.score) for r in records if r.number in before} == before
    assert all(r.attrs.get("hash") and r.attrs.get("strategy") == "evolution" for r in records)

    again = archgram("search", *args)  # total reached: nothing new, no Ray
    assert again.returncode == 0, again.stderr
    assert "nothing to run" in again.stdout and " of 4 trials" in again.stdout, again.stdout
    assert "archgram show" in again.stdout and "optuna-dashboard sqlite:///" in again.stdout
    assert [r.number for r in StudyStore(study).records()] == numbers

    shown = archgram("show", study)
    assert shown.returncode == 0, shown.stderr
    assert "1 interrupted" in shown.stdout and "failed (nan 1)" in shown.stdout
    assert (tmp_path / "s_plots" / "best_so_far.png").exists() and (tmp_path / "s_plots" / "pareto_params.png").exists()


def test_unreachable_address_is_refused_at_once(capsys, tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    study = tmp_path / "s.db"
    code, _, err = invoke(capsys, "search", *SEARCH, "--study", study, "--address", f"127.0.0.1:{port}")
    assert code == 2 and err.count("\n") == 1 and "no Ray cluster answers" in err, err
    assert not study.exists()
    code, _, err = invoke(capsys, "search", *SEARCH, "--study", study, "--address", "nonsense")
    assert code == 2 and "HOST:PORT" in err


def test_search_data_bad_input_is_one_line_exit_2(capsys, tmp_path):
    import numpy as np

    np.savez(tmp_path / "short.npz", x=np.zeros((5, 3), np.float32), y=np.zeros(4, np.int64))
    np.savez(tmp_path / "unseen.npz", x=np.random.default_rng(0).normal(size=(8, 3)), y=np.arange(8) % 2,
             x_val=np.zeros((2, 3)), y_val=np.array([0, 5]))
    (tmp_path / "t.csv").write_text("a,label\n1,0\n2,1\n")
    (tmp_path / "mine.py").write_text("class NotATask:\n    pass\n")
    study = tmp_path / "s.db"
    for args, message in (
        (["--data", tmp_path / "short.npz"], "x has 5 rows but y has 4"),
        (["--data", tmp_path / "unseen.npz"], "y_val holds label 5"),
        (["--data", tmp_path / "t.csv"], "needs --target"),
        (["--data", tmp_path / "nope.npz"], "no such file"),
        (["--data", tmp_path / "mine.py"], "unsupported file type '.py'"),
        (["--data", tmp_path / "short.npz", "--task-kind", "pictures"], "--task-kind 'pictures'"),
        (["--task", f"{tmp_path / 'mine.py'}:NotATask"], "not a Task subclass"),
        (["--task", f"{tmp_path / 'mine.py'}:Missing"], "defines no 'Missing'"),
    ):
        code, _, err = invoke(capsys, "search", "einspace", *args, "--study", study)
        assert code == 2 and err.count("\n") == 1 and err.startswith("error:") and message in err, (args, err)
        assert not study.exists()


def test_a_search_the_time_limit_ended_is_a_finished_run(capsys, tmp_path, monkeypatch):
    """The limit ends the run short of --trials by design: the summary says so,
    the best is exported, the exit code is 0 (not 130, not 'rerun to resume'),
    and the limit counts from the command's start."""
    import time

    from archgram import api
    from archgram.grammar.model import load_grammar
    from archgram.search.progress import Progress

    grammar = tmp_path / "tiny.pcfg"
    grammar.write_text(TINY)
    study = tmp_path / "s.db"
    seen = {}

    def fake_run(request, on_update=None, *, started=None):  # one finished trial, then the limit
        seen.update(config=request.config, started=started, now=time.monotonic())
        on_update(Progress(total=5))
        store = StudyStore(study, meta={"task": "digits", "input_shape": [16, 1, 8, 8], "objectives": ["score"],
                                        "protocol": PROTOCOL})
        trial = store.start(load_grammar(grammar).sample((16, 1, 8, 8), seed=1), strategy="random", origin="sample")
        store.finish(trial, {"status": "ok", "score": 0.5, "metric": "accuracy", "params": 40, "steps": 5})
        out = api.Study(store, str(study))
        out.stopped = "time limit 1m reached after 1 of 5 trials"
        return out

    monkeypatch.setattr(api, "run", fake_run)
    monkeypatch.setattr("archgram.cli.search._export_best", lambda study, console: seen.update(exported=study))
    args = ["search", grammar, "--task", "digits", "--budget", "5steps", "--batch-size", "16", "--trials", "5",
            "--study", study, "--no-reference", "--time-limit", "1m"]
    code, out, err = invoke(capsys, *args, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["stopped"] == "time limit 1m reached after 1 of 5 trials" and data["time_limit"] == "1m"
    assert data["finished"] == 1 and data["leaderboard"][0]["score"] == 0.5
    assert seen["config"].time_limit == "1m" and seen["started"] <= seen["now"] and seen["exported"] == str(study)
    code, out, err = invoke(capsys, *args)
    assert code == 0, err
    assert "stopped: time limit 1m reached after 1 of 5 trials; rerun the same command" in out, out
    assert out.splitlines()[0].endswith("| time limit 1m: 5 trials"), out  # the header
