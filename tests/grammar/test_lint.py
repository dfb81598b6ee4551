"""Static checks of a grammar: reachability, productivity, and the branching-
process test that a derivation's expected size is finite."""
from __future__ import annotations

import math

import pytest

from archgram.errors import GrammarError, Location
from archgram.grammar.lint import offspring_matrix
from archgram.grammar.model import Grammar, load_grammar, normalise

LOC = Location("<test>", 1, 1)


def test_unreachable_rule_is_reported_as_a_warning():
    g = Grammar.from_text("start a\na : norm\nb : relu\nc : b\n")
    report = g.lint()
    assert report.unreachable == ["b", "c"]
    assert report.ok
    assert any("rule 'b' is unreachable" in w and "<string>:3:1" in w for w in report.warnings)


def test_unproductive_rule_is_an_error():
    g = Grammar.from_text("a : norm | b\nb : b relu\n")
    report = g.lint()
    assert report.unproductive == ["b"]
    assert not report.ok
    assert any("'b' is unproductive" in e and "<string>:2:1" in e for e in report.errors)


def test_mutually_recursive_rules_without_exit_are_unproductive():
    g = Grammar.from_text("s : norm | a\na : b relu\nb : a gelu\n")
    assert g.lint().unproductive == ["a", "b"]
    assert math.isinf(g.min_size["a"]) and g.min_size["s"] == 1


def test_einspace_terminates_but_its_copied_network_size_is_unbounded():
    # module*4 / module*8 are sampled once (radius < 1: sampling terminates) but
    # copied k times, so the expected op count diverges; only the limits bound it.
    report = load_grammar("einspace").lint()
    assert report.ok and report.unreachable == [] and report.unproductive == []
    assert report.spectral_radius < 1
    assert math.isinf(report.expected_nodes)
    assert any("counting the copies made by repeats" in w for w in report.warnings)


def test_productive_grammar_with_finite_size_has_no_warnings():
    report = Grammar.from_text("a : a norm @0.3 | relu\n").lint()
    assert report.ok and report.warnings == []
    assert report.expected_nodes == pytest.approx(1 / 0.7)


@pytest.mark.parametrize("p", [0.1, 0.25, 0.4, 0.45])
def test_binary_recursion_spectral_radius_is_twice_p(p):
    g = Grammar.from_text(f"a : a a @{p} | norm\n")
    report = g.lint()
    assert report.spectral_radius == pytest.approx(2 * p)
    # E = (1-p)*1 + p*2E  =>  E = (1-p)/(1-2p) ops.
    assert report.expected_nodes == pytest.approx((1 - p) / (1 - 2 * p))


@pytest.mark.parametrize("p", [0.5, 0.6])
def test_binary_recursion_expected_size_is_infinite_from_p_one_half(p):
    report = Grammar.from_text(f"a : a a @{p} | norm\n").lint()
    assert report.spectral_radius == pytest.approx(2 * p)
    assert math.isinf(report.expected_nodes)
    assert report.to_dict()["expected_nodes"] is None
    assert any("expected derivation size is infinite" in w for w in report.warnings)


def test_expected_nodes_counts_ops_in_every_production_by_hand():
    # s -> a norm ;  a -> a relu gelu @0.5 | clone(2) b b add @0.25 | silu ; b -> linear tanh
    # E[b] = 2; E[a] = 0.5*(2 + E[a]) + 0.25*(2 + 2*E[b]) + 0.25*1 = 1 + 0.5 E[a] + 1.5 + 0.25
    #   => E[a] = 5.5 ; E[s] = E[a] + 1 = 6.5
    text = (
        "s : a norm\n"
        "a : a relu gelu @0.5 | clone(2) b b add @0.25 | silu\n"
        "b : linear(out=4) tanh\n"
    )
    report = Grammar.from_text(text).lint()
    assert report.expected_nodes == pytest.approx(6.5)
    assert report.spectral_radius == pytest.approx(0.5)


def test_offspring_matrix_counts_repeats_once_and_children_by_probability():
    g = Grammar.from_text("s : a*3 b @0.5 | b\na : relu\nb : norm\n")
    m, t = offspring_matrix(g, ["a", "b", "s"])
    # a*3 is sampled once and copied: one expansion of 'a', three ops.
    assert m[2].tolist() == pytest.approx([0.5, 1.0, 0.0])
    assert t.tolist() == pytest.approx([1.0, 1.0, 0.0])


def test_offspring_matrix_with_copies_counts_repeats_and_branch_copies():
    g = Grammar.from_text("s : a*3 b @0.5 | clone(4) b*4 add\na : relu\nb : norm\n")
    m, t = offspring_matrix(g, ["a", "b", "s"])
    assert m[2].tolist() == pytest.approx([0.5, 1.0, 0.0])
    c, t = offspring_matrix(g, ["a", "b", "s"], copies=True)
    assert c[2].tolist() == pytest.approx([1.5, 0.5 + 0.5 * 4, 0.0])
    assert t[2] == pytest.approx(0.5 * 2)


def test_repeated_items_count_their_copies_in_expected_size():
    report = Grammar.from_text("s : a*3 norm\na : relu gelu\n").lint()
    # The structure is sampled once, but every copy is an op in the network.
    assert report.expected_nodes == pytest.approx(7)


def test_all_annotated_weights_are_rescaled_to_sum_to_one():
    assert normalise([2, 6], LOC, "w") == pytest.approx([0.25, 0.75])
    assert normalise([0.2, 0.2], LOC, "w") == pytest.approx([0.5, 0.5])
    assert normalise([0, 3], LOC, "w") == pytest.approx([0, 1])
    g = Grammar.from_text("a : norm @1 | relu @3\n")
    assert g.production_probs("a") == pytest.approx([0.25, 0.75])


def test_unannotated_weights_share_the_remainder_equally():
    assert normalise([0.4, None, None], LOC, "w") == pytest.approx([0.4, 0.3, 0.3])
    assert normalise([None, None, None, None], LOC, "w") == pytest.approx([0.25] * 4)


@pytest.mark.parametrize(
    "weights, words",
    [
        ([0, 0], "at least one must be positive"),
        ([0.7, 0.6, None], "> 1"),
        ([1.0, None], "could never be chosen"),
        ([-0.1, None], "negative"),
        ([float("nan"), 1], "negative"),
    ],
)
def test_normalise_refuses_weights_that_are_not_a_distribution(weights, words):
    with pytest.raises(GrammarError, match=words):
        normalise(weights, LOC, "w")
