"""Multi-task search in one run (FBNetV5, catalog S29).

One grammar, one search: every trial's derivation is trained and scored on each
task of the run, and the study keeps one objective per task (``score:<task>``)
next to ``score``, their mean, which single-objective strategies rank by.

Per-task architecture choices, by a naming convention and no new syntax: a rule
whose name ends in ``_per_task`` and whose alternative is one branching with one
arm per task, merged by ``add``::

    cell_per_task : clone(2) cell cell add       # arm i is task i's cell

Sampling and search treat it as any branching (so mutation, crossover and the
Optuna choice points reach every arm); ``for_task(d, i, n)`` keeps arm ``i``
only, so task ``i`` trains exactly its own architecture. A single-task run
keeps the sum of the arms.

Tasks whose body input shapes differ: the strategy samples for the first task's
shape, and each task retypes the derivation for its own shape; a derivation
that does not type-check for some task is a failed trial ('shape'), and a
grammar none of whose first samples fits every task is refused before the run.

Fidelity (S29): Paper: FBNetV5 searches architectures for several tasks in
one run: it trains one weight-sharing supernet and searches each task's
architecture distribution over it by differentiable sampling, so the search
cost is nearly independent of the number of tasks; archgram: one run, one
grammar, one objective per task, per-task architecture arms (`_per_task`
rules) each trained on its own task; differs: no supernet. Differentiable
sampling over shared weights needs one fixed graph of choice slots that every
candidate is a path of; a grammar's candidates do not form one (recursion and
`*k` vary the depth, shape-typed choices vary tensor widths, and which choices
exist depends on earlier ones). Each candidate therefore trains from its
initialisation on every task (successive halving, ``--rungs``, cuts the cost
of weak ones; weight inheritance is not applied in multi-task runs); a user
keeps the per-task choices but pays one training per candidate per task.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from archgram.errors import ArchgramError, DerivationError
from archgram.grammar.derivation import BranchNode, Derivation, Node, RuleNode, walk

PER_TASK = "_per_task"
#: how many first samples the pre-run check tries
PRECHECK_SEEDS = 8
#: rows implemented here, for ``archgram catalog``
CATALOG_REFS = {"search:multitask": ("S29",)}


def score_key(task: str) -> str:
    """The objective / record attribute holding one task's score."""
    return f"score:{task}"


@dataclass(frozen=True)
class TaskSet:
    """The tasks of one run, in order (task ``i`` takes arm ``i`` of per-task rules)."""

    names: tuple[str, ...]

    @classmethod
    def parse(cls, items: Sequence[str] | str | None) -> TaskSet:
        """``["digits", "mnist1d"]`` or ``"digits,mnist1d"`` (repeated options, commas or both)."""
        from archgram.tasks import get_task

        if isinstance(items, str):
            items = [items]
        names: list[str] = []
        for item in items or []:
            for part in str(item).split(","):
                if part.strip():
                    names.append(get_task(part.strip()).name)  # unknown task: did-you-mean
        if not names:
            raise ArchgramError("--task: name at least one task (e.g. --task digits --task mnist1d)")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ArchgramError(f"--task: {', '.join(twice)} given twice; each task of a multi-task run appears once")
        return cls(tuple(names))

    @property
    def multi(self) -> bool:
        return len(self.names) > 1

    @property
    def label(self) -> str:
        """``digits+mnist1d``: the default study name and the display title."""
        return "+".join(self.names)

    def objectives(self, base: Sequence[str]) -> tuple[str, ...]:
        """``score``, one ``score:<task>`` per task, then the other objectives of ``base``."""
        if not self.multi:
            return tuple(base)
        return ("score",) + tuple(score_key(t) for t in self.names) + tuple(o for o in base if o != "score")


# ------------------------------------------------------------ derivations
def _select(node: Node, index: int, n_tasks: int, trail: str) -> Node:
    if isinstance(node, RuleNode):
        children = node.children
        if node.symbol.endswith(PER_TASK):
            if len(children) != 1 or not isinstance(children[0], BranchNode):
                raise DerivationError(f"{trail}{node.symbol}: a per-task rule must be one branching "
                                      f"(e.g. {node.symbol} : clone({n_tasks}) arm arm add)")
            arms = children[0].arms
            if len(arms) != n_tasks:
                raise DerivationError(f"{trail}{node.symbol}: {len(arms)} arms for {n_tasks} tasks; a per-task rule "
                                      f"needs one arm per task (clone({n_tasks}))")
            children = [arms[index]]
        path = f"{trail}{node.symbol}/"
        return RuleNode(node.symbol, node.alt, [_select(c, index, n_tasks, path) for c in children])
    if isinstance(node, BranchNode):
        return BranchNode(_select(node.open, index, n_tasks, trail),
                          [_select(a, index, n_tasks, trail) for a in node.arms],
                          _select(node.close, index, n_tasks, trail))
    return node


