"""The .pcfg language: valid text parses into the expected structure, and every
kind of mistake is a GrammarError pointing at the exact line and column."""
from __future__ import annotations

import pytest

from archgram.errors import GrammarError
from archgram.grammar import syntax
from archgram.grammar.model import Branch, Grammar, NonTerm, Term, load_grammar
from archgram.grammar.parser import parse_text
from archgram.ops.registry import OPS, Arg, Op, register_op


def probs(g: Grammar, rule: str) -> list[float]:
    return g.production_probs(rule)


# ------------------------------------------------------------ valid grammars
def test_rules_and_alternatives_parse_into_items_in_order():
    f = parse_text("a : b c | norm\nb : relu\nc : gelu\n")
    assert [r.name for r in f.rules] == ["a", "b", "c"]
    alts = f.rules[0].alternatives
    assert [[it.name for it in alt.items] for alt in alts] == [["b", "c"], ["norm"]]
    assert f.rules[0].loc.line == 1 and f.rules[1].loc.line == 2


def test_probability_annotations_become_production_probabilities():
    g = Grammar.from_text("a : norm @0.2 | relu @0.5 | gelu | silu\n")
    assert probs(g, "a") == pytest.approx([0.2, 0.5, 0.15, 0.15])


def test_multiline_alternatives_starting_with_bar_continue_the_rule():
    text = "a : norm\n  | relu @0.25\n\n  # a comment between\n  | gelu\nb : silu\n"
    g = Grammar.from_text(text)
    assert [p.text for p in g.rules["a"].productions] == ["norm", "relu", "gelu"]
    assert probs(g, "a") == pytest.approx([0.375, 0.25, 0.375])
    assert "b" in g.rules


def test_a_rule_may_start_its_alternatives_on_the_next_line():
    g = Grammar.from_text("a :\n  | norm\n  | relu\n")
    assert [p.text for p in g.rules["a"].productions] == ["norm", "relu"]


def test_comments_are_ignored_everywhere():
    text = "# header\nstart a   # the start\na : norm # trailing\n# between\n   | relu\n"
    g = Grammar.from_text(text)
    assert g.start == "a" and len(g.rules["a"].productions) == 2


def test_param_expands_to_its_choice_set_at_each_use():
    g = Grammar.from_text("param w = 8 | 16@0.5\na : linear(out=w)\n")
    (term,) = g.rules["a"].productions[0].elems
    assert term.args["out"].values == (8, 16)
    assert term.args["out"].probs == pytest.approx((0.5, 0.5))
    assert term.args["out"].shared is None


def test_global_param_is_marked_shared():
    g = Grammar.from_text("global w = 8 | 16\na : linear(out=w)\n")
    (term,) = g.rules["a"].productions[0].elems
    assert term.args["out"].shared == "w"
    assert g.params["w"].shared


def test_param_may_be_one_option_of_a_larger_choice():
    g = Grammar.from_text("param w = 8 | 16\na : linear(out=w | 64)\n")
    (term,) = g.rules["a"].productions[0].elems
    assert set(term.args["out"].values) == {8, 16, 64}
    assert sum(term.args["out"].probs) == pytest.approx(1.0)


def test_use_includes_rules_from_another_file(tmp_path):
    (tmp_path / "parts.pcfg").write_text("block : linear(out=8) relu\n")
    main = tmp_path / "main.pcfg"
    main.write_text('use "parts.pcfg"\nstart net\nnet : block block\n')
    g = load_grammar(main)
    assert set(g.rules) == {"block", "net"}
    assert g.start == "net"
    assert str(tmp_path / "parts.pcfg") in g.files


def test_use_finds_shipped_grammars():
    g = Grammar.from_text('use "einspace.pcfg"\nstart top\ntop : network norm\n')
    assert g.start == "top" and "computation" in g.rules


def test_limit_overrides_the_default_budget():
    g = Grammar.from_text("limit depth = 7\nlimit params = 1e4\na : norm\n")
    assert g.limits.depth == 7 and isinstance(g.limits.depth, int)
    assert g.limits.params == 1e4


def test_extension_rescales_old_alternatives_and_adds_new_ones(tmp_path):
    (tmp_path / "base.pcfg").write_text("act : relu @0.25 | gelu\n")
    main = tmp_path / "main.pcfg"
    main.write_text('use "base.pcfg"\nact +: silu @0.2 | tanh @0.2\n')
    g = load_grammar(main)
    assert [p.text for p in g.rules["act"].productions] == ["relu", "gelu", "silu", "tanh"]
    assert probs(g, "act") == pytest.approx([0.25 * 0.6, 0.75 * 0.6, 0.2, 0.2])


def test_repeat_in_a_sequence_is_one_item_with_a_count():
    g = Grammar.from_text("a : b*4 norm\nb : relu\n")
    first = g.rules["a"].productions[0].elems[0]
    assert isinstance(first, NonTerm) and first.repeat == 4


