"""Source units: an archgram module read as its top-level statements (classes,
functions, assignments), each with the names it defines and its line span, plus
the module's import map (local name -> the archgram module and name it comes
from, or the external import line). The vendor copies units; ``resolve``
follows re-exports to where a name is really defined.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from dataclasses import dataclass, field

from archgram.errors import ExportError


@dataclass
class Unit:
    module: str
    names: tuple[str, ...]
    node: ast.stmt
    start: int  # 1-based first line (decorators included)
    end: int

    @property
    def key(self) -> tuple[str, int]:
        return (self.module, self.start)


@dataclass
class SourceModule:
    name: str
    lines: list[bytes]
    tree: ast.Module
    units: dict[str, Unit] = field(default_factory=dict)  # defined name -> unit
    archgram: dict[str, tuple[str, str]] = field(default_factory=dict)  # local -> (module, name)
    external: dict[str, str] = field(default_factory=dict)  # local -> import line
    factories: list[Unit] = field(default_factory=list)  # top-level expression statements


_CACHE: dict[str, SourceModule] = {}


def _absolute(module: str, level: int, target: str | None) -> str:
    """The absolute name of a (possibly relative) ``from ... import`` source."""
    if not level:
        return target or ""
    package = module if _is_package(module) else module.rsplit(".", 1)[0]
    parts = package.split(".")
    base = parts[: len(parts) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _is_package(module: str) -> bool:
    mod = sys.modules.get(module) or importlib.import_module(module)
    return hasattr(mod, "__path__")


def load_module(name: str) -> SourceModule:
    if name in _CACHE:
        return _CACHE[name]
    mod = importlib.import_module(name)
    path = getattr(mod, "__file__", None)
    if not path or not path.endswith(".py"):
        raise ExportError(f"module {name} has no Python source to vendor")
    with open(path, "rb") as fh:
        data = fh.read()
    m = SourceModule(name, data.splitlines(keepends=True), ast.parse(data))
    for node in m.tree.body:
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            unit = Unit(name, (node.name,), node, start, node.end_lineno)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = tuple(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
            if not names or names == ("__all__",) or (isinstance(node, ast.AnnAssign) and node.value is None):
                continue
            unit = Unit(name, names, node, start, node.end_lineno)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            record_import(m, node, m.archgram, m.external)
            continue
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            m.factories.append(Unit(name, (), node, start, node.end_lineno))
            continue
        else:
            continue
        for n in unit.names:
            m.units[n] = unit
    _CACHE[name] = m
    return m


def record_import(m: SourceModule, node: ast.stmt, archgram: dict, external: dict) -> None:
    if isinstance(node, ast.ImportFrom):
        src = _absolute(m.name, node.level, node.module)
        if src == "__future__":
            return
        for alias in node.names:
            local = alias.asname or alias.name
            if src == "archgram" or src.startswith("archgram."):
                archgram[local] = (src, alias.name)
            else:
                as_ = f" as {alias.asname}" if alias.asname else ""
                external[local] = f"from {src} import {alias.name}{as_}"
    else:
        for alias in node.names:
            local = alias.asname or alias.name.split(".")[0]
            if alias.name == "archgram" or alias.name.startswith("archgram."):
                archgram[local] = (alias.name, "")  # a module reference
            else:
                external[local] = f"import {alias.name}" + (f" as {alias.asname}" if alias.asname else "")


def resolve(module: str, name: str, seen: frozenset = frozenset()) -> tuple[str, str]:
    """Where ``name`` as imported from ``module`` is defined: (module, name)."""
    if (module, name) in seen:
        raise ExportError(f"circular import of {name} from {module}")
    if not name:
        raise ExportError(f"code uses the module {module} itself, which cannot be vendored name by name")
    m = load_module(module)
    if name in m.units:
        return module, name
    if name in m.archgram:
        src, target = m.archgram[name]
        return resolve(src, target, seen | {(module, name)})
    sub = f"{module}.{name}"
    if _is_package(module) and importlib.util.find_spec(sub) is not None:
        raise ExportError(f"code uses the module {sub} itself, which cannot be vendored name by name")
    raise ExportError(f"cannot find the definition of {name} in {module}")
