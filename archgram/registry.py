"""One registry helper for every name -> entry table in archgram (ops, attention
parts, tasks, strategies, bench suites, compiler passes, schedulers, ...).

It owns the three things each table used to write for itself: refusing a name
registered twice, the "unknown X 'y'; did you mean 'z'?" error, and listing.
An entry is whatever the table stores (a class, a spec, a factory).

    SUITES = Registry("suite", error=BenchError, loader=_load_builtin_suites)
    SUITES.add("kernels", KernelSuite)
    SUITES.get("kernals")   # BenchError: unknown suite 'kernals'; did you mean 'kernels'? known: ...
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Generic, TypeVar

from archgram.errors import ArchgramError

T = TypeVar("T")


def did_you_mean(name: object, candidates) -> str:
    """'; did you mean 'x'?' for the closest candidate, or ''."""
    close = difflib.get_close_matches(str(name), [str(c) for c in candidates], n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def unknown(kind: str, name: object, known: Iterable, *, listed: bool = True, close_to: object = None) -> str:
    """"unknown KIND 'name'; did you mean 'x'? known: a, b" for a name outside
    ``known`` (the listing left out unless ``listed``; the match sought for
    ``close_to``, default the name). Registry tables and the fixed tuples too
    small for one word their refusals alike."""
    known = [str(k) for k in known]
    hint = did_you_mean(name if close_to is None else close_to, known)
    listing = f"{' ' if hint else '; '}known: {', '.join(known)}" if listed else ""
    return f"unknown {kind} '{name}'{hint}{listing}"


def import_submodules(package: str) -> list[str]:
    """Import every module of ``package`` in name order (not its subpackages,
    not ``_private`` modules) and return their names. A package whose modules
    register themselves with a decorator calls this from its ``__init__``, so a
    new module is one new file and no list to keep in step with it.
    ``tests/test_architecture.py`` reads the call as an import of each module."""
    path = importlib.import_module(package).__path__
    names = sorted(info.name for info in pkgutil.iter_modules(path) if not info.ispkg and not info.name.startswith("_"))
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names


def same_class(old: type, new: type) -> bool:
    """``Registry(same=...)`` for class tables: a re-imported (reloaded) module
    registers a new class object of the same module and name."""
    return old is new or (old.__module__, old.__qualname__) == (new.__module__, new.__qualname__)


class Registry(Generic[T]):
    """Name -> entry. ``loader`` (called once, on the first lookup) imports the
    modules whose decorators fill the table, so a lookup never misses a
    built-in entry because its module was not imported yet."""

    def __init__(self, kind: str, *, error: type[Exception] = ArchgramError,
                 loader: Callable[[], None] | None = None, normalise: Callable[[str], str] | None = None,
                 same: Callable[[T, T], bool] | None = None, list_known: bool = True,
                 entries: Mapping[str, T] | None = None):
        self.kind = kind
        self.list_known = list_known  # name every entry in the unknown-name error (off for long tables)
        self.error = error
        self._loader = loader
        self._normalise = normalise or (lambda name: name)
        #: When a second registration under a name is the same one again (a
        #: re-imported module), e.g. specs of one class; default: identity.
        self._same = same or (lambda old, new: old is new)
        self._entries: dict[str, T] = {}
        for name, entry in (entries or {}).items():  # a table written out in one place
            self.add(name, entry)

    # ------------------------------------------------------------ filling
    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` as ``name``; the same registration again replaces
        it (a re-imported module), another entry under a taken name is an error."""
        if not name:
            raise ArchgramError(f"a {self.kind} needs a name, got {name!r} for {entry!r}")
        key = self._normalise(name)
        if key in self._entries and not self._same(self._entries[key], entry):
            raise ArchgramError(f"{self.kind} '{key}' is already registered by {self._entries[key]!r}")
        self._entries[key] = entry
        return entry

    def remove(self, name: str) -> None:
        """Forget ``name`` (a test's temporary entry, an unloaded plugin)."""
        self._entries.pop(self._normalise(name), None)

    def decorator(self, name_of: Callable[[T], str] = lambda cls: cls.name) -> Callable[[T], T]:
        """A class decorator registering each class under ``name_of(cls)``."""
        def register(entry: T) -> T:
            return self.add(name_of(entry), entry)

        return register

    # ------------------------------------------------------------ reading
    def _load(self) -> None:
        if self._loader is not None:
            loader, self._loader = self._loader, None
            loader()

    def get(self, name: str) -> T:
        """The entry, or ``error`` naming the closest known name and all of them."""
        self._load()
        key = self._normalise(str(name))
        if key not in self._entries:
            raise self.error(self.unknown(name))
        return self._entries[key]

    __getitem__ = get

    def unknown(self, name: object) -> str:
        """The message for a name not in the table: closest match, then (for
        short tables) every known name."""
        return unknown(self.kind, name, self.names(), listed=self.list_known, close_to=self._normalise(str(name)))

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return [(name, self._entries[name]) for name in self.names()]

    def values(self) -> list[T]:
        return [entry for _, entry in self.items()]

    def __contains__(self, name: object) -> bool:
        self._load()
        return isinstance(name, str) and self._normalise(name) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"
