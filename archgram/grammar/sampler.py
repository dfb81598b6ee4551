"""Shape-typed sampling of derivations.

The sampler walks the grammar top-down carrying the current tensor shape (and
routing context). At each choice it only takes options whose shape rule accepts
that shape, whose output matches what the enclosing merge needs (a *target*
pattern, e.g. ``add`` wants the first branch's shape again), and whose
parameters, FLOPs and activation memory fit the budget: all measured from shape
rules and meta-device modules, before any tensor exists. Productions that could
not finish within the depth/node limits are never chosen (minimum sizes are
precomputed), so the limits cut nothing off mid-tree.

A choice that fails further down is undone and the next option is tried
(backtracking). Every rejected option is counted in ``Derivation.stats`` so the
rejection rate is reported, not hidden.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from archgram.errors import SamplingError, ShapeError
from archgram.grammar.derivation import BranchNode, Derivation, Node, OpNode, RuleNode, clone_tree, walk
from archgram.grammar.elements import Arm, Branch, Limits, NonTerm, Term
from archgram.ops.registry import _freeze
from archgram.shapes import Shape, fmt, numel

if TYPE_CHECKING:
    from archgram.grammar.model import Grammar

MAX_REJECTIONS = 40  # failed options one attempt may meet before starting over
MAX_RESTARTS = 20
#: Productions one rule expansion may try before giving up to its caller. Each
#: try recurses, so trying all of them at every level is exponential; a small
#: cap plus restarts keeps the time per sample flat (measured: see README).
TRIES_PER_RULE = 3
#: Distinct argument draws tried for an op whose argument space is too large to enumerate.
LARGE_TERM_DRAWS = 32


class _Fail(Exception):
    """This option cannot be completed; the caller tries another."""


class _Restart(Exception):
    """This attempt has used its step budget; start again from the root."""


def matches(shape: Shape, pattern: tuple | None) -> bool:
    if pattern is None:
        return True
    return len(shape) == len(pattern) and all(p is None or p == s for s, p in zip(shape, pattern))


def fmt_pattern(pattern: tuple) -> str:
    return "(" + ",".join("*" if p is None else str(p) for p in pattern) + ")"


def weighted_order(rng: random.Random, probs: list[float]) -> Iterator[int]:
    """Indices in random order, each drawn with probability proportional to its
    weight among those not yet drawn; zero-weight options are never drawn."""
    idx = [i for i, p in enumerate(probs) if p > 0]
    weights = [probs[i] for i in idx]
    while idx:
        r = rng.random() * sum(weights)
        k = 0
        acc = weights[0]
        while acc <= r and k < len(idx) - 1:
            k += 1
            acc += weights[k]
        yield idx[k]
        del idx[k]
        del weights[k]


class Chooser:
    """Decides the order in which a choice point's options are tried. The default
    draws them by probability; an Optuna strategy overrides ``order`` so that
    each choice point becomes a trial parameter named by ``key``."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def order(self, key: str, probs: list[float], labels: Callable[[], list[str]]) -> Iterator[int]:
        """``labels()`` names the options (stable across samples); called only if needed."""
        return weighted_order(self.rng, probs)


@dataclass
class _Budget:
    nodes: int = 0
    params: int = 0
    flops: int = 0
    memory: int = 0

    def snapshot(self) -> tuple:
        return (self.nodes, self.params, self.flops, self.memory)

    def restore(self, snap: tuple) -> None:
        self.nodes, self.params, self.flops, self.memory = snap


@dataclass
class _Slot:
    """A concrete op choice for a split/merge slot, with the rule path to it."""

    term: Term
    combo: dict
    path: list[tuple[str, int]]  # (rule, production index) wrappers, outermost first


