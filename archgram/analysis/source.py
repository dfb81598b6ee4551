"""The model to analyse, with its task: from a study trial (the weights the
search kept, else retrained from the stored derivation with the trial's budget
and seed), a derivation JSON plus a task (trained here), or an ``archgram
export`` folder (derivation.json + weights.safetensors) plus a task."""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from archgram.analysis.capture import AnalysisError, NoAttentionError, attention_layers


@dataclass
class Loaded:
    model: nn.Module
    task: object
    batch_size: int
    description: str  # where the model and its weights came from


def load(source: str, *, task: str | None = None, trial: int | None = None, best: bool = False,
         budget: str | None = None, seed: int = 0, require=None) -> Loaded:
    """``require(model)`` refuses a model the caller cannot use before any training
    is spent (default: one without an attention layer)."""
    require = require or require_attention
    path = Path(source)
    if path.is_dir():
        return _from_export(path, task, require)
    if path.suffix == ".json":
        return _from_derivation(path, task, budget or "200steps", seed, require)
    if path.exists() or "://" in source:
        return _from_study(source, trial, best, budget, require)
    raise AnalysisError(f"{source}: no such file or folder (give a study .db, a derivation .json or an export folder)")


def _task(name: str | None, what: str):
    from archgram.tasks.reference import resolve

    if name is None:
        raise AnalysisError(f"{what} does not say which task it was trained for: give --task (e.g. --task mqar)")
    return resolve(name)  # a name, package.module:Class, file.py:Class or data:PATH


def _build(derivation, task, batch_size: int, require) -> nn.Module:
    from archgram.search.task_model import build_model

    model = build_model(derivation, task, batch_size)[0]
    require(model)
    return model


def require_attention(model: nn.Module) -> None:
    """Refuse a model without a composite attention op (nothing to analyse)."""
    if not attention_layers(model):
        ops = sorted({type(m).__name__ for m in model.modules() if "attention" in type(m).__name__.lower()})
        extra = f" ({', '.join(ops)} expose no per-head maps)" if ops else ""
        raise NoAttentionError(f"the model has no attention layer (composite 'attention' op) to analyse{extra}")


def _read_derivation(path: Path):
    from archgram.grammar.derivation import Derivation

    try:
        return Derivation.from_json(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnalysisError(f"{path}: cannot read a derivation: {exc}") from None


def _train(model: nn.Module, derivation, task, budget: str, seed: int, batch_size: int) -> float | None:
    """Train with the evaluator (same loop, budget semantics and seeding as a
    search trial) and load the result into ``model``; returns the val score."""
    from safetensors.torch import load_file

    from archgram.search.evaluator import evaluate

    with tempfile.TemporaryDirectory(prefix="archgram-analyze-") as tmp:
        file = str(Path(tmp) / "w.safetensors")
        result = evaluate(derivation, task, budget, seed=seed, batch_size=batch_size, weights=file)
        if not result.ok:
            raise AnalysisError(f"training the model failed ({result.failure}): {result.message}")
        model.load_state_dict(load_file(file), strict=True)
    return result.score


def _from_derivation(path: Path, task_name: str | None, budget: str, seed: int, require) -> Loaded:
    d = _read_derivation(path)
    task = _task(task_name, f"derivation {path}")
    bs = int(d.input_shape[0])
    model = _build(d, task, bs, require)
    score = _train(model, d, task, budget, seed, bs)
    return Loaded(model.eval(), task, bs, f"{path} trained on {task.name} ({budget}, seed {seed}; {task.metric_name} {score:.4f})")


def _from_export(folder: Path, task_name: str | None, require) -> Loaded:
    from safetensors.torch import load_file

    files = [folder / "derivation.json", folder / "weights.safetensors"]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise AnalysisError(f"{folder} is not an archgram export: missing {', '.join(missing)}")
    d = _read_derivation(files[0])
    task = _task(task_name, f"export {folder}")
    bs = int(d.input_shape[0])
    model = _build(d, task, bs, require)
    state = load_file(str(files[1]))
    if set(state) != set(model.state_dict()):  # exported names (model.py's): map archgram's keys to them
        state = _exported_keys(d, task, bs, model, state)
    model.load_state_dict(state, strict=True)
    return Loaded(model.eval(), task, bs, f"export {folder} ({task.name})")


def _exported_keys(d, task, bs, model, state) -> dict:
    try:
        from archgram.export.codegen import build_recorded, generate, map_key
        from archgram.search.task_model import build_model

        built, records, traced = build_recorded(lambda: build_model(d, task, bs)[0])
        keymap = generate(built, records, traced).keymap
        return {k: state[map_key(k, keymap)] for k in model.state_dict()}
    except (ImportError, KeyError, ArithmeticError, ValueError) as exc:
        raise AnalysisError(f"the export's weights do not fit the model built from its derivation ({exc})") from None


def _from_study(study: str, trial: int | None, best: bool, budget: str | None, require) -> Loaded:
    from safetensors.torch import load_file

    from archgram.search.budget import Budget
    from archgram.search.report import open_study
    from archgram.tasks.reference import rebuild

    store = open_study(study)
    records = store.records()
    if trial is not None:
        found = [r for r in records if r.number == trial]
        if not found:
            raise AnalysisError(f"study {study} has no finished trial {trial} (trials: {', '.join(str(r.number) for r in records[:20])})")
        record = found[0]
    else:
        top = store.leaderboard(1)
        if not top:
            raise AnalysisError(f"study {study} has no successful trial to analyse")
        record = top[0]
    if record.derivation is None:
        raise AnalysisError(f"trial {record.number} of {study} stores no readable derivation")
    meta = store.meta
    task = rebuild(meta, what=f"analyze {study}")
    bs = int(meta.get("input_shape", [record.attrs.get("batch_size") or record.derivation.input_shape[0]])[0])
    model = _build(record.derivation, task, bs, require)
    kept = None
    try:
        from archgram.search.weights import weights_file

        kept = weights_file(store.url, record.number)
    except ImportError:
        pass
    what = f"study {study} trial {record.number}"
    if budget is None and kept and Path(kept).is_file():
        model.load_state_dict(load_file(kept), strict=True)
        return Loaded(model.eval(), task, bs, f"{what} (weights kept by the search)")
    attrs = record.attrs
    if budget is None:
        budget = attrs.get("budget") or "200steps"
        if Budget.parse(budget).seconds is not None and attrs.get("steps"):  # time budgets do not replay
            budget = f"{int(attrs['steps'])}steps"
    seed = int(attrs.get("seed", 0))
    score = _train(model, record.derivation, task, budget, seed, bs)
    return Loaded(model.eval(), task, bs, f"{what} retrained ({budget}, seed {seed}; {task.metric_name} {score:.4f})")
