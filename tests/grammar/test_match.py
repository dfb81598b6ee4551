"""parse_network: a grammar's derivation of a given network."""
from __future__ import annotations

import json

import pytest

import archgram
from archgram.errors import DerivationError
from archgram.grammar.match import network_of, network_to_json, parse_network
from archgram.grammar.model import Grammar

SHAPE = (8, 3, 32, 32)


@pytest.fixture(scope="module")
def einspace():
    return archgram.load_grammar("einspace")


@pytest.mark.parametrize("seed", [0, 1, 3, 4, 7, 8, 11])
def test_einspace_samples_reparse_to_same_network(einspace, seed):
    d = einspace.sample(SHAPE, seed=seed)
    got = parse_network(einspace, d, SHAPE)
    assert got.hash() == d.hash()
    assert network_of(got) == network_of(d)  # identities and arm order too
    assert got.depth() <= d.depth()  # least rule-nesting height
    assert got.output_shape == d.output_shape
    assert got.grammar["name"] == "einspace"


def test_json_network_form_round_trips(einspace):
    d = einspace.sample(SHAPE, seed=8)
    text = json.dumps(network_to_json(d))
    got = parse_network(einspace, json.loads(text), SHAPE)
    assert got.hash() == d.hash()


def test_op_outside_the_grammar_is_named_with_its_position(einspace):
    net = [["op", "linear", {"out": 64}], ["op", "relu", {}]]
    with pytest.raises(DerivationError, match=r"cannot produce op relu at position root\[1\]"):
        parse_network(einspace, net, SHAPE)


def test_argument_outside_the_choices_is_rejected(einspace):
    net = [["op", "linear", {"out": 64}], ["op", "linear", {"out": 100}]]
    with pytest.raises(DerivationError, match=r"linear\(out=100\) at position root\[1\]"):
        parse_network(einspace, net, SHAPE)


def test_failure_inside_an_arm_names_the_arm(einspace):
    net = [["op", "norm"], ["branch", ["op", "clone", {"n": 2}],
                            [[["op", "linear", {"out": 3}], ["op", "gelu"]], [["op", "identity"]]], ["op", "add"]]]
    with pytest.raises(DerivationError, match=r"root\[1\]/arm0\[0\]"):
        parse_network(einspace, net, SHAPE)


def test_copied_arms_must_be_identical(einspace):
    arm = [["op", "linear", {"out": 64}]]
    other = [["op", "linear", {"out": 32}]]
    net = [["branch", ["op", "clone", {"n": 4}], [arm, arm, arm, other], ["op", "concat", {"dim": 1}]]]
    with pytest.raises(DerivationError, match=r"module\*4"):
        parse_network(einspace, net, SHAPE)
    ok = [["branch", ["op", "clone", {"n": 4}], [arm, arm, arm, arm], ["op", "concat", {"dim": 1}]]]
    d = parse_network(einspace, ok, SHAPE)
    assert d.output_shape == (8, 256, 32, 32)


def test_network_that_does_not_type_check(einspace):
    with pytest.raises(DerivationError, match="does not type-check"):
        parse_network(einspace, [["op", "col2im"]], SHAPE)


def test_symbol_and_max_depth(einspace):
    d = parse_network(einspace, [["op", "norm"]], SHAPE, symbol="module")
    assert d.depth() == 2  # <module> -> <computation> -> norm
    with pytest.raises(DerivationError, match="max_depth"):
        parse_network(einspace, [["op", "norm"], ["op", "leakyrelu"]], SHAPE, symbol="module", max_depth=2)


def test_min_height_balances_sequences():
    g = Grammar.from_text("start net\nnet : blk\nblk : blk blk | norm\n")
    d = parse_network(g, [["op", "norm"]] * 8, SHAPE)
    assert d.depth() == 5  # net + a balanced binary tree of 8 leaves (1 + 3 + 1)


def test_unit_cycles_are_cut():
    g = Grammar.from_text("start net\nnet : a\na : b | linear(out=8)\nb : a | norm\n")
    assert parse_network(g, [["op", "norm"]], SHAPE).depth() == 3
    assert parse_network(g, [["op", "linear", {"out": 8}]], SHAPE).depth() == 2


def test_repeats_and_copies():
    g = Grammar.from_text("start net\nnet : linear(out=8) norm*2 blk*3\nblk : linear(out=8) leakyrelu\n")
    net = [["op", "linear", {"out": 8}], ["op", "norm"], ["op", "norm"]] + [["op", "linear", {"out": 8}], ["op", "leakyrelu"]] * 3
    d = parse_network(g, net, SHAPE)
    assert [n.op for n in d.ops()] == [item[1] for item in net]
    bad = net[:-1] + [["op", "norm"]]
    with pytest.raises(DerivationError):
        parse_network(g, bad, SHAPE)


def test_commutative_arms_may_be_reordered():
    g = Grammar.from_text("start net\nnet : clone(2) identity body add\nbody : linear(out=3) norm\n")
    net = [["branch", ["op", "clone"], [[["op", "linear", {"out": 3}], ["op", "norm"]], [["op", "identity"]]], ["op", "add"]]]
    d = parse_network(g, net, SHAPE)
    assert d.root.children[0].arms[0] == archgram.grammar.OpNode("identity", {})
    ref = parse_network(g, [["branch", ["op", "clone"], [[["op", "identity"]], [["op", "linear", {"out": 3}], ["op", "norm"]]],
                                     ["op", "add"]]], SHAPE)
    assert d.hash() == ref.hash()


def test_global_params_take_one_value():
    g = Grammar.from_text("global w = 8 | 16\nstart net\nnet : linear(out=w) linear(out=w)\n")
    d = parse_network(g, [["op", "linear", {"out": 16}], ["op", "linear", {"out": 16}]], SHAPE)
    assert d.globals == {"w": 16}
    with pytest.raises(DerivationError):
        parse_network(g, [["op", "linear", {"out": 8}], ["op", "linear", {"out": 16}]], SHAPE)


def test_limits_are_reported_not_enforced(einspace):
    net = [["op", "linear", {"out": 2048}], ["op", "linear", {"out": 2048}], ["op", "linear", {"out": 2048}]]
    d = parse_network(einspace, net, SHAPE)
    assert d.stats["params"] == (3 * 2048 + 2048) + 2 * (2048 * 2048 + 2048)
    assert any(x.startswith("params") for x in d.stats["exceeds"])
