"""archgram.export / `archgram export`: the folder, its check in a fresh
interpreter without archgram, and the refusals."""
from __future__ import annotations

import json
import re
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

import archgram
from archgram.cli import run
from archgram.export import ExportError
from archgram.search.evaluator import build_model
from archgram.search.report import open_study
from archgram.search.weights import weights_file
from archgram.tasks import get_task
from tests.export.conftest import make_study, run_fresh


def _search_model(study, number: int):
    """The trial's model as the search trained it: archgram's build + the kept weights."""
    store = open_study(study)
    record = next(r for r in store.records() if r.number == number)
    task = get_task(store.meta["task"])
    model, _, _ = build_model(record.derivation, task, store.meta["input_shape"][0])
    model.load_state_dict(load_file(weights_file(store.url, number)))
    return model.eval(), task


@pytest.fixture(scope="module")
def exported(study, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports") / "best"
    return archgram.export(study, out), out


def test_export_writes_the_folder_and_card(exported, study):
    result, out = exported
    best = open_study(study).leaderboard(1)[0]
    assert result.trial == best.number and result.weights_source == "study"
    for name in ("model.py", "weights.safetensors", "model.pt2", "derivation.json", "README.md"):
        assert (out / name).is_file(), name
    assert result.max_abs_diff == 0.0
    card = (out / "README.md").read_text()
    assert best.attrs["hash"] in card and f"{best.score:.4f}" in card and "latency" in card
    assert f"{result.params:,}" in card and "from model import load" in card
    assert archgram.Derivation.from_json((out / "derivation.json").read_text()).hash() == best.attrs["hash"]
    source = (out / "model.py").read_text()
    assert not re.search(r"^\s*(import archgram|from archgram)", source, re.M)
    assert "Vendored from archgram" in source


def test_export_equals_search_model_in_fresh_interpreter(exported, study, tmp_path):
    """The exported model.py + weights, imported where archgram cannot be, gives the
    outputs of archgram's model with the weights the search kept."""
    result, out = exported
    model, task = _search_model(study, result.trial)
    x = task.data(0).x_val[:8]
    with torch.no_grad():
        y = model(x)
    save_file({"x": x, "y": y}, str(tmp_path / "io.safetensors"))
    code = (
        "from safetensors.torch import load_file\n"
        "from model import load\n"
        f"io = load_file({str(tmp_path / 'io.safetensors')!r})\n"
        "with torch.no_grad():\n    got = load()(io['x'])\n"
        "prog = torch.export.load('model.pt2').module()\n"
        "print((got - io['y']).abs().max().item(), (prog(io['x']) - io['y']).abs().max().item())\n"
    )
    diff, diff_pt2 = map(float, run_fresh(out, code).split())
    assert diff == 0.0
    assert diff_pt2 < 1e-5


def test_export_refuses_existing_folder_then_force_replaces(study, tmp_path):
    out = tmp_path / "e"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="already exists; pass --force"):
        archgram.export(study, out, trial=0, pt2=False)
    result = archgram.export(study, out, trial=0, force=True, pt2=False)
    assert (out / "model.py").is_file() and (out / "notes.txt").read_text() == "mine"
    assert result.notes["model.pt2"] == "not requested"


def test_a_generated_model_that_does_not_import_leaves_nothing_behind(study, tmp_path, monkeypatch):
    from archgram.export import exporter

    monkeypatch.setattr(exporter, "model_source", lambda *a: "raise ImportError('no torch here')\n")
    with pytest.raises(ExportError, match="the generated model.py does not import: ImportError: no torch here"):
        archgram.export(study, tmp_path / "e", trial=0, pt2=False)
    assert not (tmp_path / "e").exists()
    assert not [name for name in sys.modules if name.startswith("archgram_export_")]


