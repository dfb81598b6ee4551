"""Least nesting height and least op count of each rule, production and
element, by fixed-point iteration: the sampler reads them to stay inside its
depth and node budgets without retrying, lint to find unproductive rules."""
from __future__ import annotations

import math

from archgram.grammar.elements import Elem, NonTerm, Production, Rule, Term

INF = math.inf


def elem_size(e: Elem, size: dict[str, float]) -> float:
    if isinstance(e, Term):
        return e.repeat
    if isinstance(e, NonTerm):
        return e.repeat * size[e.name]
    return elem_size(e.open, size) + sum(a.copies * elem_size(a.elem, size) for a in e.arms) + elem_size(e.close, size)


def _elem_height(e: Elem, height: dict[str, float]) -> float:
    if isinstance(e, Term):
        return 0
    if isinstance(e, NonTerm):
        return height[e.name]
    return max([_elem_height(e.open, height), _elem_height(e.close, height)]
               + [_elem_height(a.elem, height) for a in e.arms])


def prod_size(p: Production, size: dict[str, float]) -> float:
    return sum(elem_size(e, size) for e in p.elems)


def prod_height(p: Production, height: dict[str, float]) -> float:
    return max((_elem_height(e, height) for e in p.elems), default=0)


def minimum_sizes(rules: dict[str, Rule]) -> tuple[dict[str, float], dict[str, float]]:
    """Least rule-nesting height and least op count of any derivation of each
    rule (infinite for unproductive rules), by fixed-point iteration."""
    height = {name: INF for name in rules}
    size = {name: INF for name in rules}
    changed = True
    while changed:
        changed = False
        for name, rule in rules.items():
            h = 1 + min(prod_height(p, height) for p in rule.productions)
            s = min(prod_size(p, size) for p in rule.productions)
            if h < height[name] or s < size[name]:
                height[name], size[name] = min(h, height[name]), min(s, size[name])
                changed = True
    return height, size
