"""DataTask: a task made from the user's arrays, tensors, Dataset or data file.

Built once on the search driver: the splits are checked (one-line errors),
class labels encoded, inputs laid out for their modality, validation (and test)
carved from train with a fixed seed where the data has none, and the
normalisation statistics computed from the training split only. The object
then holds plain numpy arrays: Ray ships it to workers through its object
store, where the arrays are shared, not copied, by every worker of a node.

The stem and head follow the kind (modality x problem) through two small
registries: MODALITY_STEMS and PROBLEMS.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from archgram.shapes import Shape
from archgram.tasks.base import Task, TaskData, accuracy
from archgram.tasks.data.checks import CHUNK_BYTES, DataError, check_finite, check_labels, check_lengths
from archgram.tasks.data.fingerprint import fingerprint
from archgram.tasks.data.kinds import LAYOUTS, Kind, infer_kind
from archgram.tasks.data.lazy import LazyRows
from archgram.tasks.data.modules import FeatureTokens, RegressionHead, Standardize
from archgram.tasks.heads import ClassificationHead

#: tokens per tabular feature (FeatureTokens' width)
TABULAR_DIM = 16
MIN_STD = 1e-6


# ------------------------------------------------------------- modalities
@dataclass(frozen=True)
class Modality:
    """How inputs of one modality reach the body: the axes statistics are pooled
    over, the body's input shape and the stem module."""

    stat_axes: tuple[int, ...]
    body_shape: Callable[[tuple, int], Shape]
    stem: Callable[[tuple, tuple], nn.Module]


MODALITY_STEMS: dict[str, Modality] = {
    "image": Modality((0, 2, 3), lambda row, b: (b, *row), lambda m, s: Standardize(m, s, axis=1)),
    "sequence": Modality((0, 1), lambda row, b: (b, *row), lambda m, s: Standardize(m, s, axis=-1)),
    "tabular": Modality((0,), lambda row, b: (b, row[0], TABULAR_DIM), lambda m, s: FeatureTokens(m, s, TABULAR_DIM)),
}


# --------------------------------------------------------------- problems
def _r2(pred: torch.Tensor, y: torch.Tensor) -> float:
    """Coefficient of determination, averaged over outputs (sklearn's default)."""
    pred, y = pred.double().reshape(len(y), -1), y.double().reshape(len(y), -1)
    ss_res = ((y - pred) ** 2).sum(0)
    ss_tot = ((y - y.mean(0)) ** 2).sum(0)
    r2 = torch.where(ss_tot > 0, 1 - ss_res / ss_tot.clamp_min(1e-300), torch.zeros_like(ss_tot))
    return float(r2.mean())


@dataclass(frozen=True)
class Problem:
    metric_name: str
    head: Callable[[DataTask, Shape], nn.Module]
    loss: Callable[[DataTask, torch.Tensor, torch.Tensor], torch.Tensor]
    metric: Callable[[DataTask, torch.Tensor, torch.Tensor], float]
    chance: Callable[[DataTask], float]


PROBLEMS: dict[str, Problem] = {
    "classification": Problem(
        "accuracy",
        lambda t, shape: ClassificationHead(shape, len(t.classes)),
        lambda t, pred, y: F.cross_entropy(pred, y),
        lambda t, pred, y: accuracy(pred, y),
        lambda t: 1.0 / len(t.classes),
    ),
    "regression": Problem(
        "r2",
        lambda t, shape: RegressionHead(shape, t.outputs, t.y_mean, t.y_std, squeeze=t.y_rank == 0),
        lambda t, pred, y: (((pred - y.reshape(pred.shape)) / t._y_std_t.to(pred.device)) ** 2).mean(),
        lambda t, pred, y: _r2(pred, y),
        lambda t: 0.0,
    ),
}