class Sampler:
    def __init__(self, grammar: Grammar, limits: Limits, rng: random.Random, max_rejections: int = MAX_REJECTIONS,
                 chooser: Chooser | None = None):
        self.g, self.limits, self.rng = grammar, limits, rng
        self.chooser = chooser or Chooser(rng)
        # Only a steering chooser needs choice-point names: skip building them otherwise.
        self.steered = chooser is not None and type(chooser) is not Chooser
        self.path: list[str] = []  # where the sampler is, naming choice points for a chooser
        self.max_rejections = max_rejections
        self.used = _Budget()
        self.shared: dict[str, Any] = {}
        self.rejections = 0
        self.steps = 0
        self.reasons: dict[str, int] = {}

    # -------------------------------------------------------------- helpers
    def _step(self) -> None:
        self.steps += 1

    def _reject(self, reason: str) -> None:
        """Count a failed option; past the attempt's allowance, start over. Backtracking
        search has a heavy tail: a fresh start is cheaper than digging on."""
        self.rejections += 1
        if self.rejections > self.max_rejections:
            raise _Restart()
        key = reason.split(" at ")[0].split(":")[0][:80]  # the op or rule, not its file:line
        self.reasons[key] = self.reasons.get(key, 0) + 1

    def _charge(self, params: int, flops: int, memory: int, nodes: int = 1) -> str | None:
        u, lim = self.used, self.limits
        if u.params + params > lim.params:
            return f"parameter budget {lim.params:.3g} exceeded"
        if u.flops + flops > lim.flops:
            return f"FLOP budget {lim.flops:.3g} exceeded"
        if u.memory + memory > lim.memory:
            return f"activation memory budget {lim.memory:.3g} elements exceeded"
        if u.nodes + nodes > lim.nodes:
            return f"node limit {lim.nodes} exceeded"
        u.params += params
        u.flops += flops
        u.memory += memory
        u.nodes += nodes
        return None

    def _allowed(self, combo: dict, term: Term) -> bool:
        if not term.shared_args:
            return True
        for name, space in term.args.items():
            if space.shared and space.shared in self.shared and self.shared[space.shared] != combo[name]:
                return False
        return True

    def _remember_shared(self, combo: dict, term: Term) -> None:
        for name, space in term.args.items():
            if space.shared:
                self.shared.setdefault(space.shared, combo[name])

    # ---------------------------------------------------------------- rules
    def rule(self, name: str, shape: Shape, ctx: tuple, depth: int, target, reserve: int) -> tuple[RuleNode, Shape, tuple]:
        self._step()
        rule = self.g.rules[name]
        prods = rule.productions
        room_depth = self.limits.depth - depth
        room_nodes = self.limits.nodes - self.used.nodes - reserve
        probs = [p.prob if p.min_height <= room_depth and p.min_size <= room_nodes else 0.0 for p in prods]
        if not any(probs):
            raise _Fail(f"<{name}>: no production fits the depth/node limits at depth {depth}")
        last = ""
        self.path.append(name)
        try:
            order = (self.chooser.order(self.key(), probs, lambda: [p.text for p in prods])
                     if self.steered else weighted_order(self.rng, probs))
            for tries, i in enumerate(order):
                if tries == TRIES_PER_RULE:
                    break
                found = self._try_production(name, prods[i], shape, ctx, depth, target, reserve)
                if isinstance(found, str):
                    last = found
                    continue
                return found
        finally:
            self.path.pop()
        want = f" giving {fmt_pattern(target)}" if target is not None else ""
        raise _Fail(f"<{name}>: no production accepts {fmt(shape)}{want} (last: {last})")

    def key(self, *tail: str) -> str:
        return "/".join(self.path + list(tail))

    def _try_production(self, name, prod, shape, ctx, depth, target, reserve):
        """The expanded node, or the reason it failed (state restored)."""
        snap, shared = self.used.snapshot(), dict(self.shared)
        try:
            children, out, out_ctx = self.elems(prod, shape, ctx, depth, target, reserve)
        except _Fail as exc:
            self.used.restore(snap)
            self.shared = shared
            self._reject(str(exc))
            return str(exc)
        node = RuleNode(name, prod.index, children, in_shape=shape, out_shape=out)
        return node, out, out_ctx

    def elems(self, prod, shape: Shape, ctx: tuple, depth: int, target, reserve: int):
        elems, sizes = prod.elems, prod.elem_sizes
        nodes: list[Node] = []
        for i, e in enumerate(elems):
            rest = reserve + sum(sizes[i + 1 :])
            t = target if i == len(elems) - 1 else None
            self.path.append(str(len(nodes)))  # the index the node will have among the rule's children
            try:
                got, shape, ctx = self.repeated(e, shape, ctx, depth, t, rest)
            finally:
                self.path.pop()
            nodes.extend(got)
        return nodes, shape, ctx

    def repeated(self, e, shape: Shape, ctx: tuple, depth: int, target, reserve: int):
        """``item*n`` in a sequence: sample once (shape-preserving), then copy."""
        n = getattr(e, "repeat", 1)
        if n == 1:
            node, out, ctx = self.one(e, shape, ctx, depth, target, reserve)
            return [node], out, ctx
        if target is not None and not matches(shape, target):
            raise _Fail(f"{e.label}*{n} keeps shape {fmt(shape)}, but {fmt_pattern(target)} is needed")
        before = self.used.snapshot()
        node, out, out_ctx = self.one(e, shape, ctx, depth, shape, reserve + (n - 1) * int(e.min_size / n))
        if out_ctx != ctx:
            raise _Fail(f"{e.label}*{n}: a repeated item must not leave an open im2col")
        self._copy_cost(before, n - 1, e.label)
        return [node] * n, out, out_ctx  # aliases; unaliased once the sample is done

    def _copy_cost(self, before: tuple, copies: int, label: str) -> None:
        after = self.used.snapshot()
        delta = [a - b for a, b in zip(after, before)]
        why = self._charge(delta[1] * copies, delta[2] * copies, delta[3] * copies, delta[0] * copies)
        if why:
            raise _Fail(f"{label}: copies exceed the budget ({why})")

    def one(self, e, shape: Shape, ctx: tuple, depth: int, target, reserve: int):
        if isinstance(e, Term):
            return self.term(e, shape, ctx, target)
        if isinstance(e, NonTerm):
            return self.rule(e.name, shape, ctx, depth + 1, target, reserve)
        return self.branch(e, shape, ctx, depth, target, reserve)

    # ---------------------------------------------------------------- terms
    def term(self, t: Term, shape: Shape, ctx: tuple, target) -> tuple[OpNode, Shape, tuple]:
        self._step()
        spec = t.op
        last = "no allowed arguments"
        for combo in self._combos_in_order(t):
            try:
                out, out_ctx = spec.cls.transfer(shape, ctx, **combo)
            except ShapeError as exc:
                last = str(exc)
                self._reject(f"{spec.name}: {exc}")
                continue
            if not matches(out, target):
                last = f"gives {fmt(out)}, need {fmt_pattern(target)}"
                self._reject(f"{spec.name}: target")
                continue
            params = spec.param_count(shape, combo, ctx)
            why = self._charge(params, spec.cls.flops(shape, out, params, **combo), numel(out))
            if why:
                last = why
                self._reject(f"{spec.name}: {why}")
                continue
            self._remember_shared(combo, t)
            return OpNode(spec.name, dict(combo), in_shape=shape, out_shape=out), out, out_ctx
        raise _Fail(f"{spec.name} at {t.loc}: no arguments fit input {fmt(shape)} ({last})")

    def _combos_in_order(self, t: Term) -> Iterator[dict]:
        """Argument combinations to try: all of a small space in random order, or
        up to LARGE_TERM_DRAWS distinct draws made argument by argument."""
        key = self.key(t.op.name) if self.steered else ""
        if t.combos is not None:
            if t.shared_args:
                probs = [p if self._allowed(c, t) else 0.0 for c, p in t.combos]
            else:
                probs = [p for _, p in t.combos]
            labels = lambda: [",".join(f"{k}={v}" for k, v in c.items()) for c, _ in t.combos]  # noqa: E731
            for i in self.chooser.order(key, probs, labels) if self.steered else weighted_order(self.rng, probs):
                yield t.combos[i][0]
            return
        tried: set = set()
        for attempt in range(LARGE_TERM_DRAWS):
            combo = {}
            for name, space in t.args.items():
                drawn = self.shared.get(space.shared) if space.shared else None
                probs = [p if drawn is None or v == drawn else 0.0 for v, p in zip(space.values, space.probs)]
                if attempt == 0 and self.steered:  # the chooser (e.g. Optuna) steers the first draw of each argument
                    order = self.chooser.order(f"{key}/{name}", probs, lambda s=space: [str(v) for v in s.values])
                else:
                    order = weighted_order(self.rng, probs)
                i = next(iter(order), None)
                if i is None:
                    return
                combo[name] = space.values[i]
            frozen = _freeze(combo)
            if frozen not in tried:
                tried.add(frozen)
                yield combo

    # -------------------------------------------------------------- branches
    def slots(self, item: Term | NonTerm) -> list[tuple[_Slot, float]]:
        """Every concrete op a split/merge slot can hold, with its probability."""
        if isinstance(item, Term):
            return [(_Slot(item, c, []), p) for c, p in item.combos or () if self._allowed(c, item)]
        out = []
        for prod in self.g.rules[item.name].productions:
            (inner,) = prod.elems
            for slot, p in self.slots(inner):
                out.append((_Slot(slot.term, slot.combo, [(item.name, prod.index)] + slot.path), p * prod.prob))
        return out

    @staticmethod
    def slot_node(slot: _Slot, shape_in, shape_out) -> Node:
        node: Node = OpNode(slot.term.op.name, dict(slot.combo), in_shape=shape_in, out_shape=shape_out)
        for name, alt in reversed(slot.path):
            node = RuleNode(name, alt, [node], in_shape=shape_in, out_shape=shape_out)
        return node

    def branch(self, b: Branch, shape: Shape, ctx: tuple, depth: int, target, reserve: int):
        self._step()
        opens, closes = self.slots(b.open), self.slots(b.close)
        arm_sizes = b.arm_sizes
        last = ""

        # Split/merge slot options depend on shared params drawn so far, so they are
        # not a fixed choice set: they are drawn here, not offered to the chooser.
        for i in weighted_order(self.rng, [p for _, p in opens]):
            op_slot = opens[i][0]
            split = op_slot.term.op
            try:
                arm_shapes = split.cls.output_shapes(shape, **op_slot.combo)
            except ShapeError as exc:
                self._reject(f"{split.name}: {exc}")
                last = str(exc)
                continue
            for tries, j in enumerate(weighted_order(self.rng, [p for _, p in closes])):
                if tries == TRIES_PER_RULE:
                    break
                snap, shared = self.used.snapshot(), dict(self.shared)
                try:
                    return self._arms(b, op_slot, closes[j][0], shape, arm_shapes, ctx, depth, target, reserve, arm_sizes)
                except _Fail as exc:
                    self.used.restore(snap)
                    self.shared = shared
                    self._reject(str(exc))
                    last = str(exc)
        raise _Fail(f"branch at {b.loc}: no split/merge pair fits {fmt(shape)} (last: {last})")

    def _arms(self, b: Branch, op_slot: _Slot, cl_slot: _Slot, shape, arm_shapes, ctx, depth, target, reserve, arm_sizes):
        self._remember_shared(op_slot.combo, op_slot.term)
        self._remember_shared(cl_slot.combo, cl_slot.term)
        merge = cl_slot.term.op
        outs: list[Shape] = []
        arms: list[Node] = []
        for k, arm in enumerate(b.arms):
            rest = reserve + sum(arm_sizes[k + 1 :]) + 1
            arm_target = merge.cls.branch_target(outs, **cl_slot.combo) if outs else None
            before = self.used.snapshot()
            self.path.append(f"arm{len(arms)}")  # index among the branch node's arms
            try:
                node, out, out_ctx = self.one(arm.elem, arm_shapes[len(outs)], ctx, depth, arm_target, rest)
            finally:
                self.path.pop()
            if out_ctx != ctx:
                raise _Fail(f"branch at {b.loc}: an arm left an im2col open")
            if arm.copies > 1:
                self._copy_cost(before, arm.copies - 1, "branch copies")
            for _ in range(arm.copies):
                arms.append(node)  # aliases; unaliased once the sample is done
                outs.append(out)
        try:
            out = merge.cls.output_shape(outs, **cl_slot.combo)
        except ShapeError as exc:
            raise _Fail(f"{merge.name}: {exc}") from None
        if not matches(out, target):
            raise _Fail(f"{merge.name} gives {fmt(out)}, need {fmt_pattern(target)}")
        split = op_slot.term.op
        split_params = split.param_count(shape, op_slot.combo)
        merge_params = merge.param_count(tuple(outs), cl_slot.combo)
        why = self._charge(split_params, 0, 0) or self._charge(
            merge_params, merge.cls.flops(outs, out, merge_params, **cl_slot.combo), numel(out)
        )
        if why:
            raise _Fail(f"{merge.name}: {why}")
        node = BranchNode(
            self.slot_node(op_slot, shape, shape),
            arms,
            self.slot_node(cl_slot, outs, out),
            in_shape=shape,
            out_shape=out,
        )
        return node, out, ctx


