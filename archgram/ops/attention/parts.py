"""Registries for the independent axes of the attention op.

An attention variant is a choice on each axis -- head layout, score function,
pattern, position -- each a small class registered by name. Grammar values
name them: ``score=sigmoid``, ``pattern=window(7)`` (a structured value,
``{"name": "window", "_0": 7}``), so new parts need no parser or op change.
"""
from __future__ import annotations

import difflib
from typing import Any, ClassVar

from archgram.errors import ShapeError


class Part:
    """Base of every registered part: a name, its parameter names and refs."""

    name: ClassVar[str] = ""
    #: Parameter names in positional order (``window(7)`` -> size=7).
    params: ClassVar[tuple[str, ...]] = ()
    #: Catalog rows this part implements.
    refs: ClassVar[tuple[str, ...]] = ()


class PartRegistry:
    def __init__(self, axis: str):
        self.axis = axis
        self.parts: dict[str, type[Part]] = {}

    def register(self, cls: type[Part]) -> type[Part]:
        if not cls.name or cls.name in self.parts:
            raise ValueError(f"{self.axis} '{cls.name}' is unnamed or registered twice")
        self.parts[cls.name] = cls
        return cls

    def names(self) -> list[str]:
        return sorted(self.parts)

    def resolve(self, value: str | dict[str, Any]) -> tuple[type[Part], dict[str, Any]]:
        """Class and keyword parameters for a grammar value; ShapeError if unknown
        (raised while sampling, so the option is refused with its reason)."""
        spec = {"name": value} if isinstance(value, str) else dict(value)
        name = spec.pop("name", None)
        if name not in self.parts:
            close = difflib.get_close_matches(str(name), list(self.parts), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ShapeError(f"unknown attention {self.axis} '{name}'{hint}; known: {', '.join(self.names())}")
        cls = self.parts[name]
        kwargs: dict[str, Any] = {}
        for key, v in spec.items():
            if key.startswith("_") and key[1:].isdigit():
                i = int(key[1:])
                if i >= len(cls.params):
                    raise ShapeError(f"attention {self.axis} '{name}' takes {len(cls.params)} positional parameter(s)")
                key = cls.params[i]
            elif key not in cls.params:
                raise ShapeError(f"attention {self.axis} '{name}' has no parameter '{key}' (it takes {', '.join(cls.params) or 'none'})")
            kwargs[key] = v
        return cls, kwargs


SCORES = PartRegistry("score")
PATTERNS = PartRegistry("pattern")
POSITIONS = PartRegistry("position")
LAYOUTS = PartRegistry("layout")
