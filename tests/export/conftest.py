"""Helpers for the export tests: a small study made without Ray, and a fresh
interpreter in which archgram cannot be imported."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import archgram
from archgram.search.evaluator import evaluate
from archgram.search.outcomes import RESULT_KEYS
from archgram.search.store import StudyStore
from archgram.search.weights import weights_file
from archgram.tasks import get_task

SITE = os.path.dirname(os.path.dirname(torch.__file__))


def make_study(path: Path, grammar: str = "einspace", task: str = "digits", seeds=(0, 1), budget: str = "4steps",
               batch_size: int = 8, keep_weights: bool = True) -> StudyStore:
    """A study of ``len(seeds)`` trials evaluated in this process (as Ray workers do)."""
    g, t = archgram.load_grammar(grammar), get_task(task)
    shape = t.body_input_shape(batch_size)
    store = StudyStore(path, meta={"task": t.name, "input_shape": list(shape), "grammar": g.name,
                                   "grammar_sha256": g.sha256[:16], "objectives": ["score"]})
    for seed in seeds:
        d = g.sample(shape, seed=seed, target=t.output_target(batch_size))
        trial = store.start(d, strategy="random", origin="sample")
        w = weights_file(store.url, trial.number) if keep_weights else None
        result = evaluate(d, t, budget, seed=seed, batch_size=batch_size, weights=w).to_dict()
        store.finish(trial, {k: v for k, v in result.items() if k in RESULT_KEYS})
    return store


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("study") / "digits.db"
    make_study(path)
    return path


def run_fresh(folder: Path, code: str, timeout: float = 180) -> str:
    """Run ``code`` with cwd ``folder`` in a new interpreter that sees torch and
    safetensors but not archgram (``-S``: no site .pth files, so no editable
    install; the repository is not on the path). Fails if archgram imports."""
    prelude = (
        f"import sys; sys.path.append({SITE!r})\n"
        "try:\n    import archgram\nexcept ImportError:\n    pass\n"
        "else:\n    raise SystemExit('archgram is importable in the fresh interpreter')\n"
        "import torch; torch.set_num_threads(1)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    proc = subprocess.run([sys.executable, "-S", "-c", prelude + code], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout
