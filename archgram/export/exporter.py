"""Export one trial of a study: model.py, weights, torch.export and ONNX
programs, the derivation and a model card, checked before anything is written.

The folder is assembled in a temporary sibling and moved into place only after
model.py, imported on its own, reproduced the search's model output on a
validation batch: a failed export leaves no half-written folder behind.
"""
from __future__ import annotations

import datetime
import importlib.util
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import archgram
from archgram.errors import ExportError
from archgram.export.codegen import build_recorded, generate, map_key

#: Files an export writes (model.pt2 / model.onnx only when they succeed).
FILES = ("model.py", "weights.safetensors", "model.pt2", "model.onnx", "derivation.json", "README.md")
#: Exported outputs must match the search's model this closely (they are
#: computed by the same code from the same weights: normally bit for bit).
TOLERANCE = 1e-5


@dataclass
class ExportResult:
    """What ``export`` wrote and how it checked out."""

    out: Path
    trial: int | None
    score: float | None
    metric: str
    files: list[str]
    notes: dict[str, str] = field(default_factory=dict)  # file -> why it is missing / how it was made
    weights_source: str = "study"  # 'study' (kept by the search) or 'retrained'
    max_abs_diff: float = 0.0
    params: int = 0
    latency_ms: float | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "trial": self.trial, "score": self.score, "metric": self.metric,
                "files": self.files, "notes": self.notes, "weights_source": self.weights_source,
                "max_abs_diff": self.max_abs_diff, "params": self.params, "latency_ms": self.latency_ms,
                "seconds": self.seconds}


# ------------------------------------------------------------------ choose
def _choose(store, trial: int | None, best: bool):
    records = store.records()
    if trial is not None and best:
        raise ExportError("give --trial N or --best, not both")
    if trial is None:
        board = store.leaderboard(1)
        if not board:
            counts = {s: sum(r.state == s for r in records) for s in ("FAIL", "PRUNED")}
            raise ExportError(f"the study holds no successful trial to export ({len(records)} finished: "
                              f"{counts['FAIL']} failed, {counts['PRUNED']} pruned)")
        return board[0]
    match = next((r for r in records if r.number == trial), None)
    if match is None:
        numbers = sorted(r.number for r in records)
        span = f"trials {numbers[0]}..{numbers[-1]}" if numbers else "no finished trials"
        raise ExportError(f"the study has no finished trial {trial} ({span}; `archgram show STUDY` lists them)")
    if match.state == "FAIL":
        why = match.attrs.get("failure") or "error"
        msg = str(match.attrs.get("message") or "").splitlines()[0][:160] if match.attrs.get("message") else ""
        raise ExportError(f"trial {trial} failed ({why}{': ' + msg if msg else ''}); only successful trials can "
                          "be exported (--best picks the top one)")
    if match.state == "PRUNED":
        raise ExportError(f"trial {trial} was stopped early by the scheduler and has no trained model to export; "
                          "pick a completed trial (--best picks the top one)")
    if match.derivation is None:
        raise ExportError(f"trial {trial} has no readable derivation in the study")
    return match


def _prepare_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out}: exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not force:
        raise ExportError(f"--out {out}: already exists; pass --force to overwrite its export files, "
                          "or choose another directory")


# ------------------------------------------------------------------ weights
def _study_weights(store, record, model: nn.Module) -> str | None:
    """Load the weights the search kept for this trial; None if there are none."""
    from archgram.search.weights import load_weights, read_metadata, weights_file

    path = weights_file(store.url, record.number)
    if path is None or not Path(path).is_file():
        return None
    meta = read_metadata(path)
    if meta.get("hash") and meta["hash"] != record.attrs.get("hash"):
        return None  # a file from another study that used this name
    state = load_weights(path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ExportError(f"the kept weights {path} do not fit trial {record.number}'s model: "
                          f"{str(exc).splitlines()[0]}") from None
    return path


def _retrain(record, task, batch_size: int, model: nn.Module, meta: dict[str, Any]) -> str:
    """Fallback: train the trial again (deterministic on CPU for step budgets only),
    with the study's optimizer settings and train options."""
    from archgram.search.budget import Budget
    from archgram.search.evaluator import evaluate
    from archgram.search.training.options import training_settings
    from archgram.search.weights import load_weights

    attrs = record.attrs
    budget = attrs.get("budget")
    steps = attrs.get("steps")
    if budget is None or Budget.parse(budget).seconds is not None:  # time budgets do not replay
        if not steps:
            raise ExportError(f"trial {record.number} kept no weights and its training length is unknown; "
                              "cannot retrain it")
        budget = f"{int(steps)}steps"
    seed = int(attrs.get("seed", record.number))
    with tempfile.TemporaryDirectory(prefix="archgram-retrain-") as tmp:
        path = str(Path(tmp) / "w.safetensors")
        result = evaluate(record.derivation, task, Budget.parse(budget), seed=seed, batch_size=batch_size,
                          **training_settings(meta.get("training", {})),
                          train_options=meta.get("train_options") or None, weights=path)
        if not result.ok:
            raise ExportError(f"retraining trial {record.number} failed: {result.message}")
        model.load_state_dict(load_weights(path), strict=True)
    note = (f"; the trial started from its parent's trained weights ({attrs['inherited']} tensors), so this model "
            "trained only the trial's own steps from the initialisation" if attrs.get("inherited") else "")
    return (f"retrained ({budget}, seed {seed}): the search kept no weights for this trial; score "
            f"{result.score:.4f}{note}")


# ------------------------------------------------------------------ writing
def _sort_imports(lines: list[str]) -> list[str]:
    plain: set[str] = set()
    froms: dict[str, set[str]] = {}
    for line in lines:
        if line.startswith("from "):
            mod, names = line[5:].split(" import ", 1)
            froms.setdefault(mod, set()).update(n.strip() for n in names.split(","))
        else:
            plain.add(line)
    std = sys.stdlib_module_names

    def group(mod: str) -> int:
        return 0 if mod.split(".")[0] in std else 1

    out: list[str] = []
    for g in (0, 1):
        chunk = sorted([p for p in plain if group(p.split()[1]) == g], key=lambda p: p.split()[1])
        chunk += [f"from {m} import {', '.join(sorted(ns))}" for m, ns in sorted(froms.items()) if group(m) == g]
        if chunk:
            out += sorted(chunk, key=lambda s: (s.split()[1], s.startswith("from"))) + [""]
    return out


LOAD = '''

def load(weights: str | None = None, device: str = "cpu") -> Model:
    """Model() with the trained weights (weights.safetensors beside this file), in eval mode."""
    import os

    from safetensors.torch import load_file

    path = weights or os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights.safetensors")
    model = Model()
    model.load_state_dict(load_file(path, device=device))
    return model.to(device).eval()
'''


def model_source(gen, header: str, input_shape, input_dtype: str) -> str:
    banner = f"# {'-' * 68}\n# Vendored from archgram {archgram.__version__}: the ops above, and what they use.\n# {'-' * 68}\n"
    return (
        f'"""{header}"""\n'
        "from __future__ import annotations\n\n"
        + "\n".join(_sort_imports(gen.imports))
        + f"\n#: The input the network was typed for (the batch size is part of it).\nINPUT_SHAPE = {tuple(input_shape)!r}\n"
        + f"INPUT_DTYPE = torch.{input_dtype}\n\n\n"
        + gen.network
        + LOAD
        + "\n\n"
        + banner
        + gen.vendored
    )


def _import_generated(path: Path):
    """The generated model.py, imported on its own under a fresh name (not kept)."""
    from archgram.tasks.reference import import_file

    try:
        return import_file(path, f"archgram_export_{uuid.uuid4().hex[:12]}", keep=False)
    except Exception as exc:
        raise ExportError(f"the generated model.py does not import: {type(exc).__name__}: {exc}") from exc


def _latency(model: nn.Module, x: torch.Tensor, repeats: int = 10, seconds: float = 2.0) -> tuple[float, int]:
    """Median forward time (ms) and the number of timed calls: up to ``repeats``,
    fewer (at least 3) for a model slower than ``seconds`` in all."""
    times: list[float] = []
    with torch.no_grad():
        model(x)  # warm-up
        start = time.perf_counter()
        while len(times) < repeats and (len(times) < 3 or time.perf_counter() - start < seconds):
            t = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), len(times)


