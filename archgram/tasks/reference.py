"""Tasks by reference: what ``--task`` names, what the study stores, and how
export, analyze and a resumed search rebuild the same task.

A reference is one of

    digits                        a registered task (``archgram tasks``)
    package.module:Class          a Task subclass importable on the driver
    path/to/file.py:Class         a Task subclass defined in a file
    data:path/to/train.npz        a data file or image folder (``--data``)

The study keeps the reference, its options and a content hash of the task's
data (``record``). ``rebuild`` resolves the reference again and refuses,
naming the arrays that differ, when the data has changed since. The task
object itself (with its data) travels to Ray workers through the object store;
a class from a file or a user module is pickled by value, so workers need
neither the file nor the module.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from archgram.errors import ArchgramError
from archgram.tasks.base import TASKS, Task, get_task
from archgram.tasks.data import DataTask, changes, fingerprint, from_path

DATA_PREFIX = "data:"


class TaskReferenceError(ArchgramError):
    """A reference that names no task, or a rebuilt task whose data changed."""


def resolve(reference: str, options: dict[str, Any] | None = None) -> Task:
    """The task ``reference`` names, built with ``options``."""
    options = dict(options or {})
    text = str(reference).strip()
    if text.startswith(DATA_PREFIX):
        return from_path(text[len(DATA_PREFIX):], **options)
    if ":" not in text:
        return get_task(text, **options)
    where, _, attr = text.rpartition(":")
    if not where or not attr.isidentifier():
        raise TaskReferenceError(f"--task {text!r}: expected NAME, package.module:Class or path/to/file.py:Class")
    module = _import_file(where, text) if where.endswith(".py") else _import_module(where, text)
    cls = getattr(module, attr, None)
    if cls is None:
        raise TaskReferenceError(f"--task {text}: {where} defines no '{attr}'")
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TaskReferenceError(f"--task {text}: '{attr}' is a {type(cls).__name__}, not a Task subclass "
                                 "(archgram.tasks.Task)")
    try:
        task = cls(**options)
    except TypeError as exc:
        raise TaskReferenceError(f"--task {text}: cannot build it with options {options}: {exc}") from None
    return task


def _import_module(name: str, text: str):
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        raise TaskReferenceError(f"--task {text}: cannot import module '{name}' ({exc})") from None
    _by_value(module)
    return module


def _import_file(path: str, text: str):
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise TaskReferenceError(f"--task {text}: no such file {path}")
    name = f"archgram_user_{file.stem}_{hashlib.sha256(str(file).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    try:
        module = import_file(file, name)
    except Exception as exc:
        raise TaskReferenceError(f"--task {text}: importing {path} failed: {type(exc).__name__}: {exc}") from None
    _by_value(module)
    return module


def import_file(file: Path, name: str, *, keep: bool = True) -> ModuleType:
    """Run the Python file ``file`` as the module ``name``. It sits in
    ``sys.modules`` while it runs (dataclasses and pickle look their module up
    there) and afterwards only if ``keep``; an exception it raises propagates
    with the half-run module unregistered, for the caller to word. Task files
    (``path/to/file.py:Class``) and export's check of its model.py share it."""
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except BaseException:
        sys.modules.pop(name, None)
        raise
    if not keep:
        sys.modules.pop(name, None)
    return module


def _by_value(module) -> None:
    """Ship a user module's classes to Ray workers by value (they may not have it)."""
    if module.__name__.split(".")[0] == "archgram":
        return
    try:
        import cloudpickle

        cloudpickle.register_pickle_by_value(module)
    except (ImportError, ValueError):
        pass


def reference_of(task: Task) -> str:
    """The reference that rebuilds ``task`` ("" when none can: data from Python
    arrays, a class defined in ``__main__``)."""
    if isinstance(task, DataTask):
        path = task.info.get("path")
        return f"{DATA_PREFIX}{path}" if path else ""
    cls = type(task)
    if task.name in TASKS and TASKS.get(task.name) is cls:
        return task.name
    module = cls.__module__
    if module == "__main__":
        return ""
    if module.startswith("archgram_user_"):
        origin = getattr(sys.modules.get(module), "__file__", None)
        return f"{origin}:{cls.__qualname__}" if origin else ""
    return f"{module}:{cls.__qualname__}"


def data_fingerprint(task: Task) -> dict[str, Any]:
    """Content hash of the task's data (its train, validation and test splits)."""
    if isinstance(task, DataTask):
        return task.fingerprint
    d = task.data(0)
    arrays = {}
    for split in ("train", "val", "test"):
        x, y = d.split(split)
        for key, t in ((f"x_{split}", x), (f"y_{split}", y)):
            if t is not None:
                arrays[key] = t.detach().cpu().contiguous().numpy() if hasattr(t, "numpy") else np.asarray(t)
    return fingerprint(arrays)


def record(task: Task, reference: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """What the study stores about its task."""
    fp = data_fingerprint(task)
    return {"ref": reference, "options": dict(options or {}), "sha256": fp["sha256"], "arrays": fp["arrays"],
            "class": f"{type(task).__module__}:{type(task).__qualname__}"}


def verify(stored: dict[str, Any], task: Task, what: str) -> None:
    """Refuse ``task`` when its data differs from the data the study began with."""
    diff = changes({"sha256": stored.get("sha256"), "arrays": stored.get("arrays", {})}, data_fingerprint(task))
    if diff:
        ref = stored.get("ref") or "the task"
        raise TaskReferenceError(f"{what}: the data of {ref} changed since the study began ({'; '.join(diff)}); "
                                 "restore it, or start a new study")


def rebuild(meta: dict[str, Any], task: Task | None = None, what: str = "study") -> Task:
    """The task of a study, from its stored reference (or ``task`` when given,
    checked against the stored hash). Studies from before references rebuild
    their registered task by name."""
    stored = meta.get("task_ref")
    if stored is None:
        if task is not None:
            return task
        return get_task(meta["task"])
    if task is None:
        if not stored.get("ref"):
            raise TaskReferenceError(f"{what}: its task ({stored.get('class')}) was given from Python and cannot be "
                                     "rebuilt from a reference; pass the same task or data again "
                                     "(archgram.open_study(path, task=... or data=...))")
        task = resolve(stored["ref"], stored.get("options"))
    verify(stored, task, what)
    return task
