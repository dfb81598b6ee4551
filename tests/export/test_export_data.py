"""Data tasks export: the stem's train-only normalisation and the regression
head's scale are written into model.py, so the export takes raw inputs (uint8
pixels) in an interpreter without archgram; and two commands take a file on
disk to an exported model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import archgram
from archgram.search.evaluator import build_model, evaluate
from archgram.search.outcomes import RESULT_KEYS
from archgram.search.store import StudyStore
from archgram.search.weights import weights_file
from archgram.tasks.reference import record, resolve
from tests.export.conftest import run_fresh

GRAMMAR = "start net\nnet : conv2d(out=4|8, k=3) relu\n"


def _study(tmp_path: Path, path: Path, options: dict) -> tuple[Path, object]:
    grammar = tmp_path / "tiny.pcfg"
    grammar.write_text(GRAMMAR)
    g, task = archgram.load_grammar(grammar), resolve(f"data:{path}", options)
    shape = task.body_input_shape(8)
    study = tmp_path / "s.db"
    store = StudyStore(study, meta={"task": task.name, "input_shape": list(shape), "grammar": g.name,
                                    "task_ref": record(task, f"data:{path}", options), "objectives": ["score"]})
    d = g.sample(shape, seed=0)
    trial = store.start(d, strategy="random", origin="sample")
    result = evaluate(d, task, "4steps", seed=0, batch_size=8, weights=weights_file(store.url, trial.number))
    store.finish(trial, {k: v for k, v in result.to_dict().items() if k in RESULT_KEYS})
    return study, task


def test_export_checks_model_py_on_raw_uint8_inputs(tmp_path):
    """The exporter writes nothing unless model.py, imported on its own, reproduces
    the search's model on a validation batch: here raw uint8 pixels."""
    x = np.random.default_rng(0).integers(0, 256, (60, 6, 6, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(60) % 3)
    study, task = _study(tmp_path, tmp_path / "d.npz", {})
    result = archgram.export(study, tmp_path / "out", pt2=False, onnx=False)
    assert result.max_abs_diff < 1e-6 and task.data(0).x_val.dtype == torch.uint8
    text = (tmp_path / "out" / "model.py").read_text()
    assert "class Standardize" in text and "import archgram" not in text
    assert f"{task.x_mean[0]!r}" in text  # the training split's statistics, as literals


@pytest.mark.slow  # a fresh interpreter per case: ~4 s each on a busy machine
@pytest.mark.parametrize("regression", [False, True])
def test_exported_data_model_takes_raw_inputs_without_archgram(tmp_path, regression):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (60, 6, 6, 3), dtype=np.uint8)  # channels-last uint8 pixels
    y = rng.normal(50, 10, 60).astype(np.float32) if regression else np.arange(60) % 3
    np.savez(tmp_path / "d.npz", x=x, y=y)
    study, task = _study(tmp_path, tmp_path / "d.npz", {})
    result = archgram.export(study, tmp_path / "out", pt2=False, onnx=False)
    model = build_model(StudyStore(study).records()[0].derivation, task, 8)[0]
    from safetensors.torch import load_file

    model.load_state_dict(load_file(weights_file(StudyStore(study).url, result.trial)))
    raw = task.data(0).x_val[:8]
    assert raw.dtype == torch.uint8
    with torch.no_grad():
        expected = model.eval()(raw)
    save_file({"x": raw.contiguous(), "y": expected}, str(tmp_path / "io.safetensors"))
    code = (
        "from safetensors.torch import load_file\nfrom model import load\n"
        f"io = load_file({str(tmp_path / 'io.safetensors')!r})\n"
        "with torch.no_grad():\n    got = load()(io['x'])\n"
        "print((got - io['y']).abs().max().item())\n"
    )
    assert float(run_fresh(tmp_path / "out", code)) < 1e-6
    if regression:  # predictions in the data's units, not standardised ones
        assert abs(float(expected.mean()) - 50) < 25


def test_export_refuses_a_changed_data_file(tmp_path):
    x = np.random.default_rng(0).normal(size=(40, 1, 5, 5)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(40) % 2)
    study, _ = _study(tmp_path, tmp_path / "d.npz", {"kind": "image"})
    np.savez(tmp_path / "d.npz", x=x[:30], y=np.arange(30) % 2)
    with pytest.raises(archgram.ArchgramError, match=r"x shape \(40, 1, 5, 5\) -> \(30, 1, 5, 5\)"):
        archgram.export(study, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # one Ray start and a short search: about a minute on 2 shared cores
def test_two_commands_from_a_csv_to_an_export(tmp_path):
    rng = np.random.default_rng(0)
    import pandas as pd

    x = rng.normal(size=(300, 4))
    pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "d": x[:, 3],
                  "kind": np.where(x[:, 0] + x[:, 1] > 0, "up", "down")}).to_csv(tmp_path / "t.csv", index=False)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    search = subprocess.run([sys.executable, "-m", "archgram", "search", "mixers", "--data", "t.csv", "--target",
                             "kind", "--trials", "2", "--workers", "1", "--budget", "20steps", "--no-export", "--json"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert search.returncode == 0, search.stderr[-2000:]
    assert json.loads(search.stdout)["finished"] == 2
    export = subprocess.run([sys.executable, "-m", "archgram", "export", "runs/t.db", "--out", "best"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert export.returncode == 0, export.stderr[-2000:]
    out = run_fresh(tmp_path / "best", "from model import load, INPUT_SHAPE\n"
                                       "print(tuple(load()(torch.randn(INPUT_SHAPE)).shape))\n")
    assert out.strip() == "(32, 2)"
