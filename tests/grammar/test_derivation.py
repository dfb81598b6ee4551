"""Derivations as data: JSON round trip, a canonical hash that names the network
rather than the grammar path, strict loading, and the data-flow graph."""
from __future__ import annotations

import json

import networkx as nx
import pytest

from archgram.errors import DerivationError
from archgram.grammar.derivation import BranchNode, Derivation, OpNode, RuleNode, walk_paths
from archgram.grammar.model import Grammar, load_grammar

SHAPE = (2, 8, 6, 6)


def op(name, **args):
    return OpNode(name, args)


def seq(*children, symbol="s", alt=0):
    return RuleNode(symbol, alt, list(children))


def branch(opener, arms, closer):
    return BranchNode(opener, list(arms), closer)


def h(root, shape=SHAPE) -> str:
    d = Derivation(root, shape)
    d.infer_shapes()  # every hand-built tree must be a real network
    return d.hash()


@pytest.fixture(scope="module")
def einspace():
    return load_grammar("einspace")


def test_json_round_trip_keeps_hash_and_pretty_print(einspace):
    for seed in range(20):
        for shape in [(8, 3, 32, 32), (8, 16, 32)]:
            d = einspace.sample(shape, seed=seed)
            back = Derivation.from_json(d.to_json())
            assert back.hash() == d.hash()
            assert back.pretty() == d.pretty()
            assert back.to_json() == d.to_json()


def test_json_round_trip_keeps_tuples_and_globals():
    g = Grammar.from_text("global w = 4 | 8\nnet : linear(out=w) permute(order=(0,1,3,2))\n")
    d = g.sample(SHAPE, seed=1)
    back = Derivation.from_json(d.to_json())
    assert back.ops()[1].args["order"] == (0, 1, 3, 2)
    assert back.globals == d.globals and back.input_shape == SHAPE


def test_same_network_through_different_rule_names_and_nesting_has_one_hash():
    g1 = Grammar.from_text("net : a b\na : linear(out=8) relu\nb : norm\n")
    g2 = Grammar.from_text("top : x norm\nx : y z\ny : linear(out=8)\nz : relu\n")
    g3 = Grammar.from_text("s : linear(out=8) relu norm\n")
    hashes = {g.sample(SHAPE, seed=0).hash() for g in (g1, g2, g3)}
    assert len(hashes) == 1


def test_sequence_associativity_does_not_change_the_hash():
    a, b, c = op("linear", out=4), op("relu"), op("norm")
    left = seq(seq(a, b, symbol="ab"), c)
    right = seq(a, seq(b, c, symbol="bc"))
    assert h(left) == h(right) == h(seq(a, b, c))


def test_commutative_merge_after_clone_ignores_arm_order():
    x, y = seq(op("linear", out=8), op("relu")), seq(op("norm"))
    assert h(branch(op("clone", n=2), [x, y], op("add"))) == h(branch(op("clone", n=2), [y, x], op("add")))
    assert h(branch(op("clone", n=2), [x, y], op("multiply"))) == h(branch(op("clone", n=2), [y, x], op("multiply")))


def test_clone_then_concat_depends_on_arm_order():
    x, y = seq(op("linear", out=4)), seq(op("linear", out=2))
    assert h(branch(op("clone", n=2), [x, y], op("concat"))) != h(branch(op("clone", n=2), [y, x], op("concat")))


def test_group_then_add_depends_on_arm_order():
    # Each arm sees a different chunk, so swapping arms changes the network.
    x, y = seq(op("relu")), seq(op("norm"))
    g = op("group", n=2, dim=1)
    assert h(branch(g, [x, y], op("add"))) != h(branch(g, [y, x], op("add")))


def test_arm_order_is_canonical_inside_split_slots_wrapped_in_rules():
    x, y = seq(op("relu")), seq(op("norm"))
    wrapped = seq(op("clone", n=2), symbol="branch2")
    merge = seq(op("add"), symbol="merge2")
    assert h(branch(wrapped, [x, y], merge)) == h(branch(op("clone", n=2), [y, x], op("add")))


def test_identity_insertion_does_not_change_the_hash():
    base = seq(op("linear", out=8), op("relu"))
    padded = seq(op("identity"), op("linear", out=8), seq(op("identity"), symbol="id"), op("relu"), op("identity"))
    assert h(base) == h(padded)
    in_arm = branch(op("clone", n=2), [seq(op("identity")), seq(op("norm"))], op("add"))
    empty_arm = branch(op("clone", n=2), [seq(op("identity"), op("identity")), seq(op("norm"))], op("add"))
    assert h(in_arm) == h(empty_arm)


def test_changed_argument_changes_the_hash():
    assert h(seq(op("linear", out=8))) != h(seq(op("linear", out=16)))
    assert h(seq(op("linear", out=8))) != h(seq(op("linear", out=8, bias=False)))
    assert h(seq(op("relu"))) != h(seq(op("gelu")))


def test_input_shape_is_part_of_the_identity():
    root = seq(op("linear", out=8))
    assert h(root, (2, 8, 6, 6)) != h(root, (2, 8, 4, 4))


