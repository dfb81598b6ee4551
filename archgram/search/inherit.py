"""Weight inheritance: a mutated or crossed-over child starts from its parent's
trained weights for every subtree it shares with that parent (Lamarckian
inheritance, as LEMONADE's network morphisms pass weights on; here the
correspondence comes from the derivation, not from morphism rules).

The rule. The compiler builds one module per derivation node, at a module path
that is the node's path in the tree (a rule's children ``0, 1, ...``, a
branch's ``arms.i``). A child node is *shared* with the parent when the node at
the same path in the parent is the same subtree (same rules, ops and
arguments) with the same input shape; mutation resamples one subtree and
crossover grafts one, so everything outside it keeps its path. Every parameter
and buffer under a shared node is copied from the parent's trained state.
Subtrees whose shapes changed are **not** copied, even partly (a linear whose
input width changed keeps nothing): they start from the initialisation, like
the resampled subtree itself; so does anything whose tensor shape differs from
the parent's. The task's stem is copied (same task); its head is copied when
the body's output shape is unchanged (then every head tensor has the parent's
shape).
"""
from __future__ import annotations

import torch

from archgram.grammar.derivation import BranchNode, Derivation, Node, OpNode, RuleNode

BODY = "network.body"
#: proposals that start from a parent's trained weights: a mutated or crossed-over
#: child, and a multi-fidelity promotion (its parent is itself on the rung below,
#: every subtree shared, so it continues training where that run stopped)
INHERITING_ORIGINS = ("mutation", "crossover", "promotion")


def _children(node: Node, prefix: str):
    """(module path, child node) of a node's children, as the compiler names them."""
    if isinstance(node, RuleNode):
        for i, child in enumerate(node.children):
            yield f"{prefix}.{i}", child
    elif isinstance(node, BranchNode):
        for i, arm in enumerate(node.arms):
            yield f"{prefix}.arms.{i}", arm


def inherits(proposal) -> bool:
    """Whether a proposal starts from a parent's trained weights (when kept)."""
    return proposal.origin in INHERITING_ORIGINS and bool(proposal.parents)


def trial_budget(proposal, parent, default):
    """What a proposal trains: its own budget, except a promotion whose shorter
    run's weights are gone (``parent`` None), which trains its whole rung from
    the initialisation instead of only the steps it lacked."""
    if proposal.origin == "promotion" and parent is None and "cold_budget" in proposal.info:
        return proposal.info["cold_budget"]
    return proposal.budget or default


def shared_paths(parent: Derivation, child: Derivation) -> list[str]:
    """Module paths (under the body) of the child's maximal subtrees shared with the parent."""
    parent, child = parent.copy(), child.copy()
    parent.infer_shapes()
    child.infer_shapes()
    out: list[str] = []

    def visit(p: Node, c: Node, path: str) -> None:
        if type(p) is type(c) and p == c and tuple(p.in_shape or ()) == tuple(c.in_shape or ()):
            out.append(path)
            return
        if isinstance(c, OpNode) or type(p) is not type(c):
            return
        if isinstance(c, RuleNode) and (p.symbol != c.symbol or p.alt != c.alt):
            return  # another production: its children are other things
        pk = dict(_children(p, path))
        for key, cc in _children(c, path):
            if key in pk:
                visit(pk[key], cc, key)

    visit(parent.root, child.root, BODY)
    return out


def inherit(model: torch.nn.Module, parent_state: dict[str, torch.Tensor], parent: Derivation, child: Derivation) -> int:
    """Copy the parent's tensors into ``model`` (a TaskModel of ``child``) for every
    shared subtree, the stem, and the head when the body output kept its shape.
    Returns how many tensors were copied."""
    paths = shared_paths(parent, child)
    same_out = tuple(parent.copy().infer_shapes()) == tuple(child.copy().infer_shapes())
    prefixes = tuple(p + "." for p in paths) + ("stem.",) + (("network.head.",) if same_out else ())
    own = model.state_dict()
    copied = 0
    with torch.no_grad():
        for key, tensor in own.items():
            if key.startswith(prefixes) and key in parent_state and parent_state[key].shape == tensor.shape:
                tensor.copy_(parent_state[key])
                copied += 1
    return copied