def _pt2(model: nn.Module, x: torch.Tensor, expected: torch.Tensor, path: Path) -> str | None:
    try:
        program = torch.export.export(model, (x,))
        torch.export.save(program, str(path))
        again = torch.export.load(str(path)).module()(x)
    except Exception as exc:  # noqa: BLE001 - reported in the card, not fatal
        path.unlink(missing_ok=True)
        return f"torch.export failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
    diff = (again - expected).abs().max().item() if again.numel() else 0.0
    if not diff <= 1e-4:
        path.unlink(missing_ok=True)
        return f"torch.export program disagreed with the model (max |diff| {diff:.2e}); not written"
    return None


def _onnx(model: nn.Module, x: torch.Tensor, path: Path) -> str | None:
    if importlib.util.find_spec("onnx") is None:
        return "not written: install onnx (and onnxscript) to get model.onnx"
    dynamo = importlib.util.find_spec("onnxscript") is not None
    try:
        torch.onnx.export(model, (x,), str(path), dynamo=dynamo, input_names=["x"], output_names=["y"])
    except Exception as exc:  # noqa: BLE001 - some ops have no ONNX form
        path.unlink(missing_ok=True)
        return f"ONNX export failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
    return None if path.exists() else "ONNX export wrote no file"


# ------------------------------------------------------------------ export
def export(study: str | Path, out: str | Path | None = None, *, trial: int | None = None, best: bool = False,
           force: bool = False, pt2: bool = True, onnx: bool = True, retrain: bool = True,
           task=None) -> ExportResult:
    """Export a trial of ``study`` (the best one unless ``trial`` is given) to ``out``.

    Writes model.py (plain PyTorch, no archgram import), weights.safetensors,
    model.pt2 (torch.export), model.onnx (where ONNX can express the ops and
    onnx is installed), derivation.json and README.md (a model card). Uses the
    weights the search kept; without them, retrains the trial (``retrain``) and
    says so in the card. ``out`` defaults to ``<study>-best`` (or
    ``<study>-trial<N>``) beside the study file. The task is rebuilt from the
    study's reference (``task`` gives it, for data given from Python) and
    refused when its data changed since the search.
    """
    from archgram.search.report import open_study
    from archgram.tasks.reference import TaskReferenceError, rebuild

    started = time.perf_counter()
    store = open_study(study)
    record = _choose(store, trial, best)
    out = Path(out) if out is not None else default_out(study, trial)
    _prepare_out(out, force)
    meta = store.meta
    if meta.get("tasks") or "+" in str(meta.get("task", "")):
        raise ExportError(f"study {study} is a multi-task search ({meta.get('task')}); export supports one task")
    try:
        task = rebuild(meta, task, what=f"export {study}")
    except TaskReferenceError as exc:
        raise ExportError(str(exc)) from None
    batch_size = int(meta["input_shape"][0])
    derivation = record.derivation

    from archgram.search.task_model import build_model

    model, records, traced = build_recorded(lambda: build_model(derivation, task, batch_size)[0])
    source = _study_weights(store, record, model)
    if source is None:
        if not retrain:
            raise ExportError(f"the search kept no weights for trial {record.number}; allow retraining to export it")
        weights_note, weights_source = _retrain(record, task, batch_size, model, meta), "retrained"
    else:
        weights_note, weights_source = f"trained by the search (kept in {source})", "study"
    model.eval()
    title = f"{meta.get('grammar', 'archgram')} architecture {record.attrs.get('hash', '')[:16]} (trial {record.number})"
    info = {"study": str(study), "trial": record.number, "score": record.score, "metric": record.attrs.get("metric", ""),
            "task": task.name, "meta": meta, "attrs": record.attrs, "weights": weights_note}
    result = write_export(model, records, traced, derivation, task, batch_size, out, force, info, title, pt2, onnx)
    result.weights_source = weights_source
    result.seconds = time.perf_counter() - started
    return result


