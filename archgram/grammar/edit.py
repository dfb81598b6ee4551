"""Mutation and crossover of derivations, always giving valid trees.

Both work on rule nodes: a subtree derived from symbol S, which took shape X
(in routing context C) to shape Y, may be replaced by any other derivation of S
from X (in C) to Y. Mutation samples the replacement (the sampler aims at Y);
crossover takes it from another parent. Nothing else in the tree changes, so
the result type-checks by construction; it is checked again against the
grammar's limits before it is returned.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from archgram.errors import ArchgramError, DerivationError, SamplingError, ShapeError
from archgram.grammar.cost import cost
from archgram.grammar.derivation import (
    BranchNode,
    Derivation,
    Node,
    OpNode,
    RuleNode,
    canonical,
    children_of,
    clone_tree,
)
from archgram.grammar.inference import bound_args
from archgram.grammar.model import Grammar, Limits
from archgram.grammar.sampler import Sampler, _Fail, _Restart
from archgram.ops.registry import get_op

Path = tuple[int, ...]
SITE_TRIES = 6  # resamplings of one site (free and aimed alternately) before it is dropped
MUTATION_REJECTIONS = 400  # a mutation aims at a fixed shape: allow a longer search than a fresh sample


@dataclass
class Site:
    """A rule node and where it sits: path from the root, rule depth, input context."""

    path: Path
    node: RuleNode
    depth: int
    ctx: tuple


def sites(root: Node) -> list[Site]:
    """Every rule node with its path, depth (root rule = 1) and routing context."""
    out: list[Site] = []

    def visit(node: Node, path: Path, depth: int, ctx: tuple) -> tuple:
        if isinstance(node, OpNode):
            spec = get_op(node.op)
            if spec.kind == "unary":
                return spec.cls.transfer(node.in_shape, ctx, **bound_args(node))[1]
            return ctx
        if isinstance(node, RuleNode):
            out.append(Site(path, node, depth, ctx))
            for i, child in enumerate(node.children):
                ctx = visit(child, path + (i,), depth + 1, ctx)
            return ctx
        visit(node.open, path + (0,), depth, ctx)
        for i, arm in enumerate(node.arms):
            visit(arm, path + (i + 1,), depth, ctx)
        visit(node.close, path + (len(node.arms) + 1,), depth, ctx)
        return ctx

    visit(root, (), 1, ())
    return out


def replace(root: Node, path: Path, new: Node) -> Node:
    """A copy of ``root`` with the node at ``path`` replaced by ``new``."""
    if not path:
        return new
    root = clone_tree(root)
    parent = root
    for i in path[:-1]:
        parent = children_of(parent)[i]
    i = path[-1]
    if isinstance(parent, RuleNode):
        parent.children[i] = new
    elif isinstance(parent, BranchNode):
        if i == 0:
            parent.open = new
        elif i == len(parent.arms) + 1:
            parent.close = new
        else:
            parent.arms[i - 1] = new
    return root


def _key(shape) -> tuple:
    return tuple(map(tuple, shape)) if shape and isinstance(shape[0], (list, tuple)) else tuple(shape)


def _editable(grammar: Grammar, site: Site) -> bool:
    """Rule subtrees of this grammar; split/merge slots change with their branch."""
    rule = grammar.rules.get(site.node.symbol)
    return rule is not None and rule.kind == "unary"


def _stretched(lim: Limits, *parents: Derivation) -> Limits:
    """Limits no smaller than what the parents already use: a seed baseline larger
    than the grammar's limits (a ResNet in einspace) can still be mutated."""
    nodes, params, flops, memory, depth = lim.nodes, lim.params, lim.flops, lim.memory, lim.depth
    for p in parents:
        n, pa, fl, me = cost(p.root)
        d = max((s.depth for s in sites(p.root)), default=0)
        nodes, params, flops, memory, depth = max(nodes, n), max(params, pa), max(flops, fl), max(memory, me), max(depth, d)
    return lim.updated(nodes=nodes, params=params, flops=flops, memory=memory, depth=depth)


def _within(root: Node, lim: Limits) -> bool:
    nodes, params, flops, memory = cost(root)
    depth = max(s.depth for s in sites(root)) if isinstance(root, RuleNode) else 0
    return nodes <= lim.nodes and params <= lim.params and flops <= lim.flops and memory <= lim.memory and depth <= lim.depth


def _typed(d: Derivation) -> Derivation:
    if d.root.out_shape is None:
        d.infer_shapes()
    return d


