"""Derivation -> nn.Module: samples compile and run, the printed module reads
like the derivation, and a derivation re-typed for another input fails loudly."""
from __future__ import annotations

import pytest
import torch

import archgram
from archgram.errors import CompileError
from archgram.grammar.derivation import BranchNode, Derivation, OpNode, RuleNode
from archgram.grammar.model import Grammar, load_grammar


@pytest.fixture(scope="module")
def einspace():
    return load_grammar("einspace")


@pytest.mark.parametrize("shape", [(2, 3, 16, 16), (2, 10, 12)], ids=["image", "sequence"])
def test_samples_compile_and_run_forward_and_backward(einspace, shape):
    for seed in range(10):
        d = einspace.sample(shape, seed=seed)
        net = archgram.compile(d)
        x = torch.randn(shape, requires_grad=True)
        y = net(x)
        assert tuple(y.shape) == d.output_shape
        y.float().pow(2).mean().backward()
        assert x.grad is not None and x.grad.shape == x.shape
        assert net.arch_hash == d.hash() and net.num_params() == d.stats["params"]


def test_repeated_items_become_independent_modules():
    g = Grammar.from_text("net : block*3\nblock : linear(out=4) relu\n")
    d = g.sample((2, 4, 3, 3), seed=0)
    net = archgram.compile(d)
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 3
    assert len({id(m.weight) for m in linears}) == 3, "copies must not share weights"
    assert net.num_params() == 3 * (4 * 4 + 4)


def test_branch_copies_become_independent_arms():
    g = Grammar.from_text("net : clone(4) arm*4 add\narm : linear(out=4)\n")
    net = archgram.compile(g.sample((2, 4, 3, 3), seed=0))
    assert net.num_params() == 4 * 20
    branch = net.body[0]
    assert len(branch.arms) == 4
    assert len({id(a[0].proj.weight) for a in branch.arms}) == 4


def test_residual_branch_computes_x_plus_f_x():
    g = Grammar.from_text("net : clone(2) id f add\nid : identity\nf : linear(out=4, bias=false)\n")
    net = archgram.compile(g.sample((2, 4, 3, 3), seed=0))
    (linear,) = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    x = torch.randn(2, 4, 3, 3)
    ref = x + torch.einsum("oc,bchw->bohw", linear.weight, x)
    torch.testing.assert_close(net(x), ref)


def test_printed_model_names_every_op_by_its_grammar_name(einspace):
    for seed in range(8):
        d = einspace.sample((8, 3, 32, 32), seed=seed)
        text = str(archgram.compile(d))
        assert "<network>" in text
        for node in d.ops():
            assert f"{node.op}(" in text, f"{node.op} missing from\n{text}"


def test_printed_model_shows_structure_and_arguments():
    g = Grammar.from_text("net : clone(2) a b concat(dim=1) posenc\na : linear(out=4)\nb : im2col(k=3, p=1) linear(out=2) col2im\n")
    text = str(archgram.compile(g.sample((2, 4, 5, 5), seed=0)))
    for word in ("Branch(", "clone(n=2)", "concat(dim=1)", "<a>", "<b>", "im2col(k=3, s=1, p=1)", "col2im(grid=5x5)",
                 "linear(", "in_features=4, out_features=4", "in_features=36, out_features=2", "posenc("):
        assert word in text, f"{word!r} missing from\n{text}"


def test_compile_for_another_input_shape_retypes_the_network():
    g = Grammar.from_text("net : linear(out=8) global_pool\n")
    d = g.sample((2, 3, 4, 4), seed=0)
    net = archgram.compile(d, (5, 3, 7, 9))
    assert net(torch.randn(5, 3, 7, 9)).shape == (5, 1, 8)
    assert d.input_shape == (2, 3, 4, 4), "the derivation itself is not changed"


def test_compile_error_names_the_node_that_does_not_type_check():
    g = Grammar.from_text("net : norm block\nblock : im2col(k=4, s=4) linear(out=6) col2im\n")
    d = g.sample((2, 3, 8, 8), seed=0)
    with pytest.raises(CompileError) as info:
        archgram.compile(d, (2, 3, 2, 2))
    message = str(info.value)
    assert "im2col" in message and "block" in message and "(2,3,2,2)" in message
    assert d.hash() in message


def test_compile_error_for_a_channel_mismatch_names_the_merge():
    root = RuleNode("net", 0, [BranchNode(OpNode("clone", {"n": 2}), [OpNode("relu"), OpNode("permute", {"order": (0, 1, 3, 2)})], OpNode("add"))])
    d = Derivation(root, (2, 3, 4, 4))
    archgram.compile(d)
    with pytest.raises(CompileError, match="add"):
        archgram.compile(d, (2, 3, 4, 5))


def test_compile_error_for_an_unknown_op():
    d = Derivation(RuleNode("net", 0, [OpNode("lienar", {"out": 3})]), (2, 3, 4, 4))
    with pytest.raises(CompileError, match="lienar"):
        archgram.compile(d)
