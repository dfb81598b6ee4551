"""The elements a loaded grammar is made of: budgets (``Limits``), op
occurrences with their argument choice sets (``Term``), rule references
(``NonTerm``), branch groups (``Branch``/``Arm``), productions and rules.

Plain data, below everything else in ``archgram.grammar``: the model builds
them, the sampler, lint and size analysis read them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Union

from archgram.errors import Location
from archgram.ops.registry import OpSpec

#: Argument spaces up to this size are enumerated (tried exhaustively, in random
#: order); larger ones are drawn one argument at a time.
ENUMERATE_LIMIT = 256


@dataclass
class Limits:
    """Budgets every sample must respect; checked before any tensor exists."""

    depth: int = 40  # nesting of rules
    nodes: int = 200  # op nodes in the tree
    params: float = 20e6  # trainable parameters
    flops: float = 2e11  # forward FLOPs for one batch of the input shape
    memory: float = 5e8  # activation elements summed over all op outputs

    def updated(self, **values: float | None) -> Limits:
        merged = {f.name: getattr(self, f.name) for f in fields(self)}
        merged.update({k: v for k, v in values.items() if v is not None})
        merged["depth"], merged["nodes"] = int(merged["depth"]), int(merged["nodes"])
        return Limits(**merged)


LIMIT_NAMES = tuple(f.name for f in fields(Limits))


@dataclass
class ArgSpace:
    """The values one op argument may take at one place in the grammar."""

    values: tuple
    probs: tuple[float, ...]
    shared: str | None = None  # name of a 'global' param: drawn once per architecture


@dataclass
class Term:
    """An op occurrence in a production, with the choice set of each argument."""

    op: OpSpec
    args: dict[str, ArgSpace]
    repeat: int
    loc: Location
    #: Every argument combination with its probability, when there are at most
    #: ENUMERATE_LIMIT of them; None for larger spaces (a composite op's choice
    #: sets multiply), which the sampler draws argument by argument instead.
    combos: list[tuple[dict[str, Any], float]] | None = field(default_factory=list)
    #: Whether any argument is a 'global' param (its choices then depend on earlier draws).
    shared_args: bool = False

    @property
    def combo_count(self) -> int:
        return math.prod(len(s.values) for s in self.args.values())

    def combo_prob(self, combo: dict[str, Any]) -> float:
        """Probability of one argument combination (0 if a value is not offered)."""
        prob = 1.0
        for name, space in self.args.items():
            if combo.get(name) not in space.values:
                return 0.0
            prob *= space.probs[space.values.index(combo[name])]
        return prob

    @property
    def kind(self) -> str:
        return self.op.kind

    @property
    def label(self) -> str:
        return self.op.name


@dataclass
class NonTerm:
    name: str
    repeat: int
    loc: Location
    kind: str = "unary"

    @property
    def label(self) -> str:
        return self.name


@dataclass
class Arm:
    """One item standing for ``copies`` branches (``module*4``: sampled once, copied)."""

    elem: Elem
    copies: int


@dataclass
class Branch:
    open: Union[Term, NonTerm]
    arms: list[Arm]
    close: Union[Term, NonTerm]
    loc: Location
    arm_sizes: list = field(default_factory=list)

    @property
    def n(self) -> int:
        return sum(a.copies for a in self.arms)


Elem = Union[Term, NonTerm, Branch]


@dataclass
class Production:
    elems: list[Elem]
    prob: float
    loc: Location
    index: int
    text: str = ""
    # Filled once the grammar is loaded (sizes.minimum_sizes): hot in the sampler.
    min_height: float = 0
    min_size: float = 0
    elem_sizes: list = field(default_factory=list)

    def nonterminals(self, copies: bool = False) -> list[tuple[str, int]]:
        """(name, times sampled) of each nonterminal occurrence; with ``copies``,
        (name, times it appears in the network): ``x*4`` is sampled once, copied 4x."""
        out: list[tuple[str, int]] = []

        def visit(e: Elem, times: int) -> None:
            if isinstance(e, NonTerm):
                out.append((e.name, times * e.repeat if copies else 1))
            elif isinstance(e, Branch):
                visit(e.open, times)
                for arm in e.arms:
                    visit(arm.elem, times * arm.copies)
                visit(e.close, times)

        for e in self.elems:
            visit(e, 1)
        return out


@dataclass
class Rule:
    name: str
    productions: list[Production]
    loc: Location
    kind: str = "unary"  # 'split'/'merge' when every production is one such op
    branches: int = 0  # for split rules: how many branches every production opens
