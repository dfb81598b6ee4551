"""Evaluator: train one derivation on one task under a budget and score it.

``evaluate`` is the one place where an architecture meets data. It builds
stem -> network -> head, trains with AdamW (cosine or constant learning rate)
until the budget (steps, seconds or epochs, whichever ends first) is spent,
scores the validation split and measures parameters, FLOPs and latency.

A bad architecture is a *result*, never a crash: a derivation that does not
type-check for the task, a NaN/inf loss, running out of memory, running past the
wall-clock cap and any other exception inside model code come back as a
``TrialResult`` with ``status='failed'``, the failure kind and the message.
Mistakes of the caller (an unknown task, an unreadable budget, a bad option)
still raise ``ArchgramError`` at once, before anything is trained.

Under a seed the run is deterministic on the CPU: weights are initialised and
batches drawn from generators seeded by ``seed`` (the global RNG state is left
as it was), so the same call gives exactly the same score.
"""
from __future__ import annotations

import collections
import contextlib
import gc
import math
import re
import signal
import statistics
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import nn

from archgram.errors import ArchgramError, CompileError, DerivationError, SamplingError, ShapeError
from archgram.grammar.derivation import Derivation
from archgram.search.training.options import OPTIMIZERS, TrainOptions, check_training
from archgram.tasks import Task, get_task
from archgram.tasks.heads import module_flops

FAILURES = ("shape", "nan", "oom", "timeout", "error")
MESSAGE_CHARS = 600


# ------------------------------------------------------------------ budget
_UNITS = {
    "": ("steps", 1),
    "step": ("steps", 1), "steps": ("steps", 1),
    "s": ("seconds", 1), "sec": ("seconds", 1), "secs": ("seconds", 1), "second": ("seconds", 1), "seconds": ("seconds", 1),
    "m": ("seconds", 60), "min": ("seconds", 60), "mins": ("seconds", 60), "minute": ("seconds", 60), "minutes": ("seconds", 60),
    "h": ("seconds", 3600), "hour": ("seconds", 3600), "hours": ("seconds", 3600),
    "ep": ("epochs", 1), "epoch": ("epochs", 1), "epochs": ("epochs", 1),
}
_PART = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(?:e([+-]?\d+))?\s*([a-z]*)$")


@dataclass(frozen=True)
class Budget:
    """How long to train: training stops at whichever set limit comes first."""

    steps: int | None = None
    seconds: float | None = None
    epochs: float | None = None

    def __post_init__(self) -> None:
        if self.steps is None and self.seconds is None and self.epochs is None:
            raise ArchgramError("a budget needs steps, seconds or epochs")
        for name in ("steps", "seconds", "epochs"):
            v = getattr(self, name)
            if v is not None and not (v > 0 and math.isfinite(v)):
                raise ArchgramError(f"budget {name} must be positive, got {v}")
        if self.steps is not None and int(self.steps) != self.steps:
            raise ArchgramError(f"budget steps must be a whole number, got {self.steps}")

    @classmethod
    def parse(cls, text: str | int | float | Budget) -> Budget:
        """``"500steps"``, ``"200"`` (steps), ``"60s"``, ``"2min"``, ``"2epochs"``,
        or several joined by commas (``"1000steps,60s"``: whichever ends first)."""
        if isinstance(text, Budget):
            return text
        if isinstance(text, bool):
            raise ArchgramError(f"budget {text!r} is not a number of steps")
        if isinstance(text, int):
            return cls(steps=text)
        if isinstance(text, float):
            raise ArchgramError(f"budget {text!r}: say '{text:g}s' for seconds or '{text:g}epochs' for epochs")
        values: dict[str, float] = {}
        parts = [p.strip() for p in str(text).strip().lower().replace("+", ",").split(",")]
        for part in parts:
            m = _PART.match(part)
            unit = _UNITS.get(m.group(3)) if m else None
            if unit is None:
                raise ArchgramError(
                    f"cannot read budget {text!r} (part {part!r}); write e.g. '500steps', '200' (steps), "
                    "'60s', '5min' or '2epochs', several joined by commas"
                )
            name, scale = unit
            if name in values:
                raise ArchgramError(f"budget {text!r} gives {name} twice")
            value = float(m.group(1)) * (10 ** int(m.group(2)) if m.group(2) else 1) * scale
            if name == "steps":
                if value != int(value):
                    raise ArchgramError(f"budget {text!r}: steps must be a whole number")
                value = int(value)
            values[name] = value
        return cls(**values)

    def total_steps(self, steps_per_epoch: int) -> int | None:
        """Steps the run will take, or None when only seconds limit it."""
        limits = []
        if self.steps is not None:
            limits.append(int(self.steps))
        if self.epochs is not None:
            limits.append(max(1, math.ceil(self.epochs * steps_per_epoch)))
        return min(limits) if limits else None

    def __str__(self) -> str:
        parts = []
        if self.steps is not None:
            parts.append(f"{self.steps}steps")
        if self.seconds is not None:
            parts.append(f"{self.seconds:g}s")
        if self.epochs is not None:
            parts.append(f"{self.epochs:g}epochs")
        return ",".join(parts)


