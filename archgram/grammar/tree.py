"""Derivation tree nodes and the walks over them.

Three node types mirror the grammar: ``OpNode`` (a terminal op with its chosen
arguments), ``RuleNode`` (a nonterminal and the production chosen for it) and
``BranchNode`` (a split op, its branches and the merge op closing them); JSON
in and out per node, copies, walks and the canonical form a hash is taken of.
Shape inference and the graph view build on these; ``Derivation`` wraps a root.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Union

from archgram.errors import DerivationError

FORMAT = "archgram.derivation/1"


@dataclass
class OpNode:
    op: str
    args: dict[str, Any] = field(default_factory=dict)
    # Filled by shape inference; not part of the architecture's identity.
    in_shape: Any = field(default=None, repr=False, compare=False)
    out_shape: Any = field(default=None, repr=False, compare=False)


@dataclass
class RuleNode:
    symbol: str
    alt: int
    children: list[Node] = field(default_factory=list)
    in_shape: Any = field(default=None, repr=False, compare=False)
    out_shape: Any = field(default=None, repr=False, compare=False)


@dataclass
class BranchNode:
    open: Node
    arms: list[Node]
    close: Node
    in_shape: Any = field(default=None, repr=False, compare=False)
    out_shape: Any = field(default=None, repr=False, compare=False)


Node = Union[OpNode, RuleNode, BranchNode]


# --------------------------------------------------------------------- JSON
def _arg_to_json(value: Any) -> Any:
    if isinstance(value, tuple):
        return {"tuple": [_arg_to_json(v) for v in value]}
    if isinstance(value, dict):
        return {k: _arg_to_json(v) for k, v in value.items()}
    return value


def _arg_from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"tuple"}:
            return tuple(_arg_from_json(v) for v in value["tuple"])
        return {k: _arg_from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        raise DerivationError(f"argument value {value!r}: lists are written as {{'tuple': [...]}}")
    return value


def node_to_json(node: Node) -> dict:
    if isinstance(node, OpNode):
        return {"op": node.op, "args": {k: _arg_to_json(v) for k, v in node.args.items()}}
    if isinstance(node, RuleNode):
        return {"rule": node.symbol, "alt": node.alt, "children": [node_to_json(c) for c in node.children]}
    return {
        "open": node_to_json(node.open),
        "arms": [node_to_json(a) for a in node.arms],
        "close": node_to_json(node.close),
    }


def node_from_json(data: Any, path: str = "root") -> Node:
    if not isinstance(data, dict):
        raise DerivationError(f"{path}: expected an object, got {type(data).__name__}")
    try:
        if "op" in data:
            args = data.get("args", {})
            if not isinstance(args, dict):
                raise DerivationError(f"{path}: 'args' must be an object")
            return OpNode(str(data["op"]), {k: _arg_from_json(v) for k, v in args.items()})
        if "rule" in data:
            children = data["children"]
            if not isinstance(children, list) or not children:
                raise DerivationError(f"{path}: 'children' must be a non-empty list")
            return RuleNode(
                str(data["rule"]),
                int(data["alt"]),
                [node_from_json(c, f"{path}/{i}") for i, c in enumerate(children)],
            )
        if "open" in data:
            if not isinstance(data["arms"], list):
                raise DerivationError(f"{path}: 'arms' must be a list")
            return BranchNode(
                node_from_json(data["open"], f"{path}/open"),
                [node_from_json(a, f"{path}/arm{i}") for i, a in enumerate(data["arms"])],
                node_from_json(data["close"], f"{path}/close"),
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise DerivationError(f"{path}: malformed node ({exc})") from None
    raise DerivationError(f"{path}: node has none of 'op', 'rule', 'open'")


def clone_tree(node: Node) -> Node:
    """Structural copy (much faster than deepcopy; args values are immutable)."""
    if isinstance(node, OpNode):
        return OpNode(node.op, dict(node.args), node.in_shape, node.out_shape)
    if isinstance(node, RuleNode):
        return RuleNode(node.symbol, node.alt, [clone_tree(c) for c in node.children], node.in_shape, node.out_shape)
    return BranchNode(clone_tree(node.open), [clone_tree(a) for a in node.arms], clone_tree(node.close),
                      node.in_shape, node.out_shape)


# -------------------------------------------------------------- traversal
def children_of(node: Node) -> list[Node]:
    if isinstance(node, RuleNode):
        return node.children
    if isinstance(node, BranchNode):
        return [node.open, *node.arms, node.close]
    return []


def named_children(node: Node) -> list[tuple[str, Node]]:
    """``children_of`` with each child's step in a node path: a rule's children
    ``0``, ``1``, ...; a branch's ``open``, ``arm0``, ``arm1``, ..., ``close``."""
    if isinstance(node, RuleNode):
        return [(str(i), c) for i, c in enumerate(node.children)]
    if isinstance(node, BranchNode):
        return [("open", node.open), *((f"arm{i}", a) for i, a in enumerate(node.arms)), ("close", node.close)]
    return []


def walk(node: Node) -> Iterator[Node]:
    """Pre-order traversal."""
    yield node
    for child in children_of(node):
        yield from walk(child)


def walk_paths(node: Node, path: str = "root", *, post: bool = False) -> Iterator[tuple[str, Node]]:
    """(path, node) of every node, e.g. ``root/0/arm1/2`` (the paths the
    compiler passes name modules by); parents before children, or after them
    with ``post`` (a rewrite that must see inner matches first)."""
    if not post:
        yield path, node
    for step, child in named_children(node):
        yield from walk_paths(child, f"{path}/{step}", post=post)
    if post:
        yield path, node


def walk_with_parent(node: Node, parent: Node | None = None, depth: int = 0):
    yield node, parent, depth
    for child in children_of(node):
        yield from walk_with_parent(child, node, depth + isinstance(node, RuleNode))


# -------------------------------------------------------- canonical form
def canonical(node: Node, commutative: frozenset[str] = frozenset()) -> Any:
    """Architecture-only form: rule wrappers dropped, nested sequences flattened,
    identities removed, and branches of commutative merges (after clone) sorted.
    Two derivations of the same network get the same form, whatever path the
    grammar took to reach it."""

    def seq(n: Node) -> list:
        if isinstance(n, RuleNode):
            return [x for c in n.children for x in seq(c)]
        if isinstance(n, OpNode):
            if n.op == "identity":
                return []
            return [["op", n.op, sorted((k, _arg_to_json(v)) for k, v in n.args.items())]]
        opener, closer = seq(n.open), seq(n.close)
        arms = [seq(a) for a in n.arms]
        closer_name = closer[0][1] if closer else ""
        opener_name = opener[0][1] if opener else ""
        if closer_name in commutative and opener_name == "clone":
            arms = sorted(arms, key=lambda a: json.dumps(a, sort_keys=True))
        return [["branch", opener, arms, closer]]

    return seq(node)


def op_label(node: OpNode) -> str:
    args = ", ".join(f"{k}={v}" for k, v in node.args.items())
    return f"{node.op}({args})" if args else node.op
