"""Task recipes and reference architectures: every shipped task declares both; the
reference is trained once per recipe and cached in the study; a recipe that cannot
train it stops with a message; the search starts from it where the grammar can
express it."""
from __future__ import annotations

import dataclasses

import pytest

import archgram
from archgram.grammar.match import network_of
from archgram.search import reference_arch as ref_mod
from archgram.search.config import SearchConfig, resolve_recipe
from archgram.search.reference_arch import ReferenceError, cached_reference, ratio, seed_derivation
from archgram.search.store import StudyStore
from archgram.search.strategies import get_strategy
from archgram.tasks import Recipe, all_tasks, get_task


@pytest.mark.parametrize("cls", all_tasks(), ids=lambda c: c.name)
def test_every_task_has_a_recipe_and_a_deterministic_reference_that_types(cls):
    task = cls()
    assert cls.recipe is not Recipe() and cls.recipe != Recipe(), "the task keeps the base recipe"
    path = task.reference_grammar()
    assert path is not None and path.name == f"{task.name}.pcfg"
    g = archgram.load_grammar(path)
    bs = cls.recipe.batch_size
    shape = task.body_input_shape(bs)
    a, b = (g.sample(shape, seed=s, target=task.output_target(bs)) for s in (0, 7))
    assert a.hash() == b.hash()  # deterministic: one architecture
    task.check_body_output(tuple(a.infer_shapes()))


def test_recipe_fields_the_user_sets_win_and_the_rest_come_from_the_task():
    digits = get_task("digits")
    config = SearchConfig(grammar="einspace", task="digits", study="x.db", lr=0.5, train_options={"warmup": 0.0})
    resolved, recipe = resolve_recipe(config, digits)
    want = digits.recipe
    assert (resolved.lr, resolved.optimizer, resolved.batch_size, resolved.budget) == (0.5, want.optimizer,
                                                                                        want.batch_size, want.budget)
    assert resolved.train_options == {"schedule": want.schedule, "warmup": 0.0}
    assert recipe == want.override(lr=0.5, warmup=0.0)
    assert resolved.trial_seconds == want.trial_seconds == 30.0  # digits caps a sampled giant
    capped, _ = resolve_recipe(dataclasses.replace(config, trial_seconds=5.0), digits)
    assert capped.trial_seconds == 5.0


def test_a_trial_past_the_recipes_wall_clock_cap_fails_as_a_timeout(monkeypatch):
    from archgram.search import worker

    seen = {}
    ray_tune = pytest.importorskip("ray.tune")

    monkeypatch.setattr(ray_tune, "report", lambda metrics: seen.update(metrics))
    d = archgram.load_grammar("references/digits").sample((32, 1, 8, 8), seed=0)
    config = {"derivation": d.to_json(indent=None), "task": "digits", "budget": "2000steps", "seed": 0,
              "batch_size": 32, "lr": 1e-3, "optimizer": "adam", "timeout": 0.5, "cpus": 1}
    worker.trainable(config, get_task("digits"))
    assert seen["status"] == "failed" and seen["failure"] == "timeout"


def _quick(task, **kw):
    return dataclasses.replace(task.recipe, budget="15steps", **kw)


def test_reference_is_trained_once_per_recipe_and_cached_in_the_study(tmp_path, monkeypatch):
    digits = get_task("digits")
    calls = []

    def fake(task, recipe, **kw):  # training itself is tested below and in test_evaluator
        calls.append(recipe)
        return {"task": task.name, "recipe": recipe.to_dict(), "train_options": dict(kw.get("train_options") or {}),
                "validation": 0.5 + 0.1 * len(calls)}

    monkeypatch.setattr(ref_mod, "evaluate_reference", fake)
    store = StudyStore(tmp_path / "s.db", meta={"task": "digits"})
    first = cached_reference(store, digits, _quick(digits))
    assert first["validation"] == pytest.approx(0.6) and first["recipe"]["budget"] == "15steps"
    again = cached_reference(StudyStore(tmp_path / "s.db"), digits, _quick(digits))
    assert again == first and len(calls) == 1  # read back from the study file
    other = cached_reference(store, digits, _quick(digits, lr=1e-3))  # another recipe: trained again
    assert len(calls) == 2 and other["recipe"]["lr"] == 1e-3
    assert StudyStore(tmp_path / "s.db").meta["reference"] == other


@pytest.mark.parametrize("lr, why", [(1e9, "did not train"), (1e-12, "made no progress")])
def test_a_recipe_that_cannot_train_the_reference_stops_with_a_message(lr, why):
    digits = get_task("digits")
    with pytest.raises(ReferenceError, match=why):
        ref_mod.evaluate_reference(digits, dataclasses.replace(digits.recipe, budget="3steps", lr=lr,
                                                               optimizer="sgd", warmup=0.0))


def test_the_reference_seeds_a_grammar_that_can_express_it_and_only_such_a_grammar():
    digits = get_task("digits")
    reference = ref_mod.reference_derivation(digits, 32)
    seed = seed_derivation(digits, archgram.load_grammar("einspace"), 32)
    assert seed is not None and network_of(seed) == network_of(reference)  # the same network, einspace's rules
    assert seed_derivation(digits, archgram.load_grammar("mixers"), 32) is None


def test_a_queued_seed_is_asked_first_and_not_again_after_a_replay():
    g = archgram.load_grammar("einspace")
    digits = get_task("digits")
    seed = seed_derivation(digits, g, 32)
    strategy = get_strategy("random")(g, (32, 1, 8, 8), seed=0)
    strategy.enqueue(seed, origin="reference")
    first = strategy.ask()
    assert first.origin == "reference" and first.derivation.hash() == seed.hash()
    resumed = get_strategy("random")(g, (32, 1, 8, 8), seed=0)
    resumed.enqueue(seed, origin="reference")
    resumed.replay([(seed, 0.9)])
    assert resumed.ask().origin != "reference"


def test_ratio_is_best_over_reference_only_for_positive_scores():
    assert ratio(0.9, {"validation": 0.6}) == pytest.approx(1.5)
    assert ratio(-0.1, {"validation": -0.2}) is None and ratio(None, {"validation": 0.5}) is None


def test_evolution_keeps_a_seed_in_its_population_while_other_members_age_out():
    g = archgram.load_grammar("einspace")
    digits = get_task("digits")
    seed = seed_derivation(digits, g, 32)
    evo = get_strategy("evolution")(g, (32, 1, 8, 8), seed=0, population=3, tournament=3)
    evo.enqueue(seed, origin="reference")
    told = [evo.ask() for _ in range(6)]
    assert told[0].origin == "reference"
    for i, p in enumerate(told):
        evo.tell(p.derivation, 0.9 if i == 0 else 0.1 * i)
    members = [d.hash() for d, _ in evo.population]
    assert seed.hash() in members and len(members) == 3
    assert members[1:] == [p.derivation.hash() for p in told[4:]]  # the others age as usual
    # the seed is the best member: it is the parent whenever a tournament draws it
    parents = [evo.ask().parents[0] for _ in range(8)]
    assert parents.count(seed.hash()) >= 4  # drawn with probability 1 - (2/3)^3 = 0.70
    # a resumed search rebuilds the same population
    again = get_strategy("evolution")(g, (32, 1, 8, 8), seed=0, population=3, tournament=3)
    again.enqueue(seed, origin="reference")
    again.replay([(p.derivation, 0.9 if i == 0 else 0.1 * i) for i, p in enumerate(told)])
    assert [d.hash() for d, _ in again.population] == members
