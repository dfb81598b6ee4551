"""Weight inheritance: a child starts from its parent's trained weights exactly on the
subtrees it shares with the parent (same path, same subtree, same input shape)."""
from __future__ import annotations

import pytest
import torch

from archgram.grammar.derivation import Derivation
from archgram.grammar.model import Grammar
from archgram.search.evaluator import build_model, evaluate
from archgram.search.inherit import inherit, shared_paths
from archgram.search.weights import load_weights
from archgram.tasks import get_task

BS = 16
TEXT = """start net
net : a b
a   : linear(out=16) relu @0.5 | linear(out=24) relu @0.5
b   : linear(out=8) @0.5 | linear(out=32) @0.5
"""


def _with(a: int, b: int) -> Derivation:
    """The grammar's derivation with a = linear(out=a), b = linear(out=b), built by hand."""
    g = Grammar.from_text(TEXT, path="<inherit>")
    for seed in range(200):
        d = g.sample((BS, 1, 8, 8), seed=seed)
        outs = [n.children[0].args["out"] for n in d.root.children]
        if outs == [a, b]:
            return d
    raise AssertionError("not sampled")


def _models(parent: Derivation, child: Derivation, digits):
    torch.manual_seed(0)
    pm = build_model(parent, digits, BS)[0]
    torch.manual_seed(1)
    cm = build_model(child, digits, BS)[0]
    before = {k: v.clone() for k, v in cm.state_dict().items()}
    n = inherit(cm, pm.state_dict(), parent, child)
    return pm.state_dict(), before, cm.state_dict(), n


def _copied(parent, before, after, key):
    return torch.equal(after[key], parent[key]) and not torch.equal(before[key], parent[key])


def test_a_resampled_subtree_starts_fresh_and_the_shared_one_is_copied():
    digits = get_task("digits")
    parent, child = _with(16, 8), _with(16, 32)
    assert shared_paths(parent, child) == ["network.body.0"]  # subtree a, not b
    p, before, after, n = _models(parent, child, digits)
    a_keys = [k for k in after if k.startswith("network.body.0.")]
    b_keys = [k for k in after if k.startswith("network.body.1.")]
    assert a_keys and b_keys and n == len(a_keys)
    assert all(_copied(p, before, after, k) for k in a_keys)
    assert all(torch.equal(after[k], before[k]) for k in b_keys)  # the new linear(out=32): its own init
    assert all(torch.equal(after[k], before[k]) for k in after if k.startswith("network.head."))  # 8 -> 32 wide


def test_a_subtree_whose_input_shape_changed_keeps_nothing_and_the_head_follows_the_output_shape():
    digits = get_task("digits")
    parent, child = _with(16, 8), _with(24, 8)  # b is the same op, but now reads 24 channels
    assert shared_paths(parent, child) == []
    p, before, after, n = _models(parent, child, digits)
    assert all(torch.equal(after[k], before[k]) for k in after if k.startswith("network.body."))
    head = [k for k in after if k.startswith("network.head.")]
    assert head and all(_copied(p, before, after, k) for k in head) and n == len(head)  # output still 8 wide


def test_a_child_equal_to_its_parent_inherits_everything_and_scores_as_the_parent(tmp_path):
    digits = get_task("digits")
    d = _with(16, 8)
    path = str(tmp_path / "parent.safetensors")
    opts = {"threads": 1, "warmup": 0.0}
    parent = evaluate(d, digits, "30steps", seed=0, batch_size=BS, weights=path, train_options=opts)
    # one step at a negligible learning rate: the child is the trained parent
    child = evaluate(d, digits, "1steps", seed=5, batch_size=BS, lr=1e-12, optimizer="sgd", train_options=opts,
                     inherit_from=(path, d))
    assert child.extras["inherited"] == len(load_weights(path))
    assert child.score == pytest.approx(parent.score)
    fresh = evaluate(d, digits, "1steps", seed=5, batch_size=BS, lr=1e-12, optimizer="sgd", train_options=opts)
    assert fresh.score != pytest.approx(parent.score)