def mutate(
    grammar: Grammar,
    parent: Derivation,
    seed: int | None = None,
    *,
    rng: random.Random | None = None,
    limits: Limits | dict | None = None,
    max_tries: int = 200,
) -> Derivation:
    """Resample one uniformly chosen rule subtree so that it differs from before
    (as einspace's mutation forces a different choice) and keeps its output shape."""
    rng = rng or random.Random(seed)
    parent = _typed(parent)
    lim = _stretched(grammar.effective_limits(limits), parent)
    candidates = [s for s in sites(parent.root) if _editable(grammar, s)]
    if not candidates:
        raise ArchgramError(f"derivation {parent.hash()} has no rule of grammar '{grammar.name}' to mutate")
    total = cost(parent.root)
    # Sites are drawn uniformly and tried freely and aimed in turn; one that keeps
    # failing is dropped, so a tree whose copies leave few mutable places still
    # finds them.
    failures: dict[Path, int] = {}
    for _ in range(max_tries):
        live = [s for s in candidates if failures.get(s.path, 0) < SITE_TRIES]
        if not live:
            break
        site = rng.choice(live)
        child = _resample(grammar, parent, site, lim, total, rng, free=failures.get(site.path, 0) % 2 == 0)
        if child is None:
            failures[site.path] = failures.get(site.path, 0) + 1
            continue
        return child
    raise SamplingError(f"no valid mutation of {parent.hash()} found in {max_tries} tries")


def _resample(grammar: Grammar, parent: Derivation, site: Site, lim: Limits, total, rng, free: bool) -> Derivation | None:
    """Resample ``site``: freely (the rest of the tree must still type-check, as in
    einspace) or aimed at the old output shape. None if that gave nothing new."""
    old = site.node
    target = None if free else old.out_shape
    sampler = Sampler(grammar, lim, rng, max_rejections=MUTATION_REJECTIONS)
    sampler.used.restore(tuple(t - o for t, o in zip(total, cost(old))))
    sampler.shared = dict(parent.globals)
    try:
        new, _, _ = sampler.rule(old.symbol, old.in_shape, site.ctx, site.depth, target, 0)
    except (_Fail, _Restart):
        return None
    new = clone_tree(new)
    if canonical(new) == canonical(old):
        return None
    child = Derivation(replace(parent.root, site.path, new), parent.input_shape, dict(parent.grammar), dict(sampler.shared))
    try:
        child.infer_shapes()
    except (ShapeError, DerivationError):
        return None
    if free and not _within(child.root, lim):
        return None
    child.stats = {"mutated": "/".join(map(str, site.path)) or "root", "symbol": old.symbol}
    return child


def crossover(
    grammar: Grammar,
    a: Derivation,
    b: Derivation,
    seed: int | None = None,
    *,
    rng: random.Random | None = None,
    limits: Limits | dict | None = None,
    max_tries: int = 50,
) -> Derivation | None:
    """Child of ``a`` with one rule subtree replaced by a type-compatible subtree
    of ``b`` (same symbol, input shape, routing context and output shape).
    Returns None when the parents share no such pair within the limits."""
    rng = rng or random.Random(seed)
    a, b = _typed(a), _typed(b)
    lim = _stretched(grammar.effective_limits(limits), a, b)
    by_type: dict[tuple, list[Site]] = {}
    for s in sites(b.root):
        if _editable(grammar, s):
            by_type.setdefault((s.node.symbol, _key(s.node.in_shape), s.ctx), []).append(s)
    exact, loose = [], []
    for s in sites(a.root):
        if not _editable(grammar, s):
            continue
        for t in by_type.get((s.node.symbol, _key(s.node.in_shape), s.ctx), []):
            if canonical(t.node) != canonical(s.node):
                (exact if t.node.out_shape == s.node.out_shape else loose).append((s, t))
    rng.shuffle(exact)
    rng.shuffle(loose)
    # Same output shape first (valid by construction); then others whose new
    # output the rest of the tree still accepts.
    for s, t in (exact + loose)[:max_tries]:
        depth = s.depth + max(x.depth for x in sites(t.node)) - 1
        if depth > lim.depth:
            continue
        child = Derivation(replace(a.root, s.path, clone_tree(t.node)), a.input_shape, dict(a.grammar), {**b.globals, **a.globals})
        try:
            child.infer_shapes()
        except (ShapeError, DerivationError):
            continue
        if not _within(child.root, lim):
            continue
        child.stats = {"crossover": "/".join(map(str, s.path)) or "root", "symbol": s.node.symbol}
        return child
    return None
