"""Strategies beat random search on toy objectives (fixed seeds), and resume by replay."""
from __future__ import annotations

import math
import statistics

import pytest

import archgram
from archgram.errors import ArchgramError
from archgram.grammar.derivation import Derivation
from archgram.grammar.edit import cost
from archgram.grammar.model import Grammar
from archgram.search.strategies import get_strategy, strategy_names
from archgram.search.strategies.eda import production_counts, reweighted

SHAPE = (2, 3, 16, 16)
SEEDS = range(5)


@pytest.fixture(scope="module")
def einspace():
    return archgram.load_grammar("einspace")


def params_near_two_million(d) -> float:
    """Smooth in the architecture: mutation can climb it."""
    return -abs(math.log10(cost(d.root)[1] + 1) - 6.3)


def softmax_heavy(d) -> float:
    """Rewards one production (computation -> softmax): a PCFG can learn it."""
    ops = [n.op for n in d.ops()]
    return sum(op == "softmax" for op in ops) - 0.1 * len(ops)


def best_of(grammar, name, objective, seed, trials=60, **options) -> float:
    strategy = get_strategy(name)(grammar, SHAPE, seed=seed, **options)
    best = -math.inf
    for _ in range(trials):
        proposal = strategy.ask()
        score = objective(proposal.derivation)
        strategy.tell(proposal.derivation, score)
        best = max(best, score)
    return best


def mean_best(grammar, name, objective, **options) -> float:
    return statistics.mean(best_of(grammar, name, objective, seed, **options) for seed in SEEDS)


def test_registry_lists_the_builtin_strategies():
    assert {"random", "evolution", "pcfg-eda"} <= set(strategy_names())
    with pytest.raises(ArchgramError, match="did you mean 'evolution'"):
        get_strategy("evolutoin")


def test_regularized_evolution_beats_random_on_a_smooth_objective(einspace):
    evo = mean_best(einspace, "evolution", params_near_two_million, population=10, tournament=3)
    rnd = mean_best(einspace, "random", params_near_two_million)
    assert evo > rnd, (evo, rnd)


def test_pcfg_eda_beats_random_when_one_production_pays(einspace):
    eda = mean_best(einspace, "pcfg-eda", softmax_heavy)
    rnd = mean_best(einspace, "random", softmax_heavy)
    assert eda > rnd, (eda, rnd)


def test_pcfg_eda_moves_probability_towards_the_elite(einspace):
    strategy = get_strategy("pcfg-eda")(einspace, SHAPE, seed=0, refit_every=10)
    softmax_alt = [p.text for p in einspace.rules["computation"].productions].index("softmax")
    before = strategy.table["computation"][softmax_alt]
    for _ in range(40):
        proposal = strategy.ask()
        strategy.tell(proposal.derivation, softmax_heavy(proposal.derivation))
    assert strategy.table["computation"][softmax_alt] > before
    assert abs(sum(strategy.table["computation"]) - 1) < 1e-9


def test_reweighted_grammar_keeps_the_original(einspace):
    table = {"module": [0.0, 0.0, 0.0, 1.0]}
    only_computation = reweighted(einspace, table)
    assert [p.prob for p in einspace.rules["module"].productions] != table["module"]
    d = only_computation.sample(SHAPE, seed=0)
    counts = production_counts([d])
    assert all(alt == 3 for (rule, alt) in counts if rule == "module")


def test_evolution_seeds_fill_the_population_first(einspace):
    seeds = [einspace.sample(SHAPE, seed=s) for s in (1, 2)]
    strategy = get_strategy("evolution")(einspace, SHAPE, seed=0, population=4, tournament=2, seeds=seeds)
    first = [strategy.ask() for _ in range(2)]
    assert [p.origin for p in first] == ["seed", "seed"]
    assert {p.derivation.hash() for p in first} == {s.hash() for s in seeds}