def test_hash_ignores_grammar_metadata_and_stats(einspace):
    d = einspace.sample((8, 3, 32, 32), seed=3)
    e = d.copy()
    e.grammar = {"name": "other", "sha256": "0"}
    e.stats = {}
    assert d.hash() == e.hash()


def valid_dict() -> dict:
    d = Derivation(seq(op("linear", out=4), op("relu")), SHAPE)
    return json.loads(d.to_json())


MALFORMED = {
    "not_json": "{not json",
    "not_an_object": "[1, 2, 3]",
    "foreign_format": json.dumps({"format": "something/else", "input_shape": [1], "root": {}}),
    "no_format": json.dumps({"input_shape": [2, 8, 6, 6], "root": {"op": "relu"}}),
}


def _edit(path, value):
    data = valid_dict()
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(data)


MALFORMED.update(
    {
        "missing_input_shape": _edit(["input_shape"], KeyError),
        "bad_input_shape": _edit(["input_shape"], ["a", 3]),
        "negative_input_shape": _edit(["input_shape"], [2, -8, 6, 6]),
        "root_not_object": _edit(["root"], "linear"),
        "node_without_kind": _edit(["root"], {"name": "x"}),
        "rule_without_children": _edit(["root", "children"], KeyError),
        "rule_with_empty_children": _edit(["root", "children"], []),
        "rule_alt_not_int": _edit(["root", "alt"], "first"),
        "unknown_op": _edit(["root", "children", 0, "op"], "lienar"),
        "bad_argument_type": _edit(["root", "children", 0, "args"], {"out": "four"}),
        "unknown_argument": _edit(["root", "children", 0, "args"], {"out": 4, "width": 2}),
        "args_not_object": _edit(["root", "children", 0, "args"], [4]),
        "list_argument": _edit(["root", "children", 0], {"op": "permute", "args": {"order": [0, 1, 3, 2]}}),
        "split_op_in_sequence": _edit(["root", "children", 0], {"op": "clone", "args": {}}),
        "does_not_type_check": _edit(["root", "children", 0], {"op": "col2im", "args": {}}),
        "branch_arms_not_list": _edit(["root", "children", 0], {"open": {"op": "clone"}, "arms": 3, "close": {"op": "add"}}),
        "branch_arm_count": _edit(
            ["root", "children", 0], {"open": {"op": "clone"}, "arms": [{"op": "relu"}], "close": {"op": "add"}}
        ),
        "branch_merge_is_unary": _edit(
            ["root", "children", 0],
            {"open": {"op": "clone"}, "arms": [{"op": "relu"}, {"op": "relu"}], "close": {"op": "relu"}},
        ),
        "globals_not_object": _edit(["globals"], [1]),
        "grammar_not_object": _edit(["grammar"], "einspace"),
    }
)


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_from_json_rejects_malformed_or_foreign_json(name):
    with pytest.raises(DerivationError):
        Derivation.from_json(MALFORMED[name])


def test_from_json_accepts_the_valid_base_of_the_malformed_cases():
    d = Derivation.from_json(json.dumps(valid_dict()))
    assert d.output_shape == (2, 4, 6, 6)


def test_networkx_graph_has_one_node_per_non_identity_op_and_is_a_dag(einspace):
    for seed in range(30):
        d = einspace.sample((8, 3, 32, 32), seed=seed)
        graph = d.to_networkx()
        real_ops = [n for n in d.ops() if n.op != "identity"]
        assert graph.number_of_nodes() == len(real_ops) + 2
        assert nx.is_directed_acyclic_graph(graph)
        assert graph.in_degree("input") == 0 and graph.out_degree("output") == 0
        assert nx.has_path(graph, "input", "output")
        assert sorted(data["op"] for _, data in graph.nodes(data=True) if data["op"] not in ("input", "output")) == sorted(
            n.op for n in real_ops
        )


def test_networkx_merge_receives_one_edge_per_distinct_arm():
    root = seq(branch(op("clone", n=2), [seq(op("relu")), seq(op("norm"))], op("concat", dim=1)))
    d = Derivation(root, SHAPE)
    graph = d.to_networkx()
    (merge,) = [n for n, data in graph.nodes(data=True) if data["op"] == "concat"]
    assert graph.in_degree(merge) == 2
    assert graph.nodes[merge]["out_shape"] == (2, 16, 6, 6)


def test_walk_paths_names_every_node_by_its_steps_in_pre_and_post_order():
    root = seq(op("a"), branch(op("clone"), [op("b"), seq(op("c"), symbol="x")], op("add")))
    pre = [(p, getattr(n, "op", getattr(n, "symbol", "branch"))) for p, n in walk_paths(root)]
    assert pre == [("root", "s"), ("root/0", "a"), ("root/1", "branch"), ("root/1/open", "clone"),
                   ("root/1/arm0", "b"), ("root/1/arm1", "x"), ("root/1/arm1/0", "c"), ("root/1/close", "add")]
    post = [p for p, _ in walk_paths(root, post=True)]
    assert post == ["root/0", "root/1/open", "root/1/arm0", "root/1/arm1/0", "root/1/arm1", "root/1/close",
                    "root/1", "root"]
