"""Registries for the independent axes of the attention op.

An attention variant is a choice on each axis -- head layout, score function,
pattern, position -- each a small class registered by name. Grammar values
name them: ``score=sigmoid``, ``pattern=window(7)`` (a structured value,
``{"name": "window", "_0": 7}``), so new parts need no parser or op change.
"""
from __future__ import annotations

from typing import Any, ClassVar

from archgram.errors import ShapeError
from archgram.registry import Registry


class Part:
    """Base of every registered part: a name, its parameter names and refs."""

    name: ClassVar[str] = ""
    #: Parameter names in positional order (``window(7)`` -> size=7).
    params: ClassVar[tuple[str, ...]] = ()
    #: Catalog rows this part implements.
    refs: ClassVar[tuple[str, ...]] = ()

    def flash(self, n: int, grid: tuple[int, int] | None, device) -> dict | None:
        """The flash kernels' keywords that compute this part for ``n`` tokens
        (``grid``: the image's (H, W) or None), or None where this configuration
        has none. A part is served only when its own class defines ``flash``
        (``kernel_keywords`` checks), so a subclass that changes the maths never
        inherits its parent's kernel by accident."""
        return None


def kernel_keywords(parts: dict[str, Part], n: int, grid, device) -> tuple[dict | None, str]:
    """Keywords for ``archgram.kernels.flash.dispatch.attention`` from each axis's
    part ({"score": ..., "pattern": ..., "position": ...}), or (None, why not)."""
    kw: dict = {}
    for axis, part in parts.items():
        name = type(part).__name__
        if "flash" not in type(part).__dict__:
            return None, f"{axis} {name} has no kernel"
        got = part.flash(n, grid, device)
        if got is None:
            return None, f"{axis} {name}: this configuration has no kernel"
        kw.update(got)
    return kw, ""


class PartRegistry(Registry[type[Part]]):
    """The parts of one axis; an unknown name is a ShapeError, raised while
    sampling, so the option is refused with its reason."""

    def __init__(self, axis: str):
        super().__init__(f"attention {axis}", error=ShapeError)
        self.axis = axis

    def register(self, cls: type[Part]) -> type[Part]:
        return self.add(cls.name, cls)

    @property
    def parts(self) -> dict[str, type[Part]]:
        return dict(self.items())

    def resolve(self, value: str | dict[str, Any]) -> tuple[type[Part], dict[str, Any]]:
        """Class and keyword parameters for a grammar value; ShapeError if unknown
        (raised while sampling, so the option is refused with its reason)."""
        spec = {"name": value} if isinstance(value, str) else dict(value)
        name = spec.pop("name", None)
        cls = self.get(name)
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
