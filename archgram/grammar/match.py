"""Find a grammar's derivation of a given network (parsing an architecture).

Search is seeded with known architectures the way einspace seeds its evolution
with ResNet-18 and friends: the architecture is written once, as a network, and
``parse_network`` finds how *any* grammar derives it, so mutation and crossover
can then work on it like on any sample of that grammar.

The network form (what a network is, how it is read and typed) lives in
``network.py``; the dynamic program that finds the derivation, in
``matcher.py``. This module joins them: it tries each joint value of the
grammar's global params, keeps the best derivation and records its stats.
"""
from __future__ import annotations

import itertools
from typing import Any

from archgram.errors import DerivationError, ShapeError
from archgram.grammar.cost import cost
from archgram.grammar.derivation import Derivation, Node, OpNode, clone_tree, walk
from archgram.grammar.matcher import INF, Matcher, SpanMatch, explain
from archgram.grammar.model import Grammar, iter_terms
from archgram.grammar.network import NetworkBuilder, TokenSeq, network_of, network_to_json, type_network
from archgram.shapes import Shape


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
    builder = NetworkBuilder()
    root = builder.seq(network_of(network), "root")
    type_network(root, shape, ())
    best, best_matcher, best_shared = None, None, {}
    for shared in _shared_assignments(grammar, root):
        m = Matcher(grammar, shared)
        got = m.rule(symbol, root, 0, len(root.toks))
        if got is not None and got.better(best):
            best, best_matcher, best_shared = got, m, shared
        best_matcher = best_matcher or m
    if best is None:
        raise DerivationError(f"grammar '{grammar.name}' cannot derive this network from <{symbol}>: "
                              + explain(grammar, best_matcher, root, symbol))
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


def _shared_assignments(g: Grammar, root: TokenSeq) -> list[dict[str, Any]]:
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


def _used_shared(g: Grammar, node: Node):
    """Names of the global params the derivation's terminals draw (approximate:
    every global param of an op name the derivation uses)."""
    ops = {n.op for n in walk(node) if isinstance(n, OpNode)}
    for rule in g.rules.values():
        for prod in rule.productions:
            for t in iter_terms(prod.elems):
                if t.op.name in ops:
                    yield [s.shared for s in t.args.values() if s.shared]


def _stats(g: Grammar, d: Derivation, best: SpanMatch) -> dict[str, Any]:
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
