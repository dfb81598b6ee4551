"""Error types. Every user-facing failure is one of these, so the CLI can print
one line instead of a traceback."""
from __future__ import annotations

from dataclasses import dataclass


class ArchgramError(Exception):
    """Base class of every error archgram raises on purpose."""


@dataclass(frozen=True)
class Location:
    """A place in a grammar file: shown as file:line:col like a compiler."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class GrammarError(ArchgramError):
    """A grammar file is malformed or inconsistent; carries where."""

    def __init__(self, message: str, location: Location | None = None, context: str = ""):
        self.message = message
        self.location = location
        self.context = context
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location else ""
        tail = f"\n{self.context}" if self.context else ""
        return f"{where}error: {self.message}{tail}"


class ShapeError(ArchgramError):
    """An op cannot accept the given input shape (or arguments)."""


class SamplingError(ArchgramError):
    """The sampler found no valid derivation (with the reason and place)."""


class CompileError(ArchgramError):
    """A derivation could not be turned into a module; names the offending node."""


class DerivationError(ArchgramError):
    """A derivation file or object is malformed or does not match its grammar."""


class ExportError(ArchgramError):
    """A model, trial or output directory cannot be exported."""
