"""The Task interface and the task registry.

A task is everything the evaluator needs besides the architecture: data
(generated offline, cached in memory, deterministic in a seed), the shape the
grammar's network receives, what shape its output must have, a *stem* that turns
raw inputs into that body input (an embedding for tokens, identity otherwise), a
*head* that turns the body's output into predictions, a loss and a metric
(higher is better). The grammar's network (the "body") is the only searched part.

    task = get_task("digits")
    shape = task.body_input_shape(32)                      # (32, 1, 8, 8)
    d = grammar.sample(shape, seed=0, target=task.output_target(32))
"""
from __future__ import annotations

import contextlib
import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from archgram.errors import ArchgramError, ShapeError
from archgram.registry import Registry, same_class, unknown
from archgram.shapes import Shape, fmt


@dataclass
class TaskData:
    """Train, validation and test tensors of one task, on the CPU.

    ``x_*`` are raw inputs (what the stem receives), ``y_*`` the targets the
    task's loss and metric read. Indexing the first axis selects examples.
    Search reads only train and validation; the test split is read once, for
    the final pick. A task whose data has no validation split of its own leaves
    ``x_val``/``y_val`` as None and ``Task.data`` carves one from train.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor | None
    y_val: torch.Tensor | None
    x_test: torch.Tensor
    y_test: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for split in ("train", "val", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if (x is None) != (y is None) or (x is not None and len(x) != len(y)):
                raise ArchgramError(f"TaskData: {split} inputs and targets differ in length")

    @property
    def n_train(self) -> int:
        return len(self.x_train)

    @property
    def n_val(self) -> int:
        return 0 if self.x_val is None else len(self.x_val)

    @property
    def n_test(self) -> int:
        return len(self.x_test)

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) of ``name``: 'train', 'val' or 'test'."""
        if name not in SPLITS:
            raise ArchgramError(unknown("split", name, SPLITS))
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

    def with_validation(self, fraction: float, seed: int) -> TaskData:
        """Carve ``fraction`` of train (at least one example) into validation, by a
        permutation seeded with ``seed``; a no-op when a validation split exists."""
        if self.x_val is not None:
            return self
        n = self.n_train
        n_val = max(1, round(fraction * n))
        if n_val >= n:
            raise ArchgramError(f"TaskData: {n} training examples cannot spare a validation split")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
        tr, va = perm[n_val:].sort().values, perm[:n_val].sort().values
        return TaskData(self.x_train[tr], self.y_train[tr], self.x_train[va], self.y_train[va],
                        self.x_test, self.y_test, {**self.info, "validation": f"{n_val} carved from train, seed {seed}"})

    def __getstate__(self) -> dict[str, Any]:
        """Tensors travel as numpy arrays: Ray's object store shares those
        between the workers of a node instead of copying them into each."""
        return {k: _as_numpy(v) for k, v in self.__dict__.items()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({k: _as_tensor(v) for k, v in state.items()})

    def to(self, device: str | torch.device) -> TaskData:
        moved = [None if t is None else t.to(device) for t in
                 (self.x_train, self.y_train, self.x_val, self.y_val, self.x_test, self.y_test)]
        return TaskData(*moved, self.info)


SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Recipe:
    """How a task's trials train by default: the setting under which the task's
    reference architecture trains well. A search takes it unless the user
    overrides a field (``--lr``, ``--optimizer``, ``--batch-size``, ``--budget``).
    ``budget`` is a step budget wherever possible, so scores do not depend on
    machine load."""

    optimizer: str = "adamw"
    lr: float = 1e-3
    batch_size: int = 32
    budget: str = "500steps"
    schedule: str = "cosine"  # TrainOptions.schedule
    warmup: float = 0.05  # TrainOptions.warmup
    #: wall-clock cap per trial (seconds), or None. A safety, not a budget: a trial
    #: still running then is a failed 'timeout' (a sampled giant), while every trial
    #: that finishes keeps its step-determined score.
    trial_seconds: float | None = None

    def train_options(self) -> dict[str, Any]:
        """The evaluator train options this recipe sets."""
        return {"schedule": self.schedule, "warmup": self.warmup}

    def to_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer, "lr": self.lr, "batch_size": self.batch_size, "budget": self.budget,
                "schedule": self.schedule, "warmup": self.warmup}

    def override(self, **fields_: Any) -> Recipe:
        """This recipe with the given fields replaced; None values keep the recipe's."""
        import dataclasses

        return dataclasses.replace(self, **{k: v for k, v in fields_.items() if v is not None})