def test_repeat_in_branches_fills_that_many_arms():
    g = Grammar.from_text("a : clone(4) b*4 add\nb : relu\n")
    (branch,) = g.rules["a"].productions[0].elems
    assert isinstance(branch, Branch)
    assert branch.n == 4 and [arm.copies for arm in branch.arms] == [4]


def test_tuple_values_parse_as_python_tuples():
    g = Grammar.from_text("a : permute(order=(0,2,1) | (0, 1, 2))\n")
    (term,) = g.rules["a"].productions[0].elems
    assert term.args["order"].values == ((0, 2, 1), (0, 1, 2))


def test_positional_and_named_arguments_bind_to_the_schema():
    g = Grammar.from_text("a : conv2d(16, 3, s=2)\n")
    (term,) = g.rules["a"].productions[0].elems
    assert term.args["out"].values == (16,) and term.args["k"].values == (3,)
    assert term.args["s"].values == (2,) and term.args["p"].values == (-1,)


def test_bool_and_string_symbols_are_values():
    g = Grammar.from_text("a : linear(out=4, bias=false | true)\n")
    (term,) = g.rules["a"].productions[0].elems
    assert term.args["bias"].values == (False, True)


def test_structured_call_value_parses_to_callvalue():
    f = parse_text("a : attn(pattern=window(7) | full)\n")
    (arg,) = f.rules[0].alternatives[0].items[0].args
    first, second = arg.choice.options
    assert first.value == syntax.CallValue("window", (first.value.args[0],))
    assert first.value.args[0].choice.options[0].value == 7
    assert second.value == syntax.Symbol("full")


@pytest.fixture
def dict_op():
    """A throwaway op with a structured (dict) argument, removed afterwards."""

    @register_op("_test_patterned", family="test", args={"pattern": Arg(dict, {"name": "full"})})
    class Patterned(Op):
        def __init__(self, shape, pattern=None):
            super().__init__()

        @classmethod
        def output_shape(cls, shape, **args):
            return shape

    yield "_test_patterned"
    OPS.remove("_test_patterned")


def test_structured_call_value_becomes_a_dict_argument(dict_op):
    g = Grammar.from_text(f"a : {dict_op}(pattern=window(7, dilation=2) | full)\n")
    (term,) = g.rules["a"].productions[0].elems
    assert term.args["pattern"].values[0] == {"name": "window", "_0": 7, "dilation": 2}


def test_einspace_grammar_loads_by_name():
    g = load_grammar("einspace")
    assert g.start == "network"
    assert {"sequential", "branching", "routing", "computation"} <= set(g.rules)
    assert g.limits.depth == 12 and g.limits.nodes == 80
    for rule in g.rules.values():
        assert sum(p.prob for p in rule.productions) == pytest.approx(1.0)


def test_split_and_merge_rules_form_branch_slots():
    g = load_grammar("einspace")
    assert g.rules["branch2"].kind == "split" and g.rules["branch2"].branches == 2
    assert g.rules["merge2"].kind == "merge"
    (branch,) = g.rules["branching"].productions[0].elems
    assert isinstance(branch, Branch) and branch.n == 2
    assert isinstance(branch.open, NonTerm) and isinstance(branch.close, NonTerm)


def test_ops_resolve_to_terms_and_rules_to_nonterminals():
    g = Grammar.from_text("a : b norm\nb : relu\n")
    b, norm = g.rules["a"].productions[0].elems
    assert isinstance(b, NonTerm) and isinstance(norm, Term) and norm.op.name == "norm"


# ------------------------------------------------------------ invalid grammars
def error_of(text: str, **kwargs) -> GrammarError:
    with pytest.raises(GrammarError) as info:
        Grammar.from_text(text, **kwargs)
    return info.value


def at(err: GrammarError) -> tuple[int, int]:
    assert err.location is not None
    return err.location.line, err.location.column