def test_replay_rebuilds_the_same_state(einspace):
    """Resuming a study replays its finished trials instead of unpickling a strategy."""
    a = get_strategy("evolution")(einspace, SHAPE, seed=7, population=4, tournament=2)
    history = []
    for _ in range(8):
        p = a.ask()
        score = params_near_two_million(p.derivation)
        a.tell(p.derivation, score)
        history.append((p.derivation, score))
    b = get_strategy("evolution")(einspace, SHAPE, seed=7, population=4, tournament=2)
    b.replay(history)
    assert [d.hash() for d, _ in a.population] == [d.hash() for d, _ in b.population]
    assert a.seen == b.seen


def test_ask_avoids_repeating_architectures(einspace):
    strategy = get_strategy("random")(einspace, SHAPE, seed=0)
    hashes = []
    for _ in range(30):
        p = strategy.ask()
        hashes.append(p.derivation.hash())
        strategy.tell(p.derivation, 0.0)
    assert len(set(hashes)) == len(hashes)


def test_tpe_beats_random_when_one_production_pays(einspace):
    tpe = statistics.mean(best_of(einspace, "tpe", softmax_heavy, seed, trials=50) for seed in range(3))
    rnd = statistics.mean(best_of(einspace, "random", softmax_heavy, seed, trials=50) for seed in range(3))
    assert tpe > rnd, (tpe, rnd)


def test_nsga2_beats_random_on_a_single_objective(einspace):
    nsga = statistics.mean(
        best_of(einspace, "nsga2", softmax_heavy, seed, trials=50, objectives=("score",), population=10) for seed in range(3)
    )
    rnd = statistics.mean(best_of(einspace, "random", softmax_heavy, seed, trials=50) for seed in range(3))
    assert nsga > rnd, (nsga, rnd)


def test_optuna_parameters_are_read_back_from_the_built_derivation(einspace):
    """What Optuna is told matches the tree, even where shape typing overrode a suggestion."""
    from archgram.search.strategies.optuna_samplers import choice_params

    strategy = get_strategy("tpe")(einspace, SHAPE, seed=0)
    for _ in range(5):
        p = strategy.ask()
        root = p.derivation.root
        params, dists = choice_params(einspace, p.derivation)
        assert set(params) == set(dists)
        assert params[root.symbol] == f"{root.alt}:{einspace.rules[root.symbol].productions[root.alt].text}"
        assert all(v in dists[k].choices for k, v in params.items())
        strategy.tell(p.derivation, softmax_heavy(p.derivation))
    complete = [t for t in strategy.study.trials if t.state.name == "COMPLETE"]
    assert [t.params for t in complete][-1] == params


def test_nsga2_records_several_objectives(einspace):
    strategy = get_strategy("nsga2")(einspace, SHAPE, seed=0, objectives=("score", "params"))
    p = strategy.ask()
    strategy.tell(p.derivation, 0.5, {"params": 1234})
    (trial,) = [t for t in strategy.study.trials if t.state.name == "COMPLETE"]
    assert trial.values == [0.5, 1234.0]


# -- pcfg-eda refits on a tiny grammar ----------------------------------------
TINY_RULES = "left : norm @0.7 | relu @0.3\nright : norm @0.2 | gelu @0.8\n"
TINY = Grammar.from_text("net : relu left @0.5 | gelu right @0.5 | norm @0\n" + TINY_RULES)
TINY_SHAPE = (2, 5, 8)


def tiny_sample(grammar, wanted: dict) -> Derivation:
    """The first sample (by seed) whose production counts are exactly ``wanted``."""
    for seed in range(500):
        d = grammar.sample(TINY_SHAPE, seed=seed)
        if dict(production_counts([d])) == wanted:
            return d
    raise AssertionError(f"no sample with counts {wanted}")


def refit_on(grammar, elite: Derivation, other: Derivation, **options):
    """A pcfg-eda whose one refit saw ``elite`` (score 1) and ``other`` (score 0)."""
    strategy = get_strategy("pcfg-eda")(grammar, TINY_SHAPE, seed=0, elite=0.5, refit_every=2, **options)
    strategy.tell(other, 0.0)
    strategy.tell(elite, 1.0)
    return strategy


