"""A task's reference architecture: trained once per task and recipe, cached in
the study, shown beside the search's best, and seeded into the search.

Every shipped task names a reference (``archgram/grammars/references/<task>.pcfg``,
a deterministic grammar: it samples exactly one network) and a recipe under
which that network trains well. A search is only worth its compute if it beats
that network, so ``archgram search`` trains the reference under the study's
recipe before the first trial, stores its validation score in the study
(attribute ``reference``), and prints the ratio best / reference. A recipe that
cannot train the reference (a NaN, or no better than chance) stops the search
with that message: it would otherwise be reported as a weak search.

Seeding: when the searched grammar can express the reference exactly
(``archgram.grammar.match.parse_network`` finds a derivation of it), the search
starts from it (``seed_derivation``).
"""
from __future__ import annotations

from typing import Any

from archgram.errors import ArchgramError
from archgram.grammar.derivation import Derivation
from archgram.grammar.model import Grammar, load_grammar
from archgram.tasks import Recipe, Task

#: the study user attribute holding the cached reference result
REFERENCE_KEY = "reference"
#: a reference must beat the task's chance score by this much to count as trained
MIN_PROGRESS = 0.02


class ReferenceError(ArchgramError):
    """The recipe cannot train the task's reference architecture."""


def reference_derivation(task: Task, batch_size: int) -> Derivation | None:
    """The task's reference network typed for ``batch_size``; None if the task has none."""
    path = task.reference_grammar()
    if path is None:
        return None
    grammar = load_grammar(path)
    d = grammar.sample(tuple(task.body_input_shape(batch_size)), seed=0, target=task.output_target(batch_size))
    d.stats["reference"] = task.name
    return d


def seed_derivation(task: Task, grammar: Grammar, batch_size: int) -> Derivation | None:
    """The reference as a derivation of ``grammar``, or None where ``grammar``
    cannot express it (then the search simply starts without it)."""
    from archgram.grammar.match import parse_network

    d = reference_derivation(task, batch_size)
    if d is None:
        return None
    try:
        seed = parse_network(grammar, d, tuple(task.body_input_shape(batch_size)))
    except ArchgramError:
        return None
    seed.stats["reference"] = task.name
    return seed


def evaluate_reference(task: Task, recipe: Recipe, *, seed: int = 0, train_options: dict[str, Any] | None = None,
                       threads: int | None = 1) -> dict[str, Any]:
    """Train the reference under ``recipe``; its record (validation score, recipe,
    hash, params, steps). Raises ReferenceError when it fails or makes no progress."""
    from archgram.search.evaluator import evaluate

    d = reference_derivation(task, recipe.batch_size)
    if d is None:
        raise ArchgramError(f"task '{task.name}' has no reference architecture")
    options = {**recipe.train_options(), **(train_options or {}), "threads": threads}
    result = evaluate(d, task, recipe.budget, seed=seed, batch_size=recipe.batch_size, lr=recipe.lr,
                      optimizer=recipe.optimizer, train_options=options)
    where = f"the reference architecture of '{task.name}' ({task.reference_grammar().name}) under recipe {_text(recipe)}"
    if not result.ok:
        raise ReferenceError(f"{where} did not train ({result.failure}: {result.message}); the recipe is wrong for "
                             "this task: fix --lr/--optimizer/--batch-size/--budget before searching")
    chance = task.chance()
    if chance is not None and result.score < chance + MIN_PROGRESS:
        raise ReferenceError(f"{where} made no progress (validation {task.metric_name} {result.score:.4f}, chance "
                             f"{chance:.4f}); the recipe cannot train it, so a search under it would say nothing: "
                             "fix --lr/--optimizer/--batch-size/--budget")
    return {"task": task.name, "grammar": task.reference_grammar().name, "hash": d.hash(), "recipe": recipe.to_dict(),
            "train_options": dict(train_options or {}), "seed": seed, "validation": result.score,
            "metric": task.metric_name, "params": result.params, "steps": result.steps}


def cached_reference(store, task: Task, recipe: Recipe, *, train_options: dict[str, Any] | None = None,
                     threads: int | None = 1) -> dict[str, Any] | None:
    """The study's reference record for this recipe, trained now if the study has
    none (or one for another recipe); None for a task without a reference."""
    if task.reference_grammar() is None:
        return None
    stored = store.meta.get(REFERENCE_KEY)
    if (isinstance(stored, dict) and stored.get("recipe") == recipe.to_dict() and stored.get("task") == task.name
            and stored.get("train_options", {}) == dict(train_options or {})):
        return stored
    record = evaluate_reference(task, recipe, train_options=train_options, threads=threads)
    store.study.set_user_attr(REFERENCE_KEY, record)
    return record


def ratio(best: float | None, reference: dict[str, Any] | None) -> float | None:
    """best / reference validation score, for metrics where higher is better and the
    reference is positive (accuracy); None otherwise (e.g. a negative error)."""
    if best is None or not reference or not isinstance(reference.get("validation"), (int, float)):
        return None
    ref = reference["validation"]
    return best / ref if ref > 0 and best >= 0 else None


def _text(recipe: Recipe) -> str:
    return (f"{recipe.optimizer} lr {recipe.lr:g}, batch {recipe.batch_size}, {recipe.budget}, "
            f"{recipe.schedule} schedule")
