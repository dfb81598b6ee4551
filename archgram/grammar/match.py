"""Find a grammar's derivation of a given network (parsing an architecture).

Search is seeded with known architectures the way einspace seeds its evolution
with ResNet-18 and friends: the architecture is written once, as a network, and
``parse_network`` finds how *any* grammar derives it, so mutation and crossover
can then work on it like on any sample of that grammar.

A *network* is the rule-free form of an architecture: a sequence whose items
are ops and branch groups (a split op, one sequence per arm, a merge op).
Identity ops are real items (einspace routes through them). It can be given as
a ``Derivation`` or derivation node of another grammar, or as the JSON-able
list that :func:`network_of` returns::

    [["op", "linear", {"out": 64}],
     ["branch", ["op", "clone", {"n": 2}], [[...arm 0...], [...arm 1...]], ["op", "add", {}]]]

The matcher is a memoised dynamic program over (symbol, token span) of each
sequence: a production's items are laid over the span at every split point
(an op takes one token, or ``k`` equal ones for ``op*k``; a branch item takes
one group token and matches its split/merge slots and arms; a nonterminal
takes any non-empty span, ``module*k`` k identical, shape-preserving ones).
Among all derivations it keeps the one of least rule-nesting height (the
quantity the grammar's depth limit bounds), breaking ties by probability.
Unit cycles (``a : b``, ``b : a``) are cut, since they never lower the height.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Union

from archgram.errors import ArchgramError, DerivationError, ShapeError
from archgram.grammar.cost import cost
from archgram.grammar.derivation import (
    BranchNode,
    Derivation,
    Node,
    OpNode,
    RuleNode,
    _arg_from_json,
    _arg_to_json,
    clone_tree,
    walk,
)
from archgram.grammar.inference import resolve_op
from archgram.grammar.model import Branch, Grammar, NonTerm, Term, iter_terms
from archgram.ops.registry import get_op
from archgram.shapes import Shape, fmt

INF = math.inf
#: Most arm orders tried for a commutative merge (add after clone) whose given
#: order the grammar cannot produce.
MAX_ARM_ORDERS = 24


# ------------------------------------------------------------ network form
def _key(value: Any) -> Any:
    """Hashable, type-strict form of an argument value (True != 1, 1.0 != 1)."""
    if isinstance(value, (tuple, list)):
        return ("tuple", tuple(_key(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple(sorted((k, _key(v)) for k, v in value.items())))
    return (type(value).__name__, value)


def _args_key(args: dict) -> tuple:
    return tuple(sorted((k, _key(v)) for k, v in args.items()))


@dataclass(eq=False)
class _Op:
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
class _Group:
    open: _Op
    arms: list[_Seq]
    close: _Op
    key: tuple = ()

    def label(self) -> str:
        return f"branch {self.open.label()} .. {self.close.label()}"


_Tok = Union[_Op, _Group]


@dataclass(eq=False)
class _Seq:
    id: int
    toks: list[_Tok]
    path: str  # where this sequence sits, for messages
    states: list = field(default_factory=list)  # (shape, ctx) before each token, and after the last

    def key(self, i: int, j: int) -> tuple:
        return tuple(t.key for t in self.toks[i:j])


def _bind(name: str, args: dict, where: str) -> _Op:
    try:
        spec = get_op(name)
        bound = spec.bind(args)
    except (ArchgramError, TypeError) as exc:
        raise DerivationError(f"network {where}: {exc}") from None
    return _Op(name, bound, spec.kind, ("op", name, _args_key(bound)))


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


class _Builder:
    def __init__(self):
        self.seqs: list[_Seq] = []

    def seq(self, items: list, path: str) -> _Seq:
        if not isinstance(items, (list, tuple)) or not items:
            raise DerivationError(f"network {path}: a sequence must be a non-empty list of ops and branches")
        s = _Seq(len(self.seqs), [], path)
        self.seqs.append(s)
        for i, item in enumerate(items):
            s.toks.append(self.tok(item, f"{path}[{i}]"))
        return s

    def op(self, item: Any, where: str, kinds: tuple[str, ...]) -> _Op:
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

    def tok(self, item: Any, where: str) -> _Tok:
        if isinstance(item, (list, tuple)) and item and item[0] == "branch":
            if len(item) != 4:
                raise DerivationError(f"network {where}: expected ['branch', split op, [arms], merge op]")
            opener = self.op(item[1], f"{where}/split", ("split",))
            closer = self.op(item[3], f"{where}/merge", ("merge",))
            arms = [self.seq(a, f"{where}/arm{k}") for k, a in enumerate(item[2])]
            if not arms:
                raise DerivationError(f"network {where}: a branch needs arms")
            key = ("branch", opener.key, tuple(a.key(0, len(a.toks)) for a in arms), closer.key)
            return _Group(opener, arms, closer, key)
        return self.op(item, where, ("unary",))


def _type_network(seq: _Seq, shape: Shape, ctx: tuple) -> tuple[Shape, tuple]:
    """Shapes (and routing contexts) at every token boundary; the network must type-check."""
    seq.states = [(shape, ctx)]
    for i, tok in enumerate(seq.toks):
        where = f"{seq.path}[{i}]"
        try:
            if isinstance(tok, _Op):
                shape, ctx = get_op(tok.name).cls.transfer(shape, ctx, **tok.args)
            else:
                arm_shapes = get_op(tok.open.name).cls.output_shapes(shape, **tok.open.args)
                if len(arm_shapes) != len(tok.arms):
                    raise DerivationError(f"network {where}: {tok.open.label()} opens {len(arm_shapes)} "
                                          f"branches, the network gives {len(tok.arms)}")
                outs = []
                for arm, arm_shape in zip(tok.arms, arm_shapes, strict=True):
                    out, arm_ctx = _type_network(arm, arm_shape, ctx)
                    if arm_ctx != ctx:
                        raise DerivationError(f"network {arm.path}: an arm leaves an im2col open")
                    outs.append(out)
                shape = get_op(tok.close.name).cls.output_shape(outs, **tok.close.args)
        except ShapeError as exc:
            raise DerivationError(f"network {where} ({tok.label()}) does not type-check for input {fmt(shape)}: {exc}") from None
        seq.states.append((shape, ctx))
    return shape, ctx


# ------------------------------------------------------------- the matcher
@dataclass
class _Res:
    """Best derivation of one item/span: nodes, rule-nesting height, -log prob."""

    nodes: list[Node]
    height: float
    cost: float

    def better(self, other: _Res | None) -> bool:
        return other is None or (self.height, self.cost) < (other.height, other.cost)


def _nlp(p: float) -> float:
    return -math.log(p) if p > 0 else INF


class _Matcher:
    def __init__(self, g: Grammar, shared: dict[str, Any]):
        self.g = g
        self.shared = shared  # fixed value of each 'global' param for this run
        self.memo: dict[tuple, _Res | None] = {}
        self.slot_memo: dict[tuple, _Res | None] = {}
        self.active: dict[tuple, int] = {}  # in-progress rule spans -> stack index
        self.lowest_hit = INF  # lowest stack index of an in-progress span hit (cycle cut)
        self.tried: dict[tuple[int, int], set[str]] = {}  # (seq, pos) -> items tried there
        self.matched: set[tuple[int, int]] = set()
        self.whole_tried: dict[int, set[str]] = {}  # seq id -> symbols tried on the whole sequence
        self.copy_fail: dict[int, str] = {}  # seq id of a branch's first arm -> why copies failed
        self.term_index: dict[int, dict[tuple, float]] = {}
        self.minlen, self.maxlen = _span_bounds(g)

    # ---------------------------------------------------------- terminals
    def combos(self, t: Term) -> dict[tuple, float]:
        got = self.term_index.get(id(t))
        if got is None:
            got = {}
            for combo, p in t.combos:
                if p <= 0 or not self._shared_ok(t, combo):
                    continue
                k = _args_key(combo)
                got[k] = max(got.get(k, 0.0), p)
            self.term_index[id(t)] = got
        return got

    def _shared_ok(self, t: Term, combo: dict) -> bool:
        for name, space in t.args.items():
            if space.shared and self.shared.get(space.shared, combo[name]) != combo[name]:
                return False
        return True

    def term_tok(self, t: Term, tok: _Tok) -> float | None:
        """Probability of ``t`` producing op token ``tok``, or None."""
        if not isinstance(tok, _Op) or tok.name != t.op.name:
            return None
        if t.combos is None:  # a large argument space: score the token's arguments directly
            p = t.combo_prob(tok.args)
            return p if p > 0 and self._shared_ok(t, tok.args) else None
        return self.combos(t).get(tok.key[2])

    # ------------------------------------------------------------- slots
    def slot(self, item: Term | NonTerm, tok: _Op) -> _Res | None:
        """A split/merge slot: an op, or a slot rule wrapping one (recursively)."""
        key = (id(item), tok.key)
        if key in self.slot_memo:
            return self.slot_memo[key]
        self.slot_memo[key] = None  # cuts slot-rule cycles
        best = None
        if isinstance(item, Term):
            p = self.term_tok(item, tok)
            if p:
                best = _Res([OpNode(tok.name, dict(tok.args))], 0, _nlp(p))
        else:
            for prod in self.g.rules[item.name].productions:
                if prod.prob <= 0:
                    continue
                (inner,) = prod.elems
                sub = self.slot(inner, tok)
                if sub is None:
                    continue
                res = _Res([RuleNode(item.name, prod.index, sub.nodes)], sub.height + 1, sub.cost + _nlp(prod.prob))
                if res.better(best):
                    best = res
        self.slot_memo[key] = best
        return best

    # -------------------------------------------------------------- rules
    def rule(self, name: str, seq: _Seq, i: int, j: int) -> _Res | None:
        key = (name, seq.id, i, j)
        if key in self.memo:
            return self.memo[key]
        if key in self.active:  # a unit cycle: never lowers the height, cut it
            self.lowest_hit = min(self.lowest_hit, self.active[key])
            return None
        if i == 0 and j == len(seq.toks):
            self.whole_tried.setdefault(seq.id, set()).add(name)
        depth = len(self.active)
        self.active[key] = depth
        outer_hit, self.lowest_hit = self.lowest_hit, INF
        best = None
        for prod in self.g.rules[name].productions:
            if prod.prob <= 0:
                continue
            got = self.production(prod, seq, i, j)
            if got is None:
                continue
            res = _Res([RuleNode(name, prod.index, got.nodes)], got.height + 1, got.cost + _nlp(prod.prob))
            if res.better(best):
                best = res
        del self.active[key]
        if self.lowest_hit >= depth:  # depends on no span still in progress below it
            self.memo[key] = best
        self.lowest_hit = min(outer_hit, self.lowest_hit if self.lowest_hit < depth else INF)
        return best

    def production(self, prod, seq: _Seq, i: int, j: int) -> _Res | None:
        elems = prod.elems
        m = len(elems)
        if j - i < m:
            return None
        local: dict[tuple[int, int], _Res | None] = {}

        def fit(k: int, pos: int) -> _Res | None:
            if k == m:
                return _Res([], 0, 0.0) if pos == j else None
            if (k, pos) in local:
                return local[(k, pos)]
            best = None
            for end in self.ends(elems[k], pos, j - (m - k - 1), k == m - 1, j):
                if end <= pos:
                    continue
                head = self.elem(elems[k], seq, pos, end)
                if head is None:
                    continue
                tail = fit(k + 1, end)
                if tail is None:
                    continue
                res = _Res(head.nodes + tail.nodes, max(head.height, tail.height), head.cost + tail.cost)
                if res.better(best):
                    best = res
            local[(k, pos)] = best
            return best

        return fit(0, i)

    def ends(self, e, pos: int, limit: int, last: bool, j: int):
        """Where item ``e`` starting at ``pos`` may end (its token count is bounded)."""
        if isinstance(e, Term):
            return [pos + e.repeat] if pos + e.repeat <= limit else []
        if isinstance(e, Branch):
            return [pos + 1] if pos + 1 <= limit else []
        low = pos + e.repeat * self.minlen[e.name]
        high = min(limit, pos + e.repeat * self.maxlen[e.name])
        if last:
            return [j] if low <= j <= high else []
        return range(low, int(high) + 1)

    # -------------------------------------------------------------- items
    def elem(self, e, seq: _Seq, i: int, j: int) -> _Res | None:
        if isinstance(e, Term):
            return self.term_span(e, seq, i, j)
        if isinstance(e, NonTerm):
            return self.nonterm_span(e, seq, i, j)
        return self.branch(e, seq, i, j)

    def _note(self, seq: _Seq, i: int, label: str, ok: bool) -> None:
        self.tried.setdefault((seq.id, i), set()).add(label)
        if ok:
            self.matched.add((seq.id, i))

    def term_span(self, t: Term, seq: _Seq, i: int, j: int) -> _Res | None:
        toks = seq.toks[i:j]
        p = self.term_tok(t, toks[0])
        self._note(seq, i, _term_label(t), p is not None)
        if p is None or len(toks) != t.repeat:
            return None
        if t.repeat > 1:
            if any(tok.key != toks[0].key for tok in toks) or seq.states[i] != seq.states[i + 1]:
                return None  # copies are identical and keep the shape
        return _Res([OpNode(tok.name, dict(tok.args)) for tok in toks], 0, _nlp(p))

    def nonterm_span(self, e: NonTerm, seq: _Seq, i: int, j: int) -> _Res | None:
        r = e.repeat
        if (j - i) % r:
            return None
        step = (j - i) // r
        if r > 1:
            first = seq.key(i, i + step)
            if seq.states[i] != seq.states[i + step]:
                return None
            if any(seq.key(i + c * step, i + (c + 1) * step) != first for c in range(1, r)):
                return None
        sub = self.rule(e.name, seq, i, i + step)
        if sub is None:
            return None
        (node,) = sub.nodes
        return _Res([node] * r, sub.height, sub.cost)  # aliases: unaliased at the end

    def branch(self, b: Branch, seq: _Seq, i: int, j: int) -> _Res | None:
        tok = seq.toks[i]
        if j != i + 1 or not isinstance(tok, _Group):
            self._note(seq, i, f"a branch ({_slot_label(self.g, b.open)} ..)", False)
            return None
        ok = len(tok.arms) == b.n
        opener = self.slot(b.open, tok.open) if ok else None
        closer = self.slot(b.close, tok.close) if opener else None
        self._note(seq, i, f"branch {_slot_label(self.g, b.open)} x{b.n} .. {_slot_label(self.g, b.close)}",
                   closer is not None)
        if closer is None:
            return None
        arms = self.arms(b, tok.arms)
        if arms is None and get_op(tok.close.name).cls.commutative and tok.open.name == "clone":
            for order in itertools.islice(itertools.permutations(tok.arms), 1, MAX_ARM_ORDERS):
                arms = self.arms(b, list(order))
                if arms is not None:
                    break
        if arms is None:
            return None
        node = BranchNode(opener.nodes[0], arms.nodes, closer.nodes[0])
        height = max(opener.height, closer.height, arms.height)
        return _Res([node], height, opener.cost + closer.cost + arms.cost)

    def arms(self, b: Branch, arm_seqs: list[_Seq]) -> _Res | None:
        nodes: list[Node] = []
        height, cost, k = 0, 0.0, 0
        for arm in b.arms:
            group = arm_seqs[k : k + arm.copies]
            k += arm.copies
            first = group[0]
            if arm.copies > 1 and any(s.key(0, len(s.toks)) != first.key(0, len(first.toks)) for s in group[1:]):
                label = arm.elem.label if isinstance(arm.elem, (Term, NonTerm)) else "branch"
                self.copy_fail[arm_seqs[0].id] = (f"the grammar copies one arm ({label}*{arm.copies}), "
                                                  f"but arms {k - arm.copies}..{k - 1} differ")
                return None  # copies are sampled once: same structure
            res = self.elem(arm.elem, first, 0, len(first.toks)) if self.fits(arm.elem, first) else None
            if res is None:
                return None
            nodes.extend(res.nodes * arm.copies)
            height, cost = max(height, res.height), cost + res.cost
        return _Res(nodes, height, cost)

    @staticmethod
    def fits(e, seq: _Seq) -> bool:
        """An arm item takes the whole arm: a term or branch item only a 1-token one."""
        return isinstance(e, NonTerm) or len(seq.toks) == 1


def _span_bounds(g: Grammar) -> tuple[dict[str, float], dict[str, float]]:
    """Least and greatest number of tokens (ops and branch groups at one level)
    each rule can derive; greatest is infinite for rules recursing in sequence."""

    def item_len(e, table) -> float:
        if isinstance(e, Term):
            return e.repeat
        if isinstance(e, Branch):
            return 1
        return e.repeat * table[e.name]

    minlen = {name: INF for name in g.rules}
    changed = True
    while changed:
        changed = False
        for name, rule in g.rules.items():
            best = min(sum(item_len(e, minlen) for e in p.elems) for p in rule.productions)
            if best < minlen[name]:
                minlen[name], changed = best, True
    maxlen: dict[str, float] = {}
    state: dict[str, int] = {}

    def longest(name: str) -> float:
        if state.get(name) == 2:
            return maxlen[name]
        if state.get(name) == 1:  # recursion at sequence level: unbounded
            return INF
        state[name] = 1
        total = 0.0
        for p in g.rules[name].productions:
            size = sum(e.repeat * longest(e.name) if isinstance(e, NonTerm) else item_len(e, maxlen)
                       for e in p.elems)
            total = max(total, size)
        state[name] = 2
        maxlen[name] = total
        return total

    for name in g.rules:
        longest(name)
    return minlen, maxlen


def _term_label(t: Term) -> str:
    parts = []
    for name, space in t.args.items():
        arg = t.op.args[name]
        if len(space.values) == 1 and not arg.required and space.values[0] == arg.default:
            continue
        parts.append(f"{name}=" + "|".join(str(v) for v in space.values))
    return f"{t.op.name}({', '.join(parts)})" if parts else t.op.name


def _slot_label(g: Grammar, item) -> str:
    if isinstance(item, Term):
        return _term_label(item)
    return f"<{item.name}>"


def _shared_assignments(g: Grammar, root: _Seq) -> list[dict[str, Any]]:
    """Values to try for 'global' params: those the network uses, else any."""
    spaces: dict[str, list] = {}
    for rule in g.rules.values():
        for prod in rule.productions:
            for t in iter_terms(prod.elems):
                for space in t.args.values():
                    if space.shared:
                        spaces.setdefault(space.shared, list(space.values))
    if not spaces:
        return [{}]
    names = sorted(spaces)
    options = [spaces[n] for n in names]
    out = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*options)]
    if len(out) > 256:
        raise DerivationError(f"global params {', '.join(names)} have {len(out)} joint values; matching supports 256")
    return out


def _walk_toks(seq: _Seq):
    for i, tok in enumerate(seq.toks):
        yield seq, i, tok
        if isinstance(tok, _Group):
            for arm in tok.arms:
                yield from _walk_toks(arm)


def _explain(g: Grammar, m: _Matcher, root: _Seq, symbol: str) -> str:
    """Name the deepest point the search reached: the first token (in network
    order) that the grammar was asked for and never produced there, else the
    innermost sequence no symbol could derive as a whole."""
    for seq, i, tok in _walk_toks(root):
        key = (seq.id, i)
        if key in m.tried and key not in m.matched:
            expected = sorted(m.tried[key])
            expected.sort(key=lambda x: x.startswith(("a branch", "branch")))
            shown = ", ".join(expected[:12]) + (", ..." if len(expected) > 12 else "")
            return (f"the grammar cannot produce op {tok.label()} at position {seq.path}[{i}] "
                    f"(input {fmt(seq.states[i][0])}); it can produce there: {shown}")
    deepest = None
    for _, _, tok in _walk_toks(root):
        if isinstance(tok, _Group):
            if tok.arms[0].id in m.copy_fail:
                return f"at the branch {tok.label()} ({tok.arms[0].path[:-5]}): {m.copy_fail[tok.arms[0].id]}"
            for arm in tok.arms:
                if arm.id in m.whole_tried:
                    deepest = arm
    if deepest is not None:
        names = ", ".join(f"<{n}>" for n in sorted(m.whole_tried[deepest.id]))
        ops = " ".join(t.label() for t in deepest.toks)
        return f"no derivation of {names} yields the ops at {deepest.path}: {ops}"
    return f"no derivation of <{symbol}> yields the ops of this network in this order"


# ------------------------------------------------------------- public API
def parse_network(
    grammar: Grammar,
    network: Derivation | Node | list,
    input_shape: Shape,
    symbol: str | None = None,
    *,
    max_depth: int | None = None,
) -> Derivation:
    """A derivation of ``grammar`` (from its start symbol, or ``symbol``) whose
    network is exactly ``network``: same ops in the same order, same branch
    structure, same argument values (each among the choices of its terminal;
    omitted arguments take the op's defaults), ``item*k`` copies identical.

    Of all such derivations it returns one of least rule-nesting height (so it
    fits the grammar's depth limit whenever any does), ties broken by
    probability. Sampling limits on nodes, parameters, FLOPs and memory are
    *not* enforced: baselines are bigger than random samples. The depth limit
    is not enforced either unless ``max_depth`` is given; ``stats`` records
    ``depth`` and, under ``exceeds``, each grammar limit the result goes over.
    For a clone+add (commutative) branch whose arm order the grammar cannot
    produce, other arm orders are tried (same network, same hash).

    Raises DerivationError when no derivation exists, naming the deepest point
    reached ("the grammar cannot produce op X at position ...").
    """
    symbol = symbol or grammar.start
    if symbol not in grammar.rules:
        raise DerivationError(f"'{symbol}' is not a rule of grammar '{grammar.name}'")
    shape = tuple(int(d) for d in input_shape)
    builder = _Builder()
    root = builder.seq(network_of(network), "root")
    _type_network(root, shape, ())
    best, best_matcher, best_shared = None, None, {}
    for shared in _shared_assignments(grammar, root):
        m = _Matcher(grammar, shared)
        got = m.rule(symbol, root, 0, len(root.toks))
        if got is not None and got.better(best):
            best, best_matcher, best_shared = got, m, shared
        best_matcher = best_matcher or m
    if best is None:
        raise DerivationError(f"grammar '{grammar.name}' cannot derive this network from <{symbol}>: "
                              + _explain(grammar, best_matcher, root, symbol))
    if max_depth is not None and best.height > max_depth:
        raise DerivationError(f"grammar '{grammar.name}' derives this network only with rule nesting "
                              f"{int(best.height)} > max_depth {max_depth}")
    used = {name for t in _used_shared(grammar, best.nodes[0]) for name in t}
    d = Derivation(clone_tree(best.nodes[0]), shape, {"name": grammar.name, "sha256": grammar.sha256[:16]},
                   {k: v for k, v in best_shared.items() if k in used})
    try:
        d.infer_shapes()
    except (ShapeError, DerivationError) as exc:  # the network type-checked, so this is a matcher bug
        raise DerivationError(f"matched derivation does not type-check: {exc}") from None
    d.stats = _stats(grammar, d, best)
    return d


def _used_shared(g: Grammar, node: Node):
    """Names of the global params the derivation's terminals draw (approximate:
    every global param of an op name the derivation uses)."""
    ops = {n.op for n in walk(node) if isinstance(n, OpNode)}
    for rule in g.rules.values():
        for prod in rule.productions:
            for t in iter_terms(prod.elems):
                if t.op.name in ops:
                    yield [s.shared for s in t.args.values() if s.shared]


def _stats(g: Grammar, d: Derivation, best: _Res) -> dict[str, Any]:
    stats: dict[str, Any] = {"parsed": True, "depth": d.depth(), "nodes": d.size(),
                             "log_prob": -best.cost if best.cost < INF else None}
    exceeds = []
    if stats["depth"] > g.limits.depth:
        exceeds.append(f"depth {stats['depth']} > {g.limits.depth}")
    if stats["nodes"] > g.limits.nodes:
        exceeds.append(f"nodes {stats['nodes']} > {g.limits.nodes}")
    try:
        params = cost(d.root, ctx=())[1]
    except Exception:  # pragma: no cover - counting never blocks a parse
        params = None
    if params is not None:
        stats["params"] = params
        if params > g.limits.params:
            exceeds.append(f"params {params} > {g.limits.params:.3g}")
    stats["exceeds"] = exceeds
    return stats


__all__ = ["network_of", "network_to_json", "parse_network"]