BAD = {
    # name: (text, line, column, words in message)
    "unexpected_character": ("a : norm\nb : relu $ gelu\n", 2, 10, "unexpected character '$'"),
    "missing_colon": ("a : norm\nb relu\n", 2, 3, "expected"),
    "dangling_bar": ("a : norm |\nb : relu\n", 1, 11, "unexpected end of line"),
    "dangling_bar_on_next_line": ("a : norm\n  |\nb : relu\n", 2, 4, "unexpected end of line"),
    "bad_number": ("a : norm @0.5.2 | relu\n", 1, 14, "unexpected '.2'"),
    "bad_exponent": ("a : linear(out=1e)\n", 1, 17, "unexpected 'e'"),
    "unclosed_parenthesis": ("a : linear(out=4\nb : norm\n", 1, 11, "unclosed '(': expected ')'"),
    "unknown_op": ("a : norm\n  | lienar(out=4)\n", 2, 5, "did you mean 'linear'"),
    "unknown_argument": ("a : linear(outt=4)\n", 1, 12, "has no argument 'outt'; did you mean 'out'"),
    "wrong_type_symbol": ("a : linear(out=abc)\n", 1, 16, "'abc' is not a param"),
    "wrong_type_float": ("a : linear(out=8 | 1.5)\n", 1, 20, "expected int, got float 1.5"),
    "wrong_type_structured": ("a : linear(out=window(3))\n", 1, 16, "not a structured value"),
    "out_of_range": ("a : clone(n=1) relu add\n", 1, 13, "below the minimum"),
    "missing_required_argument": ("a : norm linear\n", 1, 10, "needs argument 'out'"),
    "probabilities_over_one": ("a : norm\nb : norm @0.6 | relu @0.5 | gelu\n", 2, 1, "sum to 1.1 > 1"),
    "negative_probability": ("a : norm\n  | relu @-0.1\n", 2, 5, "negative"),
    "negative_argument_weight": ("a : linear(out=4 | 8@-1)\n", 1, 20, "negative"),
    "duplicate_rule": ("a : norm\nb : relu\na : gelu\n", 3, 1, "already defined at <string>:1:1"),
    "extend_undefined": ("a : norm\nb +: relu @0.5\n", 2, 1, "not defined"),
    "extend_without_probability": ("a : norm\na +: relu\n", 2, 1, "explicit @probability"),
    "include_not_found": ('a : norm\nuse "missing.pcfg"\n', 2, 1, "'missing.pcfg' not found"),
    "split_without_merge": ("a : norm\n  | clone(2) relu gelu\n", 2, 5, "must be closed by a merge"),
    "split_closed_by_unary": ("a : clone(2) relu gelu silu\n", 1, 5, "got 'silu'"),
    "merge_too_early": ("a : clone(2) relu add\n", 1, 19, "after 1 of 2"),
    "merge_without_split": ("a : relu add\n", 1, 10, "no split op opened"),
    "rule_used_with_arguments": ("a : b(3)\nb : norm\n", 1, 5, "'b' is a rule and takes no arguments"),
    "param_defined_twice": ("param w = 4\nparam w = 8\na : linear(out=w)\n", 2, 1, "already defined at <string>:1:1"),
    "unknown_limit": ("a : norm\nlimit dept = 3\n", 2, 1, "unknown limit 'dept'; did you mean 'depth'"),
    "nonpositive_limit": ("limit nodes = 0\na : norm\n", 1, 1, "must be positive"),
    "unknown_start": ("start nett\nnet : norm\n", 1, 1, "did you mean 'net'"),
    "repeated_split_op": ("a : clone(2)*2 relu relu add\n", 1, 5, "cannot be repeated"),
    "repeat_overfills_branches": ("a : clone(2) relu*3 add\n", 1, 14, "more branches"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_invalid_grammar_reports_exact_line_and_column(name):
    text, line, column, words = BAD[name]
    err = error_of(text)
    assert at(err) == (line, column), str(err)
    assert words in err.message, str(err)
    assert str(err).startswith(f"<string>:{line}:{column}: error: ")


def test_syntax_error_shows_the_offending_line_with_a_caret():
    err = error_of("a : norm\nb : relu $ gelu\n")
    assert err.context.splitlines() == ["    b : relu $ gelu", "             ^"]


def test_errors_name_the_file_they_occur_in(tmp_path):
    (tmp_path / "bad.pcfg").write_text("x : norm\nx : relu\n")
    main = tmp_path / "main.pcfg"
    main.write_text('use "bad.pcfg"\na : x\n')
    with pytest.raises(GrammarError) as info:
        load_grammar(main)
    assert info.value.location.file == str(tmp_path / "bad.pcfg")
    assert (info.value.location.line, info.value.location.column) == (2, 1)


def test_missing_grammar_file_is_a_grammar_error(tmp_path):
    with pytest.raises(GrammarError, match="not found"):
        load_grammar(tmp_path / "nope.pcfg")


def test_nothing_in_a_grammar_is_evaluated():
    # A would-be expression is just an unknown name, never run.
    err = error_of('a : linear(out=__import__)\n')
    assert "is not a param" in err.message


def test_bare_name_for_a_structured_argument_is_a_call_without_arguments(dict_op):
    g = Grammar.from_text(f"a : {dict_op}(pattern=full)\n")
    (term,) = g.rules["a"].productions[0].elems
    assert term.args["pattern"].values == ({"name": "full"},)


def test_argument_lists_and_tuples_may_span_lines():
    g = Grammar.from_text(
        "net : linear(out=8,      # width\n"
        "             bias=true) permute(order=(0,\n"
        "                                       2, 1))\n"
    )
    (prod,) = g.rules["net"].productions
    assert [e.op.name for e in prod.elems] == ["linear", "permute"]
    assert prod.elems[1].args["order"].values == ((0, 2, 1),)