def has_per_task(derivation: Derivation) -> bool:
    return any(isinstance(n, RuleNode) and n.symbol.endswith(PER_TASK) for n in walk(derivation.root))


def for_task(derivation: Derivation, index: int, n_tasks: int) -> Derivation:
    """The derivation task ``index`` of ``n_tasks`` trains: each per-task rule keeps its arm
    ``index``. Raises DerivationError for a per-task rule that is not one branching with
    ``n_tasks`` arms."""
    if not 0 <= index < n_tasks:
        raise ArchgramError(f"task index {index} is outside the run's {n_tasks} tasks")
    d = derivation.copy()
    if n_tasks > 1 and has_per_task(d):
        d.root = _select(d.root, index, n_tasks, "")
    return d


def retype(derivation: Derivation, task: Any, batch_size: int) -> Derivation:
    """``derivation`` typed for ``task``'s body input; raises ShapeError when it does not fit."""
    from archgram.errors import ShapeError

    d = derivation.copy()
    d.input_shape = tuple(task.body_input_shape(batch_size))
    try:
        out = d.infer_shapes()
    except ArchgramError as exc:
        raise ShapeError(f"does not type-check for task '{task.name}' input {d.input_shape}: {exc}") from None
    task.check_body_output(tuple(out))
    return d


def precheck(grammar: Any, tasks: TaskSet, batch_size: int, seeds: int = PRECHECK_SEEDS) -> None:
    """Refuse a multi-task run none of whose first samples fits every task (each trial would fail)."""
    from archgram.tasks import get_task

    objs = [get_task(n) for n in tasks.names]
    first = objs[0]
    shape, target = first.body_input_shape(batch_size), first.output_target(batch_size)
    errors: list[str] = []
    for seed in range(seeds):
        try:
            d = grammar.sample(shape, seed=seed, target=target)
            for i, task in enumerate(objs):
                retype(for_task(d, i, len(objs)), task, batch_size)
            return
        except ArchgramError as exc:
            errors.append(str(exc).splitlines()[0])
    raise ArchgramError(f"no architecture of grammar '{grammar.name}' sampled for task '{first.name}' "
                        f"(seeds 0..{seeds - 1}) runs on every task of {tasks.label}; first error: {errors[0][:300]}")


# --------------------------------------------------------------- evaluate
def evaluate_tasks(derivation: Derivation, tasks: Sequence[Any], budget: Any, timeout: float | None = None,
                   **kwargs: Any):
    """Train and score ``derivation`` on each task (``kwargs`` go to ``evaluate``);
    ``timeout`` caps the whole trial: each task gets what is left of it.

    One TrialResult: ok when every task is; ``score`` the mean of the task scores,
    ``params``/``flops``/``latency_ms`` the sums (every task's model deployed), and
    per task ``score:<task>``, ``params:<task>``, ``latency_ms:<task>`` in ``extras``.
    The first failing task fails the trial with its reason, named."""
    from archgram.search.evaluator import evaluate
    from archgram.search.trial_result import TrialResult
    from archgram.tasks import get_task

    tasks = [get_task(t) if isinstance(t, str) else t for t in tasks]
    names = [t.name for t in tasks]
    batch_size = kwargs.pop("batch_size", None) or derivation.input_shape[0]
    total = TrialResult(status="ok", metric="mean " + "/".join(sorted({t.metric_name for t in tasks})),
                        task="+".join(names), arch_hash=derivation.hash(), seed=kwargs.get("seed", 0),
                        budget=str(budget), batch_size=batch_size)
    results = []
    deadline = None if timeout is None else time.perf_counter() + timeout
    for i, task in enumerate(tasks):
        try:
            d = for_task(derivation, i, len(tasks))
        except ArchgramError as exc:
            total.status, total.failure, total.message = "failed", "shape", f"task {task.name}: {exc}"
            return total
        if deadline is not None:
            kwargs["timeout"] = max(deadline - time.perf_counter(), 1e-3)
        r = evaluate(d, task, budget, batch_size=batch_size, **kwargs)
        results.append(r)
        total.train_seconds += r.train_seconds
        total.total_seconds += r.total_seconds
        total.steps += r.steps
        if not r.ok:
            total.status, total.failure, total.message = "failed", r.failure, f"task {task.name}: {r.message}"
            return total
        total.extras.update({score_key(task.name): r.score, f"params:{task.name}": r.params,
                             f"latency_ms:{task.name}": r.latency_ms, f"metric:{task.name}": r.metric})
    total.score = statistics.fmean(r.score for r in results)
    total.params = sum(r.params for r in results)
    total.flops = sum(r.flops for r in results)
    total.latency_ms = sum(r.latency_ms for r in results)
    total.train_loss = statistics.fmean(r.train_loss for r in results)
    total.val_loss = statistics.fmean(r.val_loss for r in results)
    total.device = results[0].device
    return total
