"""Mutation and crossover always give valid, limit-respecting trees (property tests)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import archgram
from archgram.errors import ArchgramError
from archgram.grammar.derivation import Derivation
from archgram.grammar.edit import cost, crossover, mutate, sites
from archgram.grammar.model import Grammar

IMAGE = (2, 3, 16, 16)
SEQUENCE = (2, 12, 16)


@pytest.fixture(scope="module")
def einspace():
    return archgram.load_grammar("einspace")


def _assert_valid(g: Grammar, d: Derivation) -> None:
    again = Derivation.from_json(d.to_json())  # re-typed from scratch
    assert again.hash() == d.hash()
    nodes, params, flops, memory = cost(again.root)
    lim = g.limits
    assert nodes <= lim.nodes and params <= lim.params and flops <= lim.flops and memory <= lim.memory
    assert max(s.depth for s in sites(again.root)) <= lim.depth


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 100_000), shape=st.sampled_from([IMAGE, SEQUENCE]))
def test_mutation_gives_a_different_valid_tree(einspace, seed, shape):
    parent = einspace.sample(shape, seed=seed)
    child = mutate(einspace, parent, seed=seed)
    assert child.hash() != parent.hash()
    _assert_valid(einspace, child)
    assert parent.to_json() == einspace.sample(shape, seed=seed).to_json()  # parent untouched


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 100_000), shape=st.sampled_from([IMAGE, SEQUENCE]))
def test_crossover_gives_a_valid_tree_made_of_both_parents(einspace, seed, shape):
    a = einspace.sample(shape, seed=seed)
    b = einspace.sample(shape, seed=seed + 1)
    child = crossover(einspace, a, b, seed=seed)
    if child is None:  # parents share no type-compatible subtree
        return
    _assert_valid(einspace, child)
    a_ops = {n.op for n in a.ops()}
    b_ops = {n.op for n in b.ops()}
    assert {n.op for n in child.ops()} <= a_ops | b_ops


@pytest.mark.parametrize("seed", range(5))
def test_mutants_compile_and_run(einspace, seed):
    child = mutate(einspace, einspace.sample(IMAGE, seed=seed), seed=seed)
    model = archgram.compile(child)
    with torch.no_grad():
        out = model(torch.randn(IMAGE))
    assert tuple(out.shape) == child.output_shape


def test_mutation_is_reproducible(einspace):
    parent = einspace.sample(IMAGE, seed=3)
    assert mutate(einspace, parent, seed=9).to_json() == mutate(einspace, parent, seed=9).to_json()


def test_mutation_changes_only_one_subtree(einspace):
    parent = einspace.sample(IMAGE, seed=11)
    child = mutate(einspace, parent, seed=11)
    path = child.stats["mutated"]
    assert child.stats["symbol"] in einspace.rules
    # Everything outside the mutated path's subtree is untouched.
    parent_sites = {"/".join(map(str, s.path)): s.node for s in sites(parent.root)}
    for s in sites(child.root):
        key = "/".join(map(str, s.path))
        inside = path == "root" or key == path or key.startswith(path + "/")
        if not inside and not path.startswith(key) and key in parent_sites:
            assert s.node == parent_sites[key]


def test_a_grammar_with_one_architecture_cannot_be_mutated():
    g = Grammar.from_text("net : linear(out=8) relu\n")
    d = g.sample((2, 4, 8), seed=0)
    with pytest.raises(ArchgramError):
        mutate(g, d, seed=0, max_tries=5)


def test_crossover_of_identical_parents_has_nothing_to_swap(einspace):
    a = einspace.sample(IMAGE, seed=5)
    assert crossover(einspace, a, a.copy(), seed=0) is None


def test_a_baseline_larger_than_the_limits_can_still_be_mutated(einspace):
    from archgram.grammar.baselines import baseline

    resnet = baseline("resnet", einspace, (2, 3, 32, 32))
    child = mutate(einspace, resnet, seed=0)
    assert child.hash() != resnet.hash()
    child.infer_shapes()
    assert cost(child.root)[0] <= max(einspace.limits.nodes, cost(resnet.root)[0])
