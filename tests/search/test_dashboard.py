"""optuna-dashboard opens an archgram study (its WSGI app, no server needed)."""
from __future__ import annotations

import io
import json
import sys

import pytest

import archgram
from archgram.search.store import StudyStore

optuna_dashboard = pytest.importorskip("optuna_dashboard")


def get(app, path: str):
    status = {}

    def start_response(code, headers, exc_info=None):
        status["code"] = code

    env = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "SERVER_NAME": "localhost", "SERVER_PORT": "80",
           "wsgi.input": io.BytesIO(), "wsgi.errors": sys.stderr, "wsgi.url_scheme": "http", "QUERY_STRING": ""}
    body = b"".join(app(env, start_response))
    assert status["code"].startswith("200"), (path, status, body[:200])
    return json.loads(body)


def test_optuna_dashboard_reads_trials_values_and_derivations(tmp_path):
    g = archgram.load_grammar("einspace")
    store = StudyStore(tmp_path / "s.db", objectives=("score", "params"), meta={"task": "digits"})
    for i in range(3):
        trial = store.start(g.sample((2, 1, 8, 8), seed=i), strategy="random")
        store.finish(trial, {"status": "ok", "score": 0.1 * i, "params": 100 * i + 1})
    app = optuna_dashboard.wsgi(store.url)
    (summary,) = get(app, "/api/studies")["study_summaries"]
    assert summary["study_name"] == "archgram" and summary["directions"] == ["maximize", "minimize"]
    study = get(app, f"/api/studies/{summary['study_id']}")
    assert [t["values"] for t in study["trials"]] == [[0.0, 1.0], [0.1, 101.0], [0.2, 201.0]]
    assert {"derivation", "hash"} <= {a["key"] for a in study["trials"][0]["user_attrs"]}
    assert study["best_trials"]  # the Pareto front