def _as_numpy(v: Any) -> Any:
    if isinstance(v, torch.Tensor) and v.device.type == "cpu" and v.dtype != torch.bfloat16:
        return v.detach().contiguous().numpy()
    return v


def _as_tensor(v: Any) -> Any:
    import warnings

    import numpy as np

    if isinstance(v, np.ndarray):
        with warnings.catch_warnings():  # arrays from Ray's object store are read-only; training only reads
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(v)
    return v


class Task:
    """Base class of every task. Subclasses set ``name`` (and ``metric_name``,
    ``description``, ``published``) and implement ``generate``, the shape
    methods, ``head``, ``loss`` and ``metric``; ``stem`` defaults to identity.

    Constructor keyword arguments are the task's sizes (sequence length,
    vocabulary, ...); ``get_task(name, **kwargs)`` passes them through.
    """

    name: ClassVar[str] = ""
    metric_name: ClassVar[str] = "accuracy"
    description: ClassVar[str] = ""
    #: Catalog rows this task implements (see ``archgram catalog``).
    refs: ClassVar[tuple[str, ...]] = ()
    #: Reference scores from the literature, in the units of ``metric``.
    published: ClassVar[dict[str, float]] = {}
    #: Share of train carved into validation when ``generate`` gives no
    #: validation split, and the fixed seed of that carving.
    val_fraction: ClassVar[float] = 0.1
    val_seed: ClassVar[int] = 0
    #: The default training recipe (see Recipe); every shipped task sets its own.
    recipe: ClassVar[Recipe] = Recipe()

    def __init__(self) -> None:
        self._cache: dict[int, TaskData] = {}

    # ---------------------------------------------------------------- data
    def data(self, seed: int = 0) -> TaskData:
        """Train/validation/test data for ``seed``; generated once per task object
        and seed. Validation is carved from train (``val_fraction``, ``val_seed``)
        when ``generate`` has none."""
        if seed not in self._cache:
            self._cache[seed] = self.generate(seed).with_validation(self.val_fraction, self.val_seed)
        return self._cache[seed]

    def generate(self, seed: int) -> TaskData:
        """The data set for ``seed``: train and test, and validation if the
        task has a split of its own (else ``x_val``/``y_val`` are None)."""
        raise NotImplementedError

    # -------------------------------------------------------------- shapes
    def body_input_shape(self, batch_size: int) -> Shape:
        """The shape the grammar's network receives: (B,C,H,W) or (B,N,D)."""
        raise NotImplementedError

    def output_target(self, batch_size: int) -> tuple | None:
        """Pattern the body's output must match (None entries are wildcards),
        or None if the head accepts any image or sequence output."""
        return None

    def check_body_output(self, shape: Shape) -> None:
        """Raise ShapeError when ``shape`` cannot feed this task's head."""
        target = self.output_target(shape[0])
        if len(shape) not in (3, 4):
            raise ShapeError(f"task '{self.name}': body output {fmt(shape)} is neither an image nor a sequence")
        if target is not None:
            ok = len(shape) == len(target) and all(t is None or t == s for s, t in zip(shape, target, strict=True))
            if not ok:
                want = "(" + ",".join("*" if t is None else str(t) for t in target) + ")"
                raise ShapeError(f"task '{self.name}' needs a body output like {want}, got {fmt(shape)}")

    # ------------------------------------------------------------- modules
    def stem(self, body_input_shape: Shape) -> nn.Module:
        """Raw inputs -> body input. Identity unless the task needs an embedding."""
        return nn.Identity()

    def head(self, body_output_shape: Shape) -> nn.Module:
        """Body output -> predictions (logits, values, pointer scores)."""
        raise NotImplementedError

    def teaching(self, model: nn.Module, y: torch.Tensor) -> contextlib.AbstractContextManager:
        """Context for one training forward of ``model`` on a batch with targets ``y``:
        a task whose head conditions on its own earlier outputs (a pointer decoder)
        feeds it the targets instead (teacher forcing). Default: nothing."""
        return contextlib.nullcontext()

    # ------------------------------------------------------------- scoring
    def loss(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def metric(self, pred: torch.Tensor, y: torch.Tensor) -> float:
        """Score on a whole split (higher is better), named ``metric_name``."""
        raise NotImplementedError

    def chance(self) -> float | None:
        """Score of a trivial predictor, when there is an obvious one."""
        return None

    def reference(self, seed: int = 0) -> dict[str, float]:
        """Published scores plus baselines computed on this task's data."""
        out = dict(self.published)
        c = self.chance()
        if c is not None:
            out.setdefault("chance", c)
        return out

    # -------------------------------------------------------------- views
    def reference_grammar(self) -> Path | None:
        """The task's reference architecture, a shipped deterministic grammar
        (``archgram/grammars/references/<name>.pcfg``), or None when it has none."""
        from archgram.grammar.files import SHIPPED

        path = SHIPPED / "references" / f"{self.name}.pcfg"
        return path if path.is_file() else None

    def config(self) -> dict[str, Any]:
        """The constructor arguments, for logs and the study store."""
        return {}

    def describe(self, batch_size: int = 32) -> dict[str, Any]:
        target = self.output_target(batch_size)
        return {
            "name": self.name,
            "body_input": fmt(self.body_input_shape(batch_size)),
            "output_target": None if target is None else "(" + ",".join("*" if t is None else str(t) for t in target) + ")",
            "metric": self.metric_name,
            "description": self.description,
            "config": self.config(),
            "published": dict(self.published),
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class GeneratedTask(Task):
    """A task whose examples a generator draws: ``n_train`` / ``n_val`` /
    ``n_test`` examples (``n_test`` defaults to ``n_val``) from the three streams
    of ``split_seeds(seed)``. Subclasses implement ``draw(n, rng, split)``;
    ``rng`` makes each stream's generator (a torch.Generator unless overridden);
    ``data_info`` is recorded with the data (``TaskData.info``)."""

    data_info: ClassVar[dict[str, Any]] = {}

    def __init__(self, n_train: int, n_val: int, n_test: int | None = None):
        super().__init__()
        self.n_train, self.n_val = n_train, n_val
        self.n_test = n_val if n_test is None else n_test

    def sizes(self) -> dict[str, int]:
        """The split sizes, as ``config`` records them."""
        return {"n_train": self.n_train, "n_val": self.n_val, "n_test": self.n_test}

    @staticmethod
    def rng(seed: int) -> Any:
        return seeded(seed)

    def draw(self, n: int, rng: Any, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` (inputs, targets) examples of ``split`` ('train', 'val' or 'test')."""
        raise NotImplementedError

    def generate(self, seed: int) -> TaskData:
        sizes = (self.n_train, self.n_val, self.n_test)
        parts = [self.draw(n, self.rng(s), split) for n, s, split in zip(sizes, split_seeds(seed), SPLITS, strict=True)]
        return TaskData(*parts[0], *parts[1], *parts[2], dict(self.data_info))


# ------------------------------------------------------------------ registry
def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-")


#: Every task by name; the first lookup imports archgram.tasks, which imports
#: each of its modules (a task module registers itself with ``@register_task``).
TASKS: Registry[type[Task]] = Registry("task", loader=lambda: importlib.import_module("archgram.tasks"),
                                       normalise=_normalise, same=same_class)
#: Class decorator: make a task available by its ``name`` (CLI and get_task).
register_task = TASKS.decorator()


def task_names() -> list[str]:
    return TASKS.names()


def all_tasks() -> list[type[Task]]:
    """Registered task classes, by name."""
    return TASKS.values()


def get_task(name: str | Task, **kwargs: Any) -> Task:
    """A task instance by name (``mnist1d``, ``digits``, ``mqar``, ...)."""
    if isinstance(name, Task):
        if kwargs:
            raise ArchgramError("get_task: keyword arguments apply to a task name, not a task object")
        return name
    cls = TASKS.get(name)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ArchgramError(f"task '{_normalise(name)}': bad arguments {kwargs}: {exc}") from None


# --------------------------------------------------------- shared helpers
def accuracy(logits: torch.Tensor, y: torch.Tensor, ignore_index: int | None = None) -> float:
    """Fraction of argmax predictions equal to ``y`` (class axis last)."""
    hit = logits.argmax(-1) == y
    if ignore_index is not None:
        keep = y != ignore_index
        return float(hit[keep].float().mean()) if keep.any() else math.nan
    return float(hit.float().mean())


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def split_seeds(seed: int) -> tuple[int, int, int]:
    """Generator seeds of a generated task's train, validation and test splits.
    Train and validation keep the streams earlier versions used (2s, 2s+1); the
    test stream is far from both for any seed a user would pick."""
    s = int(seed)
    return 2 * s, 2 * s + 1, 1_000_003 + s


def fixed_rng_state(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` without disturbing the global random/numpy RNG state
    (some generators, e.g. mnist1d's, seed the global RNGs)."""
    import random

    import numpy as np

    py, npy = random.getstate(), np.random.get_state()
    try:
        return fn()
    finally:
        random.setstate(py)
        np.random.set_state(npy)