def test_export_bad_trials(tmp_path):
    path = tmp_path / "s.db"
    store = make_study(path, seeds=(0,))
    d = store.records()[0].derivation
    failed = store.start(d)
    store.finish(failed, {"status": "failed", "failure": "shape", "message": "does not fit"})
    pruned = store.start(d)
    store.finish(pruned, {"status": "pruned"})
    with pytest.raises(ExportError, match="trial 1 failed \\(shape: does not fit\\)"):
        archgram.export(path, tmp_path / "a", trial=1)
    with pytest.raises(ExportError, match="trial 2 was stopped early"):
        archgram.export(path, tmp_path / "a", trial=2)
    with pytest.raises(ExportError, match="no finished trial 9 \\(trials 0..2"):
        archgram.export(path, tmp_path / "a", trial=9)
    with pytest.raises(ExportError, match="--trial N or --best, not both"):
        archgram.export(path, tmp_path / "a", trial=0, best=True)
    assert not (tmp_path / "a").exists()


def test_export_without_kept_weights_retrains_the_same_model(tmp_path):
    """Fallback: with no weight file, the trial is retrained; on CPU under a step
    budget that reproduces the search's weights exactly."""
    path = tmp_path / "s.db"
    store = make_study(path, seeds=(2,), budget="3steps")
    kept = load_file(weights_file(store.url, 0))
    (tmp_path / "s.weights" / "0.safetensors").unlink()
    result = archgram.export(path, tmp_path / "out", pt2=False)
    assert result.weights_source == "retrained"
    assert "retrained (3steps, seed 2)" in (tmp_path / "out" / "README.md").read_text()
    model, _, _ = build_model(store.records()[0].derivation, get_task("digits"), 8)
    model.load_state_dict(kept)
    exported = load_file(str(tmp_path / "out" / "weights.safetensors"))
    assert sorted(t.sum().item() for t in exported.values()) == sorted(t.sum().item() for t in kept.values())


def test_cli_export(study, tmp_path, capsys):
    out = tmp_path / "cli"
    assert run(["export", str(study), "--out", str(out), "--no-pt2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["out"] == str(out) and "model.py" in data["files"] and data["weights_source"] == "study"
    assert run(["export", str(study), "--out", str(out)]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert run(["export", str(tmp_path / "none.db")]) == 2
    assert "no study file" in capsys.readouterr().err
    assert run(["export", str(study), "--trial", "5", "--out", str(tmp_path / "x")]) == 2
    assert "no finished trial 5" in capsys.readouterr().err


def test_search_end_exports_the_best(study, tmp_path, monkeypatch):
    """`archgram search` ends by exporting the best trial beside the study and
    replaces its own earlier export (not a foreign folder)."""
    import shutil

    from archgram.cli import console
    from archgram.cli.search import _export_best

    copy = tmp_path / "digits.db"
    shutil.copy(study, copy)
    shutil.copytree(study.with_name("digits.weights"), tmp_path / "digits.weights")
    first = _export_best(str(copy), console)
    assert first is not None and first.out == tmp_path / "digits-best"
    again = _export_best(str(copy), console)  # its own export: replaced
    assert again is not None and again.out == first.out
    with pytest.raises(ExportError):  # the python API never overwrites unasked
        archgram.export(copy, first.out)


@pytest.mark.slow
def test_search_command_exports_the_best_through_ray(tmp_path, capsys):
    """The main job's wiring: Ray workers keep each trial's weights beside the
    study and the finished search exports the best trial from them."""
    db = tmp_path / "runs" / "d.db"
    assert run(["search", "--trials", "2", "--budget", "20steps", "--study", str(db)]) == 0
    out = capsys.readouterr().out
    assert "exported trial" in out and str(tmp_path / "runs" / "d-best") in out
    best = open_study(db).leaderboard(1)[0]
    assert (tmp_path / "runs" / "d.weights" / f"{best.number}.safetensors").is_file()
    assert "trained by the search" in (tmp_path / "runs" / "d-best" / "README.md").read_text()
    assert run(["search", "--trials", "2", "--study", str(db)]) == 0  # nothing to run: export replaced, no error
