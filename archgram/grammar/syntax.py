"""Syntax tree of a .pcfg file: what the text says, before names are resolved."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from archgram.errors import Location


@dataclass(frozen=True)
class Symbol:
    """A bare name used as a value: a param, a boolean or an enum string."""

    name: str


@dataclass(frozen=True)
class CallValue:
    """A structured value such as ``window(7)``."""

    name: str
    args: tuple  # of ArgSyntax


@dataclass
class Option:
    value: Any  # int | float | str | tuple | Symbol | CallValue
    weight: float | None
    loc: Location


@dataclass
class Choice:
    """``a | b@0.3 | c``: one or more weighted values."""

    options: list[Option]
    loc: Location


@dataclass
class ArgSyntax:
    name: str | None  # None for positional arguments
    choice: Choice
    loc: Location


@dataclass
class ItemSyntax:
    """One symbol in a production: ``name``, ``name(args)`` or ``name*4``."""

    name: str
    args: list[ArgSyntax] | None  # None when written without parentheses
    repeat: int
    loc: Location


@dataclass
class AlternativeSyntax:
    items: list[ItemSyntax]
    weight: float | None
    loc: Location


@dataclass
class RuleSyntax:
    name: str
    alternatives: list[AlternativeSyntax]
    extend: bool  # written with '+:' to add alternatives to an included rule
    loc: Location


@dataclass
class ParamSyntax:
    name: str
    choice: Choice
    shared: bool  # 'global': drawn once per architecture; 'param': at each use
    loc: Location


@dataclass
class FileSyntax:
    path: str
    start: list[tuple[str, Location]] = field(default_factory=list)
    uses: list[tuple[str, Location]] = field(default_factory=list)
    params: list[ParamSyntax] = field(default_factory=list)
    limits: list[tuple[str, float, Location]] = field(default_factory=list)
    rules: list[RuleSyntax] = field(default_factory=list)