# ------------------------------------------------------------------ result
@dataclass
class TrialResult:
    """What one evaluation produced; ``failure`` is set exactly when status is 'failed'."""

    status: str  # 'ok' | 'failed'
    score: float | None = None
    metric: str = ""
    params: int | None = None
    flops: int | None = None  # forward FLOPs of one batch (body + stem + head)
    latency_ms: float | None = None  # median forward of one batch, eval mode
    train_seconds: float = 0.0
    steps: int = 0
    failure: str | None = None  # one of FAILURES
    message: str = ""
    task: str = ""
    arch_hash: str = ""
    seed: int = 0
    device: str = "cpu"
    budget: str = ""
    batch_size: int = 0
    epochs: float = 0.0
    train_loss: float | None = None  # mean loss over the last 10% of steps
    val_loss: float | None = None
    total_seconds: float = 0.0  # wall clock of the whole call
    #: CPU time of the whole call (this process; one thread per trial makes it the
    #: trial's compute whatever else loads the machine)
    cpu_seconds: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialResult:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def summary(self) -> str:
        if self.ok:
            return (f"{self.metric}={self.score:.4f} params={self.params:,} flops={self.flops:.3g} "
                    f"latency={self.latency_ms:.2f}ms steps={self.steps} ({self.train_seconds:.1f}s)")
        return f"failed ({self.failure}): {self.message}"


# --------------------------------------------------------------- options
def auxiliary_loss(model: nn.Module) -> torch.Tensor | float:
    """Sum of the ``aux_loss`` tensors ops stored during the last forward. Only
    instance attributes count, so a wrapper exposing its inner module's loss as a
    property is not counted twice."""
    total: torch.Tensor | float = 0.0
    for m in model.modules():
        aux = m.__dict__.get("aux_loss")
        if isinstance(aux, torch.Tensor) and aux.requires_grad:
            total = total + aux
    return total


# ---------------------------------------------------------------- failures
class _Timeout(Exception):
    """The wall-clock cap passed."""


class _NonFinite(Exception):
    """A loss or prediction became NaN or infinite."""


def classify(exc: BaseException) -> str:
    """The failure kind of an exception raised while evaluating a model."""
    if isinstance(exc, _Timeout):
        return "timeout"
    if isinstance(exc, (ShapeError, CompileError, DerivationError, SamplingError)):
        return "shape"
    if isinstance(exc, _NonFinite):
        return "nan"
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if isinstance(exc, MemoryError) or (oom is not None and isinstance(exc, oom)):
        return "oom"
    if isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower():
        return "oom"
    return "error"


def _message(exc: BaseException, kind: str) -> str:
    text = str(exc).strip() or type(exc).__name__
    if kind == "error":
        text = f"{type(exc).__name__}: {text}"
        tb = traceback.extract_tb(exc.__traceback__)
        if tb:
            last = tb[-1]
            text += f" (at {last.filename}:{last.lineno} in {last.name})"
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 3] + "..."


@contextlib.contextmanager
def _alarm(deadline: float | None):
    """Hard stop: raise _Timeout in the main thread when ``deadline`` passes, even
    inside a long forward. Only where SIGALRM is free (main thread, no handler or
    timer installed by someone else); the training loop also checks the clock."""
    usable = (
        deadline is not None
        and hasattr(signal, "SIGALRM")
        and threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, None)
        and signal.getitimer(signal.ITIMER_REAL)[0] == 0
    )
    if not usable:
        yield
        return

    def fire(signum, frame):
        raise _Timeout("wall-clock cap reached (interrupted)")

    previous = signal.signal(signal.SIGALRM, fire)
    try:
        signal.setitimer(signal.ITIMER_REAL, max(deadline - time.perf_counter(), 1e-3))
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def _threads(n: int | None):
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device, deterministic: bool):
    """Seed torch for this run only; the caller's RNG state is restored afterwards."""
    devices = [device.index or 0] if device.type == "cuda" else []
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        if device.type == "cuda" and deterministic:
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        try:
            yield
        finally:
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