# ------------------------------------------------------------------ task
class DataTask(Task):
    """A task over the user's data. ``splits`` maps 'train' (required), 'val' and
    'test' to (inputs, targets) numpy arrays; ``kind`` overrides the inferred
    kind ('image', 'regression', 'sequence-classification', ...)."""

    name = "data"
    description = "the user's data"

    def __init__(self, splits: dict[str, tuple[np.ndarray, np.ndarray]], *, kind: str | None = None,
                 source: str = "arrays", val_fraction: float = 0.1, val_seed: int = 0, test_fraction: float = 0.1,
                 info: dict[str, Any] | None = None, loader_workers: int = 2):
        super().__init__()
        if "train" not in splits:
            raise DataError("data needs a training split (x, y)")
        if not (0 < val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
            raise DataError(f"validation/test fractions {val_fraction}/{test_fraction} must be in (0, 1) and sum below 1")
        splits = {k: (np.asanyarray(x), np.asarray(y)) for k, (x, y) in splits.items()}
        check_lengths(splits)
        self.fingerprint = fingerprint({f"{'x' if k == 'train' else 'x_' + k}": x for k, (x, _) in splits.items()}
                                       | {f"{'y' if k == 'train' else 'y_' + k}": y for k, (_, y) in splits.items()})
        self.source, self.val_fraction, self.val_seed, self.test_fraction = source, val_fraction, val_seed, test_fraction
        self.name = f"data:{source}"
        x_train, y_train = splits["train"]
        self.kind: Kind = infer_kind(x_train, y_train, kind)
        self.metric_name = self.problem.metric_name
        for split, (x, _) in splits.items():
            check_finite("x" if split == "train" else f"x_{split}", x)
        splits = self._targets(splits)
        splits = {k: (_rows_of(x, self.kind.modality, loader_workers), y) for k, (x, y) in splits.items()}
        self.arrays, notes = _carve(splits, val_fraction, test_fraction, val_seed)
        self.info = {**(info or {}), "source": source, "kind": str(self.kind), **notes}
        self.x_mean, self.x_std = _stats(self.arrays["x_train"], self.modality.stat_axes)
        self.row_shape = tuple(self.arrays["x_train"].shape[1:])

    def _targets(self, splits: dict) -> dict:
        """Encode class labels as 0..K-1 (sorted), or check and scale regression values."""
        y_train = splits["train"][1]
        others = {k: y for k, (_, y) in splits.items() if k != "train"}
        if self.kind.problem == "classification":
            if y_train.ndim != 1:
                raise DataError(f"class labels must be one per example, got targets of shape {y_train.shape}")
            if y_train.dtype.kind == "f" and not np.all(np.isfinite(y_train)):
                raise DataError("y has NaN or inf labels")
            self.classes = check_labels(y_train, others)
            return {k: (x, np.searchsorted(self.classes, y).astype(np.int64)) for k, (x, y) in splits.items()}
        if y_train.dtype.kind not in "fiub":
            raise DataError(f"regression needs numeric targets, got {y_train.dtype} (drop --task-kind regression)")
        for k, (_, y) in splits.items():
            check_finite("y" if k == "train" else f"y_{k}", y.astype(np.float64) if y.dtype.kind != "f" else y)
        self.classes = None
        self.y_rank = y_train.ndim - 1
        y2 = y_train.reshape(len(y_train), -1).astype(np.float64)
        self.outputs = y2.shape[1]
        self.y_mean = tuple(float(v) for v in y2.mean(0))
        self.y_std = tuple(max(float(v), MIN_STD) for v in y2.std(0))
        return {k: (x, y.astype(np.float32)) for k, (x, y) in splits.items()}

    @property
    def problem(self) -> Problem:
        return PROBLEMS[self.kind.problem]

    @property
    def modality(self) -> Modality:
        return MODALITY_STEMS[self.kind.modality]

    # ------------------------------------------------------------- data
    def generate(self, seed: int) -> TaskData:
        """Tensors over the task's arrays (shared memory, no copy); ``seed`` does
        not change the data."""
        a = self.arrays
        return TaskData(_tensor(a["x_train"]), _tensor(a["y_train"]), _tensor(a["x_val"]), _tensor(a["y_val"]),
                        _tensor(a["x_test"]), _tensor(a["y_test"]), dict(self.info))

    def __getstate__(self) -> dict[str, Any]:
        # the arrays travel once (zero-copy in Ray's object store); tensor views are rebuilt
        state = self.__dict__.copy()
        state["_cache"] = {}
        # arrays mapped from an .npz travel as plain arrays: Ray shares those
        # zero-copy, while a memmap subclass would be pickled in-band and copied
        # into every worker
        state["arrays"] = {k: np.asarray(v) if isinstance(v, np.memmap) else v for k, v in self.arrays.items()}
        state.pop("_y_std_cache", None)
        return state

    # ----------------------------------------------------------- shapes
    def body_input_shape(self, batch_size: int) -> Shape:
        return tuple(self.modality.body_shape(self.row_shape, batch_size))

    def stem(self, body_input_shape: Shape) -> nn.Module:
        return self.modality.stem(self.x_mean, self.x_std)

    def head(self, body_output_shape: Shape) -> nn.Module:
        return self.problem.head(self, body_output_shape)

    # ---------------------------------------------------------- scoring
    @property
    def _y_std_t(self) -> torch.Tensor:
        if "_y_std_cache" not in self.__dict__:
            self._y_std_cache = torch.tensor(self.y_std, dtype=torch.float32)
        return self._y_std_cache

    def loss(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.problem.loss(self, pred, y)

    def metric(self, pred: torch.Tensor, y: torch.Tensor) -> float:
        return self.problem.metric(self, pred, y)

    def chance(self) -> float:
        return self.problem.chance(self)

    def config(self) -> dict[str, Any]:
        return {"source": self.source, "kind": str(self.kind), "val_fraction": self.val_fraction,
                "val_seed": self.val_seed, "test_fraction": self.test_fraction}

    def describe(self, batch_size: int = 32) -> dict[str, Any]:
        out = super().describe(batch_size)
        out.update(kind=str(self.kind), splits={k: list(v.shape) for k, v in self.arrays.items() if k.startswith("x")},
                   classes=None if self.classes is None else [_plain(c) for c in self.classes])
        return out


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def _rows_of(x: np.ndarray, modality: str, workers: int):
    """Inputs laid out for the modality: a view of an in-memory array, or
    LazyRows over a memory-mapped .npy file (data larger than memory)."""
    path = getattr(x, "filename", None)
    if isinstance(x, np.memmap) and path and str(path).endswith(".npy"):
        return LazyRows(path, np.arange(len(x)), modality, workers)
    return LAYOUTS[modality](x)


def _take(x, idx: np.ndarray):
    return x.subset(idx) if isinstance(x, LazyRows) else x[idx]


def _chunk(x, i: int, j: int) -> np.ndarray:
    return x.numpy(slice(i, j)) if isinstance(x, LazyRows) else x[i:j]


def _tensor(a):
    """A tensor sharing ``a``'s memory (LazyRows stay on disk). Arrays from Ray's
    object store are read-only; training only reads them, so torch's warning is muted."""
    if isinstance(a, LazyRows):
        return a
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(a)


def _carve(splits: dict, val_fraction: float, test_fraction: float, seed: int) -> tuple[dict, dict]:
    """Train/val/test arrays; missing validation (and test) splits are carved from
    train by one permutation seeded with ``seed``."""
    x, y = splits["train"]
    need_val, need_test = "val" not in splits, "test" not in splits
    notes: dict[str, Any] = {}
    if need_val or need_test:
        n = len(x)
        n_val = max(1, round(val_fraction * n)) if need_val else 0
        n_test = max(1, round(test_fraction * n)) if need_test and test_fraction > 0 else 0
        if need_test and n_test == 0:
            raise DataError("no test split given and test_fraction is 0")
        if n - n_val - n_test < 1:
            raise DataError(f"{n} training examples cannot spare a validation and test split")
        perm = np.random.default_rng(seed).permutation(n)
        va, te, tr = np.sort(perm[:n_val]), np.sort(perm[n_val:n_val + n_test]), np.sort(perm[n_val + n_test:])
        if need_val:
            splits["val"] = (_take(x, va), y[va])
            notes["validation"] = f"{n_val} carved from train, seed {seed}"
        if need_test:
            splits["test"] = (_take(x, te), y[te])
            notes["test"] = f"{n_test} carved from train, seed {seed}"
        splits["train"] = (_take(x, tr), y[tr])
    arrays = {}
    for k in ("train", "val", "test"):
        arrays[f"x_{k}"], arrays[f"y_{k}"] = splits[k]
    return arrays, notes


def _stats(x: np.ndarray, axes: tuple[int, ...]) -> tuple[tuple, tuple]:
    """Per-channel mean and std of the training inputs over ``axes``, in chunks of
    rows and float64 (a 1 GB uint8 array is never converted whole)."""
    keep = [i for i in range(len(x.shape)) if i not in axes]
    total = np.zeros([x.shape[i] for i in keep], np.float64)
    sq = np.zeros_like(total)
    count = 0
    rest = tuple(a for a in axes if a != 0)
    rows = max(1, CHUNK_BYTES // (8 * int(np.prod(x.shape[1:], dtype=np.int64))))
    for i in range(0, len(x), rows):
        c = _chunk(x, i, i + rows).astype(np.float64)
        total += c.sum(axis=(0, *rest))
        sq += (c ** 2).sum(axis=(0, *rest))
        count += c.size // max(1, total.size)
    mean = total / count
    std = np.sqrt(np.maximum(sq / count - mean ** 2, 0.0))
    std = np.where(std < MIN_STD, 1.0, std)
    return tuple(float(v) for v in mean.reshape(-1)), tuple(float(v) for v in std.reshape(-1))

