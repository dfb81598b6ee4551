"""Several drivers on one study: claims share the study's total, never run an
architecture the study holds, and a live driver's running trials are not taken
for interrupted ones."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from archgram.grammar.model import Grammar
from archgram.search import drivers
from archgram.search.store import DUPLICATE, FULL, StudyStore

G = Grammar.from_text("net : linear(out=4|8|12|16|20|24|28|32)\n")


def arch(seed: int):
    return G.sample((2, 3, 8), seed=seed)


def distinct(n: int) -> list:
    out, seen = [], set()
    seed = 0
    while len(out) < n:
        d = arch(seed)
        if d.hash() not in seen:
            seen.add(d.hash())
            out.append(d)
        seed += 1
    return out


def test_two_stores_on_one_study_share_its_total_and_refuse_repeats(tmp_path):
    a, b = StudyStore(tmp_path / "s.db"), StudyStore(tmp_path / "s.db")
    d0, d1, d2 = distinct(3)
    me = {"driver": drivers.this_driver()}
    t0 = a.claim(d0, total=2, **me)
    assert b.claim(d0, total=2, **me) == DUPLICATE  # running in the other driver
    t1 = b.claim(d1, total=2, **me)
    assert a.claim(d2, total=2, **me) == FULL  # two live trials hold the total
    a.finish(t0, {"status": "ok", "score": 0.5})
    b.finish(t1, {"status": "failed", "failure": "nan"})
    assert b.claim(d1, total=3, **me) == DUPLICATE  # evaluated (and failed) already
    records = StudyStore(tmp_path / "s.db").records()
    assert [r.derivation.hash() for r in records] == [d0.hash(), d1.hash()]  # refused claims count for nothing
    assert b.hashes() == {d0.hash(), d1.hash()}


def test_the_earlier_trial_wins_a_race_for_one_architecture(tmp_path):
    a, b = StudyStore(tmp_path / "s.db"), StudyStore(tmp_path / "s.db")
    d = arch(0)
    first = a.start(d, driver=drivers.this_driver())  # written, not yet checked
    assert b.claim(d, total=5, driver=drivers.this_driver()) == DUPLICATE
    assert first.number == 0


def test_open_keeps_a_live_drivers_running_trials_and_recovers_dead_ones(tmp_path):
    store = StudyStore(tmp_path / "s.db")
    d0, d1, d2, d3 = distinct(4)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_id = f"{drivers.HOST}:{dead.stdout.strip()}:1"
    store.start(d0, driver=drivers.this_driver())                     # this process: alive
    store.start(d1, driver=dead_id)                                   # exited process: dead
    store.start(d2)                                                   # no driver id (older study): dead
    store.start(d3, driver="elsewhere:12:5", heartbeat=0.0)           # another host, stale heartbeat
    again = StudyStore(tmp_path / "s.db")
    states = {t.number: (t.state.name, t.user_attrs.get("failure")) for t in again.study.get_trials()}
    assert states == {0: ("RUNNING", None), 1: ("FAIL", "interrupted"), 2: ("FAIL", "interrupted"),
                      3: ("FAIL", "interrupted")}


def test_liveness_reads_pid_start_time_and_heartbeats():
    me = drivers.this_driver()
    host, pid, started = me.rsplit(":", 2)
    assert drivers.alive(me, None)
    assert not drivers.alive(f"{host}:{pid}:{int(started) + 1}", None)  # pid reused by another process
    assert drivers.alive("other-host:1:1", heartbeat=100.0, now=100.0 + drivers.STALE_S - 1)
    assert not drivers.alive("other-host:1:1", heartbeat=100.0, now=100.0 + drivers.STALE_S + 1)
    assert not drivers.alive(None, None) and not drivers.alive("garbage", 1.0)


TINY = "start net\nnet : conv2d(out=2|4|6|8|10|12|14|16, k=1|3) relu\n"


@pytest.mark.slow  # two Ray drivers at once: about a minute on 2 shared cores
def test_two_search_processes_on_one_study_finish_its_total_without_repeats(tmp_path):
    """Issue 17 item 5, with real processes: two ``archgram search --trials 8`` on
    one SQLite study end with 8 trials, every architecture once."""
    grammar = tmp_path / "tiny.pcfg"
    grammar.write_text(TINY)
    study = tmp_path / "s.db"
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    cmd = [sys.executable, "-m", "archgram", "search", str(grammar), "--task", "digits", "--budget", "3steps",
           "--batch-size", "16", "--trials", "8", "--workers", "1", "--strategy", "random", "--study", str(study),
           "--no-export", "--no-reference", "--json"]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    records = StudyStore(study).records()
    hashes = [r.attrs["hash"] for r in records]
    assert len(records) == 8 and len(set(hashes)) == 8
    drivers_seen = {r.attrs["driver"] for r in records}
    assert len(drivers_seen) == 2, drivers_seen  # both processes evaluated trials
    assert all(json.loads(o[0])["finished"] == 8 for o in outs)
