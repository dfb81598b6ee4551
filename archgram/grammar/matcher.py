"""The matcher behind ``parse_network``: which derivation of a grammar yields a
given token sequence.

It is a memoised dynamic program over (symbol, token span) of each
sequence: a production's items are laid over the span at every split point
(an op takes one token, or ``k`` equal ones for ``op*k``; a branch item takes
one group token and matches its split/merge slots and arms; a nonterminal
takes any non-empty span, ``module*k`` k identical, shape-preserving ones).
Among all derivations it keeps the one of least rule-nesting height (the
quantity the grammar's depth limit bounds), breaking ties by probability.
Unit cycles (``a : b``, ``b : a``) are cut, since they never lower the height.
What it tried where is kept, so ``explain`` can name the deepest point a
failed match reached.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

from archgram.grammar.derivation import BranchNode, Node, OpNode, RuleNode
from archgram.grammar.model import Branch, Grammar, NonTerm, Term
from archgram.grammar.network import BranchToken, OpToken, Token, TokenSeq, args_key, walk_tokens
from archgram.ops.registry import get_op
from archgram.shapes import fmt

INF = math.inf
#: Most arm orders tried for a commutative merge (add after clone) whose given
#: order the grammar cannot produce.
MAX_ARM_ORDERS = 24


@dataclass
class SpanMatch:
    """Best derivation of one item/span: nodes, rule-nesting height, -log prob."""

    nodes: list[Node]
    height: float
    cost: float

    def better(self, other: SpanMatch | None) -> bool:
        return other is None or (self.height, self.cost) < (other.height, other.cost)


def _nlp(p: float) -> float:
    return -math.log(p) if p > 0 else INF


class Matcher:
    def __init__(self, g: Grammar, shared: dict[str, Any]):
        self.g = g
        self.shared = shared  # fixed value of each 'global' param for this run
        self.memo: dict[tuple, SpanMatch | None] = {}
        self.slot_memo: dict[tuple, SpanMatch | None] = {}
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
                k = args_key(combo)
                got[k] = max(got.get(k, 0.0), p)
            self.term_index[id(t)] = got
        return got

    def _shared_ok(self, t: Term, combo: dict) -> bool:
        for name, space in t.args.items():
            if space.shared and self.shared.get(space.shared, combo[name]) != combo[name]:
                return False
        return True

    def term_tok(self, t: Term, tok: Token) -> float | None:
        """Probability of ``t`` producing op token ``tok``, or None."""
        if not isinstance(tok, OpToken) or tok.name != t.op.name:
            return None
        if t.combos is None:  # a large argument space: score the token's arguments directly
            p = t.combo_prob(tok.args)
            return p if p > 0 and self._shared_ok(t, tok.args) else None
        return self.combos(t).get(tok.key[2])

    # ------------------------------------------------------------- slots
    def slot(self, item: Term | NonTerm, tok: OpToken) -> SpanMatch | None:
        """A split/merge slot: an op, or a slot rule wrapping one (recursively)."""
        key = (id(item), tok.key)
        if key in self.slot_memo:
            return self.slot_memo[key]
        self.slot_memo[key] = None  # cuts slot-rule cycles
        best = None
        if isinstance(item, Term):
            p = self.term_tok(item, tok)
            if p:
                best = SpanMatch([OpNode(tok.name, dict(tok.args))], 0, _nlp(p))
        else:
            for prod in self.g.rules[item.name].productions:
                if prod.prob <= 0:
                    continue
                (inner,) = prod.elems
                sub = self.slot(inner, tok)
                if sub is None:
                    continue
                res = SpanMatch([RuleNode(item.name, prod.index, sub.nodes)], sub.height + 1, sub.cost + _nlp(prod.prob))
                if res.better(best):
                    best = res
        self.slot_memo[key] = best
        return best

    # -------------------------------------------------------------- rules
    def rule(self, name: str, seq: TokenSeq, i: int, j: int) -> SpanMatch | None:
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
            res = SpanMatch([RuleNode(name, prod.index, got.nodes)], got.height + 1, got.cost + _nlp(prod.prob))
            if res.better(best):
                best = res
        del self.active[key]
        if self.lowest_hit >= depth:  # depends on no span still in progress below it
            self.memo[key] = best
        self.lowest_hit = min(outer_hit, self.lowest_hit if self.lowest_hit < depth else INF)
        return best

    def production(self, prod, seq: TokenSeq, i: int, j: int) -> SpanMatch | None:
        elems = prod.elems
        m = len(elems)
        if j - i < m:
            return None
        local: dict[tuple[int, int], SpanMatch | None] = {}

        def fit(k: int, pos: int) -> SpanMatch | None:
            if k == m:
                return SpanMatch([], 0, 0.0) if pos == j else None
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
                res = SpanMatch(head.nodes + tail.nodes, max(head.height, tail.height), head.cost + tail.cost)
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
    def elem(self, e, seq: TokenSeq, i: int, j: int) -> SpanMatch | None:
        if isinstance(e, Term):
            return self.term_span(e, seq, i, j)
        if isinstance(e, NonTerm):
            return self.nonterm_span(e, seq, i, j)
        return self.branch(e, seq, i, j)

    def _note(self, seq: TokenSeq, i: int, label: str, ok: bool) -> None:
        self.tried.setdefault((seq.id, i), set()).add(label)
        if ok:
            self.matched.add((seq.id, i))

    def term_span(self, t: Term, seq: TokenSeq, i: int, j: int) -> SpanMatch | None:
        toks = seq.toks[i:j]
        p = self.term_tok(t, toks[0])
        self._note(seq, i, _term_label(t), p is not None)
        if p is None or len(toks) != t.repeat:
            return None
        if t.repeat > 1:
            if any(tok.key != toks[0].key for tok in toks) or seq.states[i] != seq.states[i + 1]:
                return None  # copies are identical and keep the shape
        return SpanMatch([OpNode(tok.name, dict(tok.args)) for tok in toks], 0, _nlp(p))

    def nonterm_span(self, e: NonTerm, seq: TokenSeq, i: int, j: int) -> SpanMatch | None:
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
        return SpanMatch([node] * r, sub.height, sub.cost)  # aliases: unaliased at the end

    def branch(self, b: Branch, seq: TokenSeq, i: int, j: int) -> SpanMatch | None:
        tok = seq.toks[i]
        if j != i + 1 or not isinstance(tok, BranchToken):
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
        return SpanMatch([node], height, opener.cost + closer.cost + arms.cost)

    def arms(self, b: Branch, arm_seqs: list[TokenSeq]) -> SpanMatch | None:
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
        return SpanMatch(nodes, height, cost)

    @staticmethod
    def fits(e, seq: TokenSeq) -> bool:
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


def explain(g: Grammar, m: Matcher, root: TokenSeq, symbol: str) -> str:
    """Name the deepest point the search reached: the first token (in network
    order) that the grammar was asked for and never produced there, else the
    innermost sequence no symbol could derive as a whole."""
    for seq, i, tok in walk_tokens(root):
        key = (seq.id, i)
        if key in m.tried and key not in m.matched:
            expected = sorted(m.tried[key])
            expected.sort(key=lambda x: x.startswith(("a branch", "branch")))
            shown = ", ".join(expected[:12]) + (", ..." if len(expected) > 12 else "")
            return (f"the grammar cannot produce op {tok.label()} at position {seq.path}[{i}] "
                    f"(input {fmt(seq.states[i][0])}); it can produce there: {shown}")
    deepest = None
    for _, _, tok in walk_tokens(root):
        if isinstance(tok, BranchToken):
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