def sample(
    grammar: Grammar,
    input_shape: Shape,
    seed: int | None = 0,
    *,
    rng: random.Random | None = None,
    limits: Limits | dict | None = None,
    symbol: str | None = None,
    target: tuple | None = None,
    max_restarts: int = MAX_RESTARTS,
    max_rejections: int = MAX_REJECTIONS,
    chooser: Chooser | None = None,
) -> Derivation:
    """Sample one derivation typed for ``input_shape``; reproducible from ``seed``.
    ``max_rejections`` caps the failed options of one attempt before it restarts;
    successful choices are not capped, so large derivations are not penalised."""
    rng = rng or random.Random(seed)
    lim = grammar.effective_limits(limits)
    symbol = symbol or grammar.start
    rejections, restarts = 0, 0
    reasons: dict[str, int] = {}
    last = ""
    for _ in range(max_restarts):
        s = Sampler(grammar, lim, rng, max_rejections, chooser)
        try:
            node, _, _ = s.rule(symbol, tuple(input_shape), (), 1, target, 0)
        except _Restart:
            restarts += 1
            rejections += s.rejections
            continue
        except _Fail as exc:
            restarts += 1
            rejections += s.rejections
            for k, v in s.reasons.items():
                reasons[k] = reasons.get(k, 0) + v
            last = str(exc)
            continue
        d = Derivation(clone_tree(node), tuple(input_shape), {"name": grammar.name, "sha256": grammar.sha256[:16]}, dict(s.shared))
        d.stats = {
            "rejections": rejections + s.rejections,
            "restarts": restarts,
            "steps": s.steps,
            "params": s.used.params,
            "flops": s.used.flops,
            "memory": s.used.memory,
            "nodes": s.used.nodes,
        }
        return d
    rule = grammar.rules[symbol]
    top = sorted(reasons.items(), key=lambda kv: -kv[1])[:3]
    common = "; ".join(f"{k} ({v}x)" for k, v in top)
    raise SamplingError(
        f"{rule.loc}: no derivation of '{symbol}' fits input shape {fmt(tuple(input_shape))} "
        f"after {max_restarts} attempts: {last}" + (f"\n  most frequent rejections: {common}" if common else "")
    )


__all__ = ["Arm", "Sampler", "matches", "sample", "walk"]