# ------------------------------------------------------------------ model
class TaskModel(nn.Module):
    """stem -> compiled network (body + task head)."""

    def __init__(self, stem: nn.Module, network: nn.Module):
        super().__init__()
        self.stem = stem
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(self.stem(x))


def build_model(derivation: Derivation, task: Task, batch_size: int) -> tuple[TaskModel, Derivation, int]:
    """(model, derivation typed for the task's input, forward FLOPs of one batch).
    Raises ShapeError/CompileError when the derivation does not fit the task."""
    import archgram
    from archgram.grammar.edit import cost

    shape = tuple(task.body_input_shape(batch_size))
    d = derivation.copy()
    d.input_shape = shape
    try:
        out_shape = d.infer_shapes()
    except (ShapeError, DerivationError) as exc:
        raise ShapeError(f"derivation {derivation.hash()} does not type-check for task '{task.name}' input {shape}: {exc}") from None
    task.check_body_output(tuple(out_shape))
    stem = task.stem(shape)
    head = task.head(tuple(out_shape))
    network = archgram.compile(d, head=head)
    flops = int(cost(d.root)[2]) + module_flops(stem) + module_flops(head)
    return TaskModel(stem, network), d, flops


def _pad(x: torch.Tensor, size: int) -> torch.Tensor:
    """Fill a last partial batch up to ``size`` rows (the body was typed for that batch)."""
    if len(x) == size:
        return x
    reps = math.ceil(size / len(x))
    return torch.cat([x] * reps)[:size] if reps > 1 else torch.cat([x, x[: size - len(x)]])


@torch.no_grad()
def score_split(model: nn.Module, task: Task, data, split: str, batch_size: int,
                check: Callable[[], None] | None = None) -> tuple[float, float]:
    """(metric, loss) of ``model`` on one split of ``data`` ('val' during search;
    'test' once, for the final pick), in batches of the size the body was typed
    for. Non-finite predictions or scores raise, so a broken model never scores."""
    model.eval()
    x, y = data.split(split)
    preds = []
    for i in range(0, len(x), batch_size):
        if check is not None:
            check()
        xb = x[i:i + batch_size]
        preds.append(model(_pad(xb, batch_size))[: len(xb)].float().cpu())
    pred = torch.cat(preds)
    name = {"val": "validation"}.get(split, split)
    if not torch.isfinite(pred).all():
        raise _NonFinite(f"{name} predictions contain NaN or inf")
    y = y.cpu()
    score = float(task.metric(pred, y))
    if not math.isfinite(score):
        raise _NonFinite(f"{name} {task.metric_name} is {score}")
    return score, float(task.loss(pred, y))


