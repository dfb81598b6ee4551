"""Tasks made from the user's data: a file (.npz, .csv, .parquet, .pt), a folder
of images, arrays, tensors or any ``torch.utils.data.Dataset``.

    task = data_task("train.npz")                       # kind inferred from x and y
    task = data_task("table.csv", target="price")        # tabular regression
    task = data_task((x, y), kind="sequence")            # arrays or tensors
    task = data_task(my_dataset)                         # a torch Dataset of (x, y)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from archgram.tasks.data.checks import DataError
from archgram.tasks.data.fingerprint import changes, fingerprint
from archgram.tasks.data.kinds import Kind, infer_kind, parse_kind
from archgram.tasks.data.loaders import LOADERS, RawData, load_path
from archgram.tasks.data.task import DataTask

#: DataTask keyword arguments a data reference may carry (stored with the study)
TASK_OPTIONS = ("kind", "val_fraction", "val_seed", "test_fraction", "loader_workers")
#: loader options (stored with the study)
LOAD_OPTIONS = ("target", "image_size")


def from_path(path: str | Path, **options: Any) -> DataTask:
    """A DataTask from a data file or image folder; ``options``: target,
    image_size (loading) and kind, val_fraction, val_seed, test_fraction."""
    _check_options(options)
    parse_kind(options.get("kind"))  # a bad --task-kind fails before the file is read
    raw = load_path(path, {k: v for k, v in options.items() if k in LOAD_OPTIONS})
    task_kw = {k: v for k, v in options.items() if k in TASK_OPTIONS}
    info = {**raw.info, "path": str(Path(path).expanduser().resolve())}
    return DataTask(raw.splits, source=Path(path).name, info=info, **task_kw)


def from_arrays(x: Any, y: Any, x_val: Any = None, y_val: Any = None, x_test: Any = None, y_test: Any = None,
                **options: Any) -> DataTask:
    """A DataTask from numpy arrays or torch tensors (CPU)."""
    _check_options(options, allowed=TASK_OPTIONS)
    splits = {"train": (_numpy(x, "x"), _numpy(y, "y"))}
    for name, a, b in (("val", x_val, y_val), ("test", x_test, y_test)):
        if (a is None) != (b is None):
            raise DataError(f"give both x_{name} and y_{name}, or neither")
        if a is not None:
            splits[name] = (_numpy(a, f"x_{name}"), _numpy(b, f"y_{name}"))
    return DataTask(splits, source="arrays", **options)


def from_dataset(dataset: Any, val: Any = None, test: Any = None, *, num_workers: int = 0, batch_size: int = 256,
                 **options: Any) -> DataTask:
    """A DataTask from ``torch.utils.data.Dataset`` objects yielding (x, y) pairs,
    read once through a DataLoader (``num_workers`` processes) into arrays."""
    _check_options(options, allowed=TASK_OPTIONS)
    splits = {"train": _read_dataset(dataset, "dataset", num_workers, batch_size)}
    for name, ds in (("val", val), ("test", test)):
        if ds is not None:
            splits[name] = _read_dataset(ds, f"{name} dataset", num_workers, batch_size)
    return DataTask(splits, source=type(dataset).__name__, **options)


def data_task(data: Any, **options: Any) -> DataTask:
    """A DataTask from whatever the user has: a path, (x, y), a dict of arrays
    (x, y, x_val, ...), a Dataset, or a DataTask (returned as it is)."""
    if isinstance(data, DataTask):
        if options:
            raise DataError("options apply to raw data, not to a DataTask that is already built")
        return data
    if isinstance(data, (str, Path)):
        return from_path(data, **options)
    if isinstance(data, dict):
        return from_arrays(**data, **options)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return from_arrays(data[0], data[1], **options)
    try:
        from torch.utils.data import Dataset
    except ImportError:  # pragma: no cover - torch is a dependency
        Dataset = ()  # type: ignore[assignment]
    if isinstance(data, Dataset) or (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        return from_dataset(data, **options)
    raise DataError(f"cannot make a task from a {type(data).__name__}: give a file path, (x, y) arrays or tensors, "
                    "a dict of arrays, or a torch Dataset")


def _check_options(options: dict[str, Any], allowed: tuple[str, ...] = TASK_OPTIONS + LOAD_OPTIONS) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise DataError(f"unknown data option(s) {', '.join(unknown)}; known: {', '.join(allowed)}")


def _numpy(a: Any, name: str) -> np.ndarray:
    try:
        import torch

        if isinstance(a, torch.Tensor):
            return a.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    out = np.asarray(a)
    if out.dtype == object:
        raise DataError(f"{name} holds Python objects of mixed types; give numeric or string arrays")
    return out


def _read_dataset(ds: Any, what: str, num_workers: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    import torch
    from torch.utils.data import DataLoader

    if len(ds) == 0:
        raise DataError(f"the {what} is empty")
    first = ds[0]
    if not (isinstance(first, (tuple, list)) and len(first) == 2):
        raise DataError(f"the {what} must yield (x, y) pairs, its first item is a {type(first).__name__}")
    xs, ys = [], []
    for xb, yb in DataLoader(ds, batch_size=batch_size, num_workers=num_workers, shuffle=False):
        xs.append(_numpy(xb, "x") if isinstance(xb, torch.Tensor) else np.asarray(xb))
        ys.append(_numpy(yb, "y") if isinstance(yb, torch.Tensor) else np.asarray(yb))
    return np.concatenate(xs), np.concatenate(ys)


__all__ = ["LOADERS", "DataError", "DataTask", "Kind", "RawData", "changes", "data_task", "fingerprint",
           "from_arrays", "from_dataset", "from_path", "infer_kind", "load_path", "parse_kind"]
