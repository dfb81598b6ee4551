"""The network form of an architecture, as ``parse_network`` reads it.

A *network* is the rule-free form of an architecture: a sequence whose items
are ops and branch groups (a split op, one sequence per arm, a merge op).
Identity ops are real items (einspace routes through them). It can be given as
a ``Derivation`` or derivation node of another grammar, or as the JSON-able
list that :func:`network_of` returns::

    [["op", "linear", {"out": 64}],
     ["branch", ["op", "clone", {"n": 2}], [[...arm 0...], [...arm 1...]], ["op", "add", {}]]]

``NetworkBuilder`` turns that list into token sequences (ops bound to their
typed arguments, each token with a hashable key) and ``type_network`` records
the shape before and after every token, which the matcher compares.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from archgram.errors import ArchgramError, DerivationError, ShapeError
from archgram.grammar.derivation import BranchNode, Derivation, Node, OpNode, RuleNode, _arg_from_json, _arg_to_json
from archgram.grammar.inference import resolve_op
from archgram.ops.registry import get_op
from archgram.shapes import Shape, fmt


def _key(value: Any) -> Any:
    """Hashable, type-strict form of an argument value (True != 1, 1.0 != 1)."""
    if isinstance(value, (tuple, list)):
        return ("tuple", tuple(_key(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple(sorted((k, _key(v)) for k, v in value.items())))
    return (type(value).__name__, value)


def args_key(args: dict) -> tuple:
    return tuple(sorted((k, _key(v)) for k, v in args.items()))


@dataclass(eq=False)
class OpToken:
    name: str
    args: dict  # bound: defaults filled, type-checked
    kind: str
    key: tuple = ()

    def label(self) -> str:
        spec = get_op(self.name)
        shown = {k: v for k, v in self.args.items() if spec.args[k].required or v != spec.args[k].default}
        inner = ", ".join(f"{k}={v}" for k, v in shown.items())
        return f"{self.name}({inner})" if inner else self.name


@dataclass(eq=False)
class BranchToken:
    open: OpToken
    arms: list[TokenSeq]
    close: OpToken
    key: tuple = ()

    def label(self) -> str:
        return f"branch {self.open.label()} .. {self.close.label()}"


Token = Union[OpToken, BranchToken]


@dataclass(eq=False)
class TokenSeq:
    id: int
    toks: list[Token]
    path: str  # where this sequence sits, for messages
    states: list = field(default_factory=list)  # (shape, ctx) before each token, and after the last

    def key(self, i: int, j: int) -> tuple:
        return tuple(t.key for t in self.toks[i:j])


def _bind(name: str, args: dict, where: str) -> OpToken:
    try:
        spec = get_op(name)
        bound = spec.bind(args)
    except (ArchgramError, TypeError) as exc:
        raise DerivationError(f"network {where}: {exc}") from None
    return OpToken(name, bound, spec.kind, ("op", name, args_key(bound)))


def _from_node(node: Node, where: str) -> list:
    """Rule wrappers dropped, identities kept, arm order kept."""
    if isinstance(node, RuleNode):
        return [x for c in node.children for x in _from_node(c, where)]
    if isinstance(node, OpNode):
        return [["op", node.op, dict(node.args)]]
    opener, closer = resolve_op(node.open), resolve_op(node.close)
    return [["branch", ["op", opener.op, dict(opener.args)], [_from_node(a, where) for a in node.arms],
             ["op", closer.op, dict(closer.args)]]]


def network_of(network: Derivation | Node | list) -> list:
    """The network (rule-free op sequence, JSON-able) of a derivation or node."""
    if isinstance(network, Derivation):
        return _from_node(network.root, "root")
    if isinstance(network, (OpNode, RuleNode, BranchNode)):
        return _from_node(network, "root")
    if isinstance(network, (list, tuple)):
        return list(network)
    raise DerivationError(f"a network is a Derivation, a derivation node or a list, not {type(network).__name__}")


def network_to_json(network: Derivation | Node | list) -> list:
    """``network_of`` with tuple arguments written as ``{"tuple": [...]}`` (JSON-safe)."""

    def conv(item):
        if item[0] == "op":
            return ["op", item[1], {k: _arg_to_json(v) for k, v in item[2].items()}]
        return ["branch", conv(item[1]), [[conv(x) for x in arm] for arm in item[2]], conv(item[3])]

    return [conv(x) for x in network_of(network)]


class NetworkBuilder:
    def __init__(self):
        self.seqs: list[TokenSeq] = []

    def seq(self, items: list, path: str) -> TokenSeq:
        if not isinstance(items, (list, tuple)) or not items:
            raise DerivationError(f"network {path}: a sequence must be a non-empty list of ops and branches")
        s = TokenSeq(len(self.seqs), [], path)
        self.seqs.append(s)
        for i, item in enumerate(items):
            s.toks.append(self.tok(item, f"{path}[{i}]"))
        return s

    def op(self, item: Any, where: str, kinds: tuple[str, ...]) -> OpToken:
        if not (isinstance(item, (list, tuple)) and len(item) in (2, 3) and item[0] == "op"):
            raise DerivationError(f"network {where}: expected ['op', name, {{args}}], got {item!r}"[:300])
        args = item[2] if len(item) == 3 else {}
        if isinstance(args, (list, tuple)):  # canonical()'s sorted (name, value) pairs
            args = {k: v for k, v in args}
        args = {k: _arg_from_json(v) if isinstance(v, dict) else v for k, v in args.items()}
        op = _bind(str(item[1]), args, where)
        if op.kind not in kinds:
            raise DerivationError(f"network {where}: {op.name} is a {op.kind} op, expected {' or '.join(kinds)}")
        return op

    def tok(self, item: Any, where: str) -> Token:
        if isinstance(item, (list, tuple)) and item and item[0] == "branch":
            if len(item) != 4:
                raise DerivationError(f"network {where}: expected ['branch', split op, [arms], merge op]")
            opener = self.op(item[1], f"{where}/split", ("split",))
            closer = self.op(item[3], f"{where}/merge", ("merge",))
            arms = [self.seq(a, f"{where}/arm{k}") for k, a in enumerate(item[2])]
            if not arms:
                raise DerivationError(f"network {where}: a branch needs arms")
            key = ("branch", opener.key, tuple(a.key(0, len(a.toks)) for a in arms), closer.key)
            return BranchToken(opener, arms, closer, key)
        return self.op(item, where, ("unary",))


def type_network(seq: TokenSeq, shape: Shape, ctx: tuple) -> tuple[Shape, tuple]:
    """Shapes (and routing contexts) at every token boundary; the network must type-check."""
    seq.states = [(shape, ctx)]
    for i, tok in enumerate(seq.toks):
        where = f"{seq.path}[{i}]"
        try:
            if isinstance(tok, OpToken):
                shape, ctx = get_op(tok.name).cls.transfer(shape, ctx, **tok.args)
            else:
                arm_shapes = get_op(tok.open.name).cls.output_shapes(shape, **tok.open.args)
                if len(arm_shapes) != len(tok.arms):
                    raise DerivationError(f"network {where}: {tok.open.label()} opens {len(arm_shapes)} "
                                          f"branches, the network gives {len(tok.arms)}")
                outs = []
                for arm, arm_shape in zip(tok.arms, arm_shapes, strict=True):
                    out, arm_ctx = type_network(arm, arm_shape, ctx)
                    if arm_ctx != ctx:
                        raise DerivationError(f"network {arm.path}: an arm leaves an im2col open")
                    outs.append(out)
                shape = get_op(tok.close.name).cls.output_shape(outs, **tok.close.args)
        except ShapeError as exc:
            raise DerivationError(f"network {where} ({tok.label()}) does not type-check for input {fmt(shape)}: {exc}") from None
        seq.states.append((shape, ctx))
    return shape, ctx


def walk_tokens(seq: TokenSeq):
    for i, tok in enumerate(seq.toks):
        yield seq, i, tok
        if isinstance(tok, BranchToken):
            for arm in tok.arms:
                yield from walk_tokens(arm)