def train_batches(data, batch_size: int, gen: torch.Generator, device: torch.device):
    """Training batches (x, y) without end: each epoch a permutation drawn from
    ``gen``, cut into full batches (the body is typed for ``batch_size``). Inputs
    that stay on disk (``loader``: data larger than memory) are read ahead by a
    DataLoader's worker processes; tensors are indexed in place."""
    n = data.n_train

    def index_batches():
        while True:
            perm = torch.randperm(n, generator=gen)
            for k in range(n // batch_size):
                yield perm[k * batch_size:(k + 1) * batch_size]

    loader = getattr(data.x_train, "loader", None)
    if loader is not None:
        pending: collections.deque = collections.deque()

        def recorded():
            for idx in index_batches():
                pending.append(idx)
                yield idx

        stream = loader(recorded())
        try:
            for xb in stream:
                idx = pending.popleft()
                yield xb.to(device), data.y_train[idx].to(device)
        finally:
            del stream  # shuts the loader's workers down
    else:
        for idx in index_batches():
            idx = idx.to(device)
            yield data.x_train[idx], data.y_train[idx]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------- evaluate
def evaluate(
    derivation: Derivation,
    task: Task | str,
    budget: Budget | str | int,
    seed: int = 0,
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    lr: float = 1e-3,
    optimizer: str = "adamw",
    train_options: dict[str, Any] | None = None,
    *,
    timeout: float | None = None,
    on_step: Callable[[int, float], Any] | None = None,
    data_seed: int = 0,
    weights: str | None = None,
    inherit_from: tuple[str, Derivation] | None = None,
) -> TrialResult:
    """Train ``derivation`` on ``task`` within ``budget`` and score it on the val split.

    ``batch_size`` defaults to the batch the derivation was sampled for.
    ``timeout`` is the hard wall-clock cap of the whole call (build, train,
    score); it defaults to 3x the seconds budget plus 10 s, and to none when the
    budget has no seconds. ``on_step(step, loss)`` is called after every
    training step; returning True stops training early (a pruned trial is still
    scored). ``data_seed`` picks the generated data set (kept fixed across
    trials so their scores compare); ``seed`` drives initialisation and batches.
    ``weights``: a path where a successful run keeps its trained state dict
    (safetensors; ``archgram export`` reads it). ``inherit_from``: (weights
    file, derivation) of a trained parent; the model starts from its weights
    for every subtree it shares with it (``archgram.search.inherit``).
    """
    _warm_up()
    started, cpu_started = time.perf_counter(), time.process_time()
    task = get_task(task) if isinstance(task, str) else task
    budget = Budget.parse(budget)
    opts = TrainOptions.from_dict(train_options)
    check_training(lr, optimizer)
    batch_size = int(batch_size or derivation.input_shape[0])
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ArchgramError("device 'cuda' requested but CUDA is not available")
    data = task.data(data_seed)
    if batch_size < 1 or batch_size > data.n_train:
        raise ArchgramError(f"batch size {batch_size} does not fit the {data.n_train} training examples of '{task.name}'")
    if timeout is None and budget.seconds is not None:
        timeout = 3 * budget.seconds + 10
    deadline = started + timeout if timeout is not None else None

    result = TrialResult(status="ok", metric=task.metric_name, task=task.name, seed=seed, device=str(device),
                         budget=str(budget), batch_size=batch_size)
    try:
        result.arch_hash = derivation.hash()
    except Exception as exc:  # a derivation naming unknown ops still gets a result
        result.arch_hash = ""
        result.message = str(exc)
    run = _Run(derivation, task, budget, seed, device, batch_size, lr, optimizer, opts, deadline, on_step, data, result)
    run.inherit_from = inherit_from
    try:
        with _alarm(deadline), _threads(opts.threads), _seeded(seed, device, opts.deterministic):
            run.execute()
            if weights is not None:
                from archgram.search.weights import save_weights

                meta = {"hash": result.arch_hash, "score": result.score, "task": task.name, "seed": seed}
                problem = save_weights(run.model, weights, meta)
                if problem:
                    result.extras["weights_error"] = problem
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        kind = classify(exc)
        result.status, result.failure, result.message = "failed", kind, _message(exc, kind)
        if kind == "timeout" and timeout is not None:
            result.message = f"ran past the {timeout:g}s wall-clock cap ({result.message}; {result.steps} steps done)"
        result.score = None
    finally:
        run.release()
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    result.total_seconds = time.perf_counter() - started
    result.cpu_seconds = time.process_time() - cpu_started
    return result


_WARM = False


def _warm_up() -> None:
    """The first optimizer built in a process imports torch._dynamo (seconds);
    do that before the clock starts so it is not charged to the first trial."""
    global _WARM
    if not _WARM:
        torch.optim.AdamW([nn.Parameter(torch.zeros(1))])
        _WARM = True


class _Run:
    """The state of one evaluation, so a failure at any point can be cleaned up."""

    def __init__(self, derivation, task, budget, seed, device, batch_size, lr, optimizer, opts, deadline, on_step,
                 data, result):
        self.derivation, self.task, self.budget, self.seed = derivation, task, budget, seed
        self.device, self.bs, self.lr, self.optimizer, self.opts = device, batch_size, lr, optimizer, opts
        self.deadline, self.on_step, self.data, self.result = deadline, on_step, data, result
        self.model: nn.Module | None = None
        self.opt: torch.optim.Optimizer | None = None
        self.inherit_from: tuple[str, Derivation] | None = None

    def check_clock(self) -> None:
        if self.deadline is not None and time.perf_counter() > self.deadline:
            raise _Timeout("wall-clock cap reached")

    def release(self) -> None:
        if getattr(self, "batches", None) is not None:
            self.batches.close()  # stops a data loader's worker processes
        self.model = self.opt = self.batches = None
        self.data = None

    def execute(self) -> None:
        r, task = self.result, self.task
        model, _, flops = build_model(self.derivation, task, self.bs)
        r.params = sum(p.numel() for p in model.parameters())
        r.flops = flops
        if self.inherit_from is not None:
            self.inherit(model)
        self.check_clock()
        self.model = model = model.to(self.device)
        data = self.data.to(self.device)
        self.train(model, data)
        self.score(model, data)
        self.latency(model, data)

    def inherit(self, model: nn.Module) -> None:
        """Start from the parent's trained weights where the child shares its subtrees."""
        from archgram.search.inherit import inherit
        from archgram.search.weights import load_weights

        path, parent = self.inherit_from
        try:
            state = load_weights(path)
        except (OSError, ValueError) as exc:  # the parent's file is gone: train from scratch, say so
            self.result.extras["inherit_error"] = f"{type(exc).__name__}: {exc}"
            return
        self.result.extras["inherited"] = inherit(model, state, parent, self.derivation)

    def train(self, model: nn.Module, data) -> None:
        r, task, bs, opts = self.result, self.task, self.bs, self.opts
        n = data.n_train
        per_epoch = n // bs  # the last partial batch is dropped: the body is typed for ``bs``
        total = self.budget.total_steps(per_epoch)
        seconds = self.budget.seconds
        params = [p for p in model.parameters() if p.requires_grad]
        self.opt = opt = OPTIMIZERS[self.optimizer](params, self.lr, opts) if params else None
        gen = torch.Generator().manual_seed(self.seed)
        losses: list[float] = []
        curriculum = [m for m in model.modules() if callable(getattr(m, "set_progress", None))]
        model.train()
        t0 = time.perf_counter()
        step = 0
        self.batches = batches = train_batches(data, bs, gen, self.device)
        while True:
            elapsed = time.perf_counter() - t0
            if step > 0 and ((total is not None and step >= total) or (seconds is not None and elapsed >= seconds)):
                break
            self.check_clock()
            xb, yb = next(batches)
            progress = max(step / total if total else 0.0, elapsed / seconds if seconds else 0.0)
            if opt is not None:
                for group in opt.param_groups:
                    group["lr"] = self.lr * opts.factor(progress)
            for m in curriculum:  # training curricula, e.g. progressive masking (S08)
                m.set_progress(round(progress * 1000), 1000)
            with task.teaching(model, yb):  # teacher forcing, for heads that read their own outputs
                if opts.adversarial:  # AT / VAT on the embedding (S74, S75)
                    from archgram.search.training import training_loss

                    loss = training_loss(model, task, xb, yb, opts)
                else:
                    loss = task.loss(model(xb), yb)
            if opts.aux_weight:
                loss = loss + opts.aux_weight * auxiliary_loss(model)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise _NonFinite(f"training loss became {value} at step {step}")
            if opt is not None:
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if opts.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, opts.grad_clip)
                opt.step()
            step += 1
            losses.append(value)
            r.steps, r.train_seconds, r.epochs = step, time.perf_counter() - t0, step / per_epoch
            if self.on_step is not None and self.on_step(step, value) is True:
                r.extras["stopped_early"] = True
                break
        _sync(self.device)
        r.train_seconds = time.perf_counter() - t0
        tail = losses[-max(1, len(losses) // 10):]
        r.train_loss = sum(tail) / len(tail)

    def score(self, model: nn.Module, data) -> None:
        r = self.result
        r.score, r.val_loss = score_split(model, self.task, data, "val", self.bs, self.check_clock)

    @torch.no_grad()
    def latency(self, model: nn.Module, data) -> None:
        model.eval()
        xb = _pad(data.x_val[: self.bs], self.bs)  # any split would do: latency only
        times = []
        for i in range(2 + self.opts.latency_repeats):
            self.check_clock()
            _sync(self.device)
            t = time.perf_counter()
            model(xb)
            _sync(self.device)
            if i >= 2:  # two warm-up calls
                times.append((time.perf_counter() - t) * 1000)
        self.result.latency_ms = statistics.median(times) if times else None
