"""Grammar lint: reachability, productivity, and the branching-process check
that the expected derivation size is finite (``archgram check``)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from archgram.grammar.elements import Branch, Elem, NonTerm, Production, Term
from archgram.grammar.sizes import INF

if TYPE_CHECKING:
    from archgram.grammar.model import Grammar



@dataclass
class LintReport:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)
    unproductive: list[str] = field(default_factory=list)
    spectral_radius: float = 0.0  # of what is sampled (x*k sampled once): < 1 means sampling terminates
    copy_spectral_radius: float = 0.0  # counting copies: < 1 means the expected network size is finite
    notes: list[str] = field(default_factory=list)
    expected_nodes: float = INF  # expected op count per derivation (no limits)
    rules: int = 0
    productions: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "errors": self.errors,
            "warnings": self.warnings,
            "unreachable": self.unreachable,
            "unproductive": self.unproductive,
            "spectral_radius": self.spectral_radius,
            "copy_spectral_radius": self.copy_spectral_radius,
            "notes": self.notes,
            "expected_nodes": None if math.isinf(self.expected_nodes) else self.expected_nodes,
            "rules": self.rules,
            "productions": self.productions,
        }


def _reachable(g: Grammar) -> set[str]:
    seen, todo = {g.start}, [g.start]
    while todo:
        for p in g.rules[todo.pop()].productions:
            for name, _ in p.nonterminals():
                if name not in seen:
                    seen.add(name)
                    todo.append(name)
    return seen


def offspring_matrix(g: Grammar, names: list[str], copies: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """M[i, j]: expected samplings of rule j in one expansion of rule i (with
    ``copies``: expected occurrences in the network, repeats counted);
    t[i]: expected op nodes one expansion of rule i emits directly (copies counted)."""
    index = {n: i for i, n in enumerate(names)}
    m = np.zeros((len(names), len(names)))
    t = np.zeros(len(names))
    for name in names:
        i = index[name]
        for p in g.rules[name].productions:
            for child, count in p.nonterminals(copies):
                m[i, index[child]] += p.prob * count
            t[i] += p.prob * _direct_ops(p)
    return m, t


def _direct_ops(p: Production) -> int:
    def ops(e: Elem) -> int:
        if isinstance(e, Term):
            return e.repeat
        if isinstance(e, NonTerm):
            return 0
        assert isinstance(e, Branch)
        return ops(e.open) + ops(e.close) + sum(a.copies * ops(a.elem) for a in e.arms)

    return sum(ops(e) for e in p.elems)


def _radius(m: np.ndarray) -> float:
    return float(max(abs(np.linalg.eigvals(m)), default=0.0)) if len(m) else 0.0


def lint(g: Grammar) -> LintReport:
    report = LintReport(rules=len(g.rules), productions=sum(len(r.productions) for r in g.rules.values()))
    report.warnings.extend(g.warnings)
    report.notes.extend(getattr(g, "notes", []))
    reachable = _reachable(g)
    report.unreachable = sorted(set(g.rules) - reachable)
    for name in report.unreachable:
        report.warnings.append(f"{g.rules[name].loc}: rule '{name}' is unreachable from start '{g.start}'")
    report.unproductive = sorted(n for n, s in g.min_size.items() if math.isinf(s))
    for name in report.unproductive:
        report.errors.append(f"{g.rules[name].loc}: rule '{name}' is unproductive: every production recurses forever")
    names = sorted(reachable)
    # Termination is a property of what is sampled (x*4 is sampled once); the
    # network's size counts every copy, so it may be infinite even when the
    # sampling process terminates with probability 1.
    m, _ = offspring_matrix(g, names)
    radius = _radius(m)
    report.spectral_radius = radius
    if radius >= 1 - 1e-9:
        report.warnings.append(
            f"expected derivation size is infinite (spectral radius of the offspring matrix is {radius:.3f} >= 1): "
            "samples are bounded only by the depth/node limits; lower the recursive productions' probabilities"
        )
        return report
    c, t = offspring_matrix(g, names, copies=True)
    copy_radius = _radius(c)
    report.copy_spectral_radius = copy_radius
    if copy_radius < 1 - 1e-9:
        sizes = np.linalg.solve(np.eye(len(names)) - c, t)
        report.expected_nodes = float(sizes[names.index(g.start)])
    else:
        report.warnings.append(
            f"expected network size is infinite: counting the copies made by repeats (x*k), the offspring "
            f"matrix has spectral radius {copy_radius:.3f} >= 1 (sampling still terminates: radius {radius:.3f}); "
            "sizes are bounded only by the depth/node limits"
        )
    return report