def default_out(study: str | Path, trial: int | None) -> Path:
    text = str(study)
    path = Path(text[len("sqlite:///"):]) if text.startswith("sqlite:///") else Path(text) if "://" not in text else Path("study")
    suffix = "best" if trial is None else f"trial{trial}"
    return path.with_name(f"{path.stem}-{suffix}")


def sample_input(task, batch_size: int) -> torch.Tensor:
    """A validation batch (padded to the typed batch size): real data, real dtype."""
    data = task.data(0)
    x = data.x_val[:batch_size]
    if len(x) < batch_size:
        x = torch.cat([x] * (batch_size // len(x) + 1))[:batch_size]
    return x


def write_export(model: nn.Module, records: dict, traced: dict, derivation, task, batch_size: int, out: Path,
                 force: bool, info: dict[str, Any], title: str, pt2: bool = True, onnx: bool = True) -> ExportResult:
    """Generate, check and write the export of a built model holding its trained weights."""
    from safetensors.torch import save_file

    from archgram.export.card import model_card
    from archgram.search.weights import state_tensors

    gen = generate(model, records, traced, title)
    x = sample_input(task, batch_size)
    with torch.no_grad():
        expected = model(x)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    notes: dict[str, str] = {}
    try:
        header = (f"{title}, exported by archgram {archgram.__version__} on "
                  f"{datetime.date.today().isoformat()}.\n\nPlain PyTorch: no archgram import. "
                  "`load()` returns the trained model; see README.md.\n")
        (tmp / "model.py").write_text(model_source(gen, header, x.shape, str(x.dtype).replace("torch.", "")))
        state = {map_key(k, gen.keymap): v for k, v in state_tensors(model).items()}
        save_file(state, str(tmp / "weights.safetensors"),
                  metadata={"archgram": archgram.__version__, "hash": str(info["attrs"].get("hash", ""))})
        module = _import_generated(tmp / "model.py")
        exported = module.load(str(tmp / "weights.safetensors"))
        missing = set(exported.state_dict()) ^ set(state)
        if missing:
            raise ExportError(f"exported state-dict keys differ from the model's: {sorted(missing)[:5]}")
        with torch.no_grad():
            got = exported(x)
        diff = (got.float() - expected.float()).abs().max().item() if got.numel() else 0.0
        if got.shape != expected.shape or not diff <= TOLERANCE:
            raise ExportError(f"the exported model does not reproduce the search's model (max |diff| {diff:.3g}, "
                              f"shapes {tuple(got.shape)} vs {tuple(expected.shape)}); this is a bug in archgram's export")
        if pt2:
            note = _pt2(exported, x, expected, tmp / "model.pt2")
            if note:
                notes["model.pt2"] = note
        else:
            notes["model.pt2"] = "not requested"
        if onnx:
            note = _onnx(exported, x, tmp / "model.onnx")
            if note:
                notes["model.onnx"] = note
        else:
            notes["model.onnx"] = "not requested"
        latency, calls = _latency(exported, x)
        info = {**info, "latency_calls": calls}
        params = sum(p.numel() for p in exported.parameters())
        (tmp / "derivation.json").write_text(derivation.to_json() + "\n")
        files = [f for f in FILES if (tmp / f).exists()]
        card = model_card(info, gen, title, x, params, latency, files, notes, diff)
        (tmp / "README.md").write_text(card)
        files = [f for f in FILES if (tmp / f).exists()]
        _move_into_place(tmp, out, force)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(out, info.get("trial"), info.get("score"), str(info.get("metric", "")), files, notes,
                        max_abs_diff=diff, params=params, latency_ms=latency)


def _move_into_place(tmp: Path, out: Path, force: bool) -> None:
    if not out.exists():
        tmp.rename(out)
        return
    _prepare_out(out, force)
    for name in FILES:  # replace our files, leave anything else the user put there
        (out / name).unlink(missing_ok=True)
        if (tmp / name).exists():
            shutil.move(str(tmp / name), str(out / name))


def export_json(result: ExportResult) -> str:
    return json.dumps(result.to_dict(), indent=2)