def test_pcfg_eda_keeps_the_weights_of_a_rule_the_elite_never_uses():
    elite = tiny_sample(TINY, {("net", 0): 1, ("left", 0): 1})
    other = tiny_sample(TINY, {("net", 1): 1, ("right", 0): 1})
    strategy = refit_on(TINY, elite, other)
    assert strategy.table["right"] == pytest.approx([0.2, 0.8])


def test_pcfg_eda_keeps_the_weights_the_elite_agrees_with():
    """An elite choosing a rule's alternatives as often as the grammar does is
    no evidence against the grammar: no pull towards uniform probabilities."""
    grammar = Grammar.from_text("net : x x x x x\nx : relu @0.6 | gelu @0.4\n")
    elite = tiny_sample(grammar, {("net", 0): 1, ("x", 0): 3, ("x", 1): 2})
    other = tiny_sample(grammar, {("net", 0): 1, ("x", 0): 1, ("x", 1): 4})
    strategy = refit_on(grammar, elite, other)
    assert strategy.table["x"] == pytest.approx([0.6, 0.4])


def test_pcfg_eda_one_elite_derivation_moves_a_bounded_step():
    """k = 1 elite derivation, prior strength s = 1 and lr = 0.5: the step is
    lr * k / (k + s) = 0.25 of the way to the target (count + s * p0) / (k + s)."""
    elite = tiny_sample(TINY, {("net", 0): 1, ("left", 1): 1})
    other = tiny_sample(TINY, {("net", 1): 1, ("right", 0): 1})
    strategy = refit_on(TINY, elite, other, lr=0.5, prior_strength=1.0)
    # left: target (0 + 0.7) / 2 = 0.35 and (1 + 0.3) / 2 = 0.65; 0.75 * p0 + 0.25 * target
    assert strategy.table["left"] == pytest.approx([0.6125, 0.3875])
    # net: target 0.75, 0.25, 0
    assert strategy.table["net"] == pytest.approx([0.5625, 0.4375, 0.0])
    for before, after, chosen in zip([0.7, 0.3], strategy.table["left"], [0.0, 1.0]):
        assert abs(after - before) <= 0.5 * 1 / (1 + 1) * abs(chosen - before) + 1e-12
    assert strategy.propose().info == {"refits": 1}


def test_pcfg_eda_many_consistent_elites_reach_the_floor_cap():
    """With many elite derivations all choosing left -> norm, its probability
    rises to the cap the floor leaves: 1 / (1 + floor) for two alternatives."""
    elite = tiny_sample(TINY, {("net", 0): 1, ("left", 0): 1})
    strategy = get_strategy("pcfg-eda")(TINY, TINY_SHAPE, seed=0, elite=1.0, refit_every=10, floor=0.02)
    for _ in range(200):
        strategy.tell(elite, 1.0)
    cap = 1 / (1 + 0.02)
    assert cap - 0.002 < strategy.table["left"][0] <= cap + 1e-12
    assert cap - 0.002 < strategy.table["net"][0] <= cap + 1e-12


def test_pcfg_eda_zero_probability_productions_stay_zero():
    """Even an elite that used a zero-probability production (say a seeded
    reference architecture) does not bring it back."""
    loose = Grammar.from_text("net : relu left @0.25 | gelu right @0.25 | norm @0.5\n" + TINY_RULES)
    used_zero = tiny_sample(loose, {("net", 2): 1})
    strategy = get_strategy("pcfg-eda")(TINY, TINY_SHAPE, seed=0, elite=1.0, refit_every=1)
    for _ in range(20):
        strategy.tell(used_zero, 1.0)
        strategy.tell(strategy.ask().derivation, 1.0)
    assert strategy.table["net"][2] == 0.0
    assert all(n.alt != 2 for n in [strategy.ask().derivation.root for _ in range(20)])


def test_pcfg_eda_rejects_bad_options():
    for bad in ({"elite": 0}, {"lr": 1.5}, {"refit_every": 0}, {"prior_strength": -1}, {"prior_strength": math.inf}):
        with pytest.raises(ArchgramError, match="pcfg-eda"):
            get_strategy("pcfg-eda")(TINY, TINY_SHAPE, **bad)
