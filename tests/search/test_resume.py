"""A killed search resumes with nothing lost or repeated.

The slow test SIGKILLs a real ``archgram search`` (and every Ray process it
started) mid-run and reruns the same command to completion. The fast one checks
the same accounting on a study a dead driver left behind, without Ray.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from archgram.search import report
from archgram.search.store import INTERRUPTED, PROTOCOL, PROTOCOL_KEY, StudyStore

TINY = (Path(__file__).resolve().parents[1] / "data" / "tiny_conv.pcfg").read_text()
SHAPE = (16, 1, 8, 8)


def _cmd(grammar: Path, study: Path, trials: int, budget: str) -> list[str]:
    return [sys.executable, "-m", "archgram.cli", "search", str(grammar), "--task", "digits", "--strategy", "evolution",
            "--trials", str(trials), "--workers", "1", "--budget", budget, "--batch-size", "16", "--study", str(study),
            "--no-reference"]  # a 5-step recipe cannot train the reference; these tests are about resuming


def _finished(study: Path) -> int:
    """Finished trials, read through a read-only connection (the search owns the file)."""
    if not study.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{study}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("select count(*) from trials where state in ('COMPLETE','FAIL','PRUNED')").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:  # tables not created yet
        return 0


def _snapshot(study: Path) -> dict[int, tuple]:
    return {r.number: (r.state, r.score, r.attrs.get("hash"), r.attrs.get("params"))
            for r in report.open_study(study).records()}


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the whole process group, again while any member is left (a Ray
    worker being forked at the first signal can outlive it)."""
    deadline = time.monotonic() + 20
    while True:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        time.sleep(0.5)
        if not _group_alive(proc.pid) or time.monotonic() > deadline:
            break
    proc.wait(timeout=30)


def _group_alive(pgid: int) -> list[str]:
    """Live processes of the group (zombies are dead, just not reaped by a container's init)."""
    out = subprocess.run(["ps", "-o", "pid=,stat=,cmd=", "-g", str(pgid)], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.split() and not line.split()[1].startswith("Z")]


def test_killed_driver_leftovers_are_not_counted(tmp_path):
    """Fast, no Ray: a RUNNING trial left by a dead driver is marked interrupted on
    the next run, not counted; a study at its total runs nothing and keeps its trials."""
    from archgram import cli
    from archgram.grammar.model import load_grammar

    grammar = tmp_path / "tiny.pcfg"
    grammar.write_text(TINY)
    study = tmp_path / "s.db"
    g = load_grammar(grammar)
    store = StudyStore(study, meta={"task": "digits", "input_shape": list(SHAPE), "objectives": ["score"],
                                    PROTOCOL_KEY: PROTOCOL})  # written by this version: validation scores
    for i in range(3):
        trial = store.start(g.sample(SHAPE, seed=i), strategy="evolution", origin="sample")
        if i != 1:
            store.finish(trial, {"status": "ok", "score": 0.1 * (i + 1), "params": 10 + i, "budget": "5steps", "steps": 5})
    store.start(g.sample(SHAPE, seed=9), strategy="evolution", origin="sample")
    del store  # the "driver" dies with trials 1 and 3 RUNNING
    before = _snapshot(study)
    assert sorted(before) == [0, 2]

    code = cli.run(_cmd(grammar, study, 2, "5steps")[3:])
    assert code == 0
    store = StudyStore(study)
    assert _snapshot(study) == before
    interrupted = [t.number for t in store.study.get_trials() if t.user_attrs.get("failure") == INTERRUPTED]
    assert interrupted == [1, 3]


@pytest.mark.slow
def test_sigkill_mid_search_then_resume_loses_and_repeats_nothing(tmp_path):
    grammar = tmp_path / "tiny.pcfg"
    grammar.write_text(TINY)
    study = tmp_path / "runs" / "study.db"
    total = 5
    cmd = _cmd(grammar, study, total, "1.5s")  # seconds-bound trials, so one is running when we kill
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while _finished(study) < 2:
            assert proc.poll() is None, (tmp_path / "first.log").read_text()
            assert time.monotonic() < deadline, "the search finished no 2 trials in time"
            time.sleep(0.2)
    finally:
        _kill_group(proc)  # SIGKILL: the driver and the Ray processes it started
        log.close()
    leftovers = _group_alive(proc.pid)
    assert not leftovers, leftovers
    before = _snapshot(study)
    assert 2 <= len(before) < total
    con = sqlite3.connect(f"file:{study}?mode=ro", uri=True)
    running = [n for (n,) in con.execute("select number from trials where state = 'RUNNING'")]
    con.close()

    second = subprocess.run(cmd, capture_output=True, text=True, timeout=400, start_new_session=True)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Traceback" not in second.stderr
    after = _snapshot(study)
    assert {n: after[n] for n in before} == before  # nothing lost or changed
    assert len(after) == total  # the total counts finished trials only
    store = StudyStore(study)
    numbers = [r.number for r in store.records()]
    assert len(numbers) == len(set(numbers)) == total  # every trial finished exactly once
    for trial in store.study.get_trials():
        if trial.number in running:  # the killed trial: marked, not counted, run again as a new one
            assert trial.state.name == "FAIL" and trial.user_attrs.get("failure") == INTERRUPTED
            assert trial.number not in numbers
    assert not any(t.state.name == "RUNNING" for t in store.study.get_trials())
