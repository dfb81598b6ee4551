"""Refuse bad data before anything is written: one specific line per problem.

Checks run on the raw splits the user gave (before a validation split is
carved), in chunks, so a 1 GB array is never copied to check it.
"""
from __future__ import annotations

import numpy as np

from archgram.errors import ArchgramError

CHUNK_BYTES = 1 << 24  # work on 16 MB of rows at a time


def chunk_rows(a: np.ndarray, itemsize: int | None = None) -> int:
    """Rows of ``a`` per chunk so a chunk (as ``itemsize``-byte items) is ~16 MB."""
    per_row = max(1, int(np.prod(a.shape[1:], dtype=np.int64)) * (itemsize or a.dtype.itemsize))
    return max(1, CHUNK_BYTES // per_row)


class DataError(ArchgramError):
    """The data cannot make a task (mismatched lengths, NaN, one class, ...)."""


def check_lengths(splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    base = None
    for name, (x, y) in splits.items():
        if len(x) != len(y):
            raise DataError(f"{_x(name)} has {len(x)} rows but {_y(name)} has {len(y)}; they must match")
        if len(x) == 0:
            raise DataError(f"{_x(name)} is empty")
        if base is None:
            base = (name, x.shape[1:], y.shape[1:])
        elif x.shape[1:] != base[1] or y.shape[1:] != base[2]:
            raise DataError(f"{_x(name)} rows are {x.shape[1:]} (targets {y.shape[1:]}) but {_x(base[0])} rows are "
                            f"{base[1]} (targets {base[2]})")


def check_finite(name: str, a: np.ndarray) -> None:
    """NaN or inf in a floating array: say how many and the first row."""
    if a.dtype.kind not in "fc":
        return
    bad, first, step = 0, None, chunk_rows(a)
    for i in range(0, len(a), step):
        rows = ~np.isfinite(a[i:i + step]).reshape(min(step, len(a) - i), -1).all(axis=1)
        if rows.any():
            bad += int(rows.sum())
            first = i + int(np.argmax(rows)) if first is None else first
    if bad:
        raise DataError(f"{name} has NaN or inf values in {bad} row{'s' * (bad != 1)} (first: row {first}); "
                        "drop or impute them first")


def check_labels(train: np.ndarray, others: dict[str, np.ndarray]) -> np.ndarray:
    """The classes (sorted unique training labels); refuses one class and labels
    of another split that training never shows."""
    classes = np.unique(train)
    if len(classes) < 2:
        raise DataError(f"the training targets hold a single class ({classes[0]!r}); classification needs at "
                        "least two (or give --task-kind regression)")
    for name, y in others.items():
        unseen = np.setdiff1d(np.unique(y), classes)
        if len(unseen):
            shown = ", ".join(repr(v.item() if hasattr(v, "item") else v) for v in unseen[:5])
            raise DataError(f"{_y(name)} holds label{'s' * (len(unseen) != 1)} {shown} that the training targets "
                            "never show; a model cannot learn them")
    return classes


def _x(split: str) -> str:
    return "x" if split == "train" else f"x_{split}"


def _y(split: str) -> str:
    return "y" if split == "train" else f"y_{split}"
