"""Strategies beat random search on toy objectives (fixed seeds), and resume by replay."""
from __future__ import annotations

import math
import statistics

import pytest

import archgram
from archgram.errors import ArchgramError
from archgram.grammar.edit import cost
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
