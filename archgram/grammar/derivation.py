"""Derivation trees: one sampled architecture, as data.

The nodes live in ``archgram.grammar.tree`` (re-exported here). A derivation is
plain data: JSON in and out, a canonical hash, a pretty printer and a networkx
view. Shapes are re-inferred on load, never trusted from files.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from archgram.errors import ArchgramError, DerivationError
from archgram.grammar.graph import to_networkx
from archgram.grammar.inference import infer
from archgram.grammar.tree import (  # noqa: F401  (re-exported: the derivation's vocabulary)
    FORMAT,
    BranchNode,
    Node,
    OpNode,
    RuleNode,
    _arg_from_json,
    _arg_to_json,
    canonical,
    children_of,
    clone_tree,
    named_children,
    node_from_json,
    node_to_json,
    op_label,
    walk,
    walk_paths,
    walk_with_parent,
)
from archgram.ops import all_ops
from archgram.shapes import Shape, fmt


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
        return to_networkx(self)

    def __str__(self) -> str:
        return self.pretty()


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
