"""Derivation trees: one sampled architecture, as data.

Three node types mirror the grammar: ``OpNode`` (a terminal op with its chosen
arguments), ``RuleNode`` (a nonterminal and the production chosen for it) and
``BranchNode`` (a split op, its branches and the merge op closing them). A
derivation is plain data: JSON in and out, a canonical hash, a pretty printer
and a networkx view. Shapes are re-inferred on load, never trusted from files.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Union

from archgram.errors import ArchgramError, DerivationError
from archgram.shapes import Shape, fmt

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


def walk(node: Node) -> Iterator[Node]:
    """Pre-order traversal."""
    yield node
    for child in children_of(node):
        yield from walk(child)


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


@dataclass
class Derivation:
    """A sampled architecture: the tree plus the input shape it was typed for."""

    root: Node
    input_shape: Shape
    grammar: dict[str, str] = field(default_factory=dict)  # name and sha256 of the source
    globals: dict[str, Any] = field(default_factory=dict)  # values of 'global' params
    stats: dict[str, Any] = field(default_factory=dict)  # sampler statistics, not identity

    # -- identity --------------------------------------------------------
    def hash(self) -> str:
        """16 hex digits naming the architecture (see ``canonical``)."""
        from archgram.ops import all_ops

        commutative = frozenset(s.name for s in all_ops() if getattr(s.cls, "commutative", False))
        form = {"input": list(self.input_shape), "net": canonical(self.root, commutative)}
        text = json.dumps(form, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    # -- JSON --------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "grammar": dict(self.grammar),
            "input_shape": list(self.input_shape),
            "globals": {k: _arg_to_json(v) for k, v in self.globals.items()},
            "hash": self.hash(),
            "root": node_to_json(self.root),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Any) -> Derivation:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DerivationError(f"not an archgram derivation (expected \"format\": \"{FORMAT}\")")
        try:
            shape = tuple(int(d) for d in data["input_shape"])
        except (KeyError, TypeError, ValueError):
            raise DerivationError("derivation has no valid 'input_shape'") from None
        if not shape or min(shape) < 1:
            raise DerivationError(f"derivation input_shape {list(shape)} must be positive sizes")
        grammar, globals_ = data.get("grammar", {}), data.get("globals", {})
        if not isinstance(grammar, dict) or not isinstance(globals_, dict):
            raise DerivationError("derivation 'grammar' and 'globals' must be objects")
        derivation = cls(
            node_from_json(data.get("root")),
            shape,
            {str(k): str(v) for k, v in grammar.items()},
            {k: _arg_from_json(v) for k, v in globals_.items()},
        )
        try:
            derivation.infer_shapes()
        except DerivationError:
            raise
        except ArchgramError as exc:  # unknown op, shape rule refused: the file is not a valid derivation
            raise DerivationError(f"derivation does not type-check for input {fmt(shape)}: {exc}") from None
        return derivation

    @classmethod
    def from_json(cls, text: str) -> Derivation:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DerivationError(f"derivation is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    def copy(self) -> Derivation:
        return Derivation(clone_tree(self.root), self.input_shape, dict(self.grammar), dict(self.globals), dict(self.stats))

    # -- views -------------------------------------------------------------
    def infer_shapes(self) -> Shape:
        """Type-check the tree against the op registry; annotate and return the output shape."""
        from archgram.grammar.typing import infer

        shape, _ = infer(self.root, self.input_shape, ())
        return shape

    @property
    def output_shape(self) -> Shape:
        if self.root.out_shape is None:
            self.infer_shapes()
        return self.root.out_shape

    def ops(self) -> list[OpNode]:
        return [n for n in walk(self.root) if isinstance(n, OpNode)]

    def depth(self) -> int:
        return max(d for _, _, d in walk_with_parent(self.root))

    def size(self) -> int:
        """Number of op nodes (identities included)."""
        return len(self.ops())

    def pretty(self, shapes: bool = True) -> str:
        if shapes and self.root.out_shape is None:
            self.infer_shapes()
        lines: list[str] = []
        _pretty(self.root, "", True, lines, shapes, is_root=True)
        return "\n".join(lines)

    def to_networkx(self):
        from archgram.grammar.graph import to_networkx

        return to_networkx(self)

    def __str__(self) -> str:
        return self.pretty()


def op_label(node: OpNode) -> str:
    args = ", ".join(f"{k}={v}" for k, v in node.args.items())
    return f"{node.op}({args})" if args else node.op


def _pretty(node: Node, prefix: str, last: bool, out: list[str], shapes: bool, is_root=False) -> None:
    joint = "" if is_root else ("└─ " if last else "├─ ")
    shape = f"  {fmt(node.in_shape)} -> {fmt(node.out_shape)}" if shapes and node.in_shape else ""
    if isinstance(node, OpNode):
        label = op_label(node)
    elif isinstance(node, RuleNode):
        label = f"<{node.symbol}> #{node.alt}"
    else:
        label = "branch"
    out.append(f"{prefix}{joint}{label}{shape}")
    kids = children_of(node)
    child_prefix = prefix if is_root else prefix + ("   " if last else "│  ")
    for i, child in enumerate(kids):
        _pretty(child, child_prefix, i == len(kids) - 1, out, shapes)
