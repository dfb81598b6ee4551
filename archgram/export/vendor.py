"""Vendoring: copy the source of the classes a model uses, and everything they
reference, out of archgram's modules into one block that imports only torch and
the standard library.

The unit of copying is a top-level statement of an archgram module (a class, a
function, an assignment). Starting from the model's classes, each unit's names
are resolved through its module's definitions and ``from archgram... import``
lines (aliases followed to where a name is defined) and the units they reach
are copied too. What changes on the way:

* ``@register_op("name", ...)`` becomes ``@op("name")``: the class keeps its
  grammar name (``print(model)`` reads like archgram's) without the registry;
* ``from archgram...`` lines inside functions are dropped (their names are
  vendored alongside);
* a name defined in two modules is renamed in the second (``_geometry_layouts``);
* a part registry (``SCORES``, ...) keeps its ``@SCORES.register`` classes, but
  only the parts the model resolved (``traced``), not the whole family;
* an imported module of ``archgram.kernels`` (Triton) becomes :data:`NO_KERNELS`,
  whose functions all answer None: the dispatchers' "use the PyTorch path".

Only ``ast`` and byte offsets: the copied text keeps its comments and layout.
"""
from __future__ import annotations

import ast
import builtins
import heapq
import importlib
import importlib.util
import re
import sys
from dataclasses import dataclass

from archgram.errors import ExportError
from archgram.export.references import REGISTER_OP, Collector, Refs
from archgram.export.source import SourceModule, Unit, load_module, resolve

#: Modules under this package (Triton kernels and their dispatch) are not copied:
#: code that imports one gets :data:`NO_KERNELS`, whose every function answers
#: None, which archgram's dispatchers already mean as "use the PyTorch path".
KERNELS = "archgram.kernels"
NO_KERNELS = "no_kernels"
NO_KERNELS_SOURCE = '''\
class NoKernels:
    """Stands in for archgram's kernel modules (Triton, CUDA only), which are not
    vendored: every dispatch answers None, so the PyTorch path runs."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


no_kernels = NoKernels()
'''

#: Emitted before the vendored units; ``op`` replaces ``register_op`` decorators.
STAND_INS = '''\
class OpInfo(NamedTuple):
    """What archgram's op registry knew of a class, reduced to its grammar name."""

    name: str


def op(name: str):
    """Name a class after its grammar op (archgram's @register_op, without the registry)."""

    def decorate(cls):
        cls.spec = OpInfo(name)
        return cls

    return decorate
'''
STAND_IN_NAMES = ("OpInfo", "op", "NamedTuple", "NoKernels", "no_kernels")
REGISTER_OP_STAND_IN = '''\
def register_op(name: str, **spec):
    """archgram's op registry decorator, reduced to naming the class."""
    return op(name)
'''

_BUILTINS = set(dir(builtins)) | {"__name__", "__file__", "__doc__"}


@dataclass
class Vendored:
    """The vendored block: its source, import lines and the name each root got."""

    source: str
    imports: list[str]
    names: dict[tuple[str, str], str]  # (module, name) -> emitted name
    taken: set[str]
    modules: list[str]


class Vendor:
    """Collect units from ``roots`` and render them as one block.

    ``traced`` maps ``id(registry)`` to the part names the model resolved from
    that registry (see :func:`archgram.export.codegen.trace_registries`)."""

    def __init__(self, traced: dict[int, set[str]] | None = None):
        self.traced = traced or {}
        self.units: dict[tuple[str, int], Unit] = {}
        self.refs: dict[tuple[str, int], Refs] = {}
        self.deps: dict[tuple[str, int], dict[str, tuple[str, str]]] = {}  # unit -> local name -> (module, name)
        self.external: dict[str, str] = {}
        self.annotation_only: dict[tuple[str, str], None] = {}
        self.aliases: dict[tuple[str, str], Unit] = {}  # (module, class name) made by a factory call
        self.needs_register_op = False
        self.needs_kernels = False

    # -- roots
    def add_class(self, cls: type) -> tuple[str, str]:
        """Vendor ``cls``; returns its (module, name) key."""
        module, name = cls.__module__, cls.__qualname__
        if not module.startswith("archgram."):
            raise ExportError(f"class {module}.{name} is not archgram's; cannot vendor it")
        if "." in name or "<locals>" in name or name not in load_module(module).units:
            m = load_module(module)
            spec = getattr(cls, "spec", None)
            unit = next((u for u in m.factories if spec is not None and _first_arg(u.node) == spec.name), None)
            if unit is None:
                raise ExportError(
                    f"op class {name} ({module}) has no export path: it is made inside a function, not at module level"
                )
            simple = name.rsplit(".", 1)[-1].replace("<locals>", "").strip(".") or spec.name.capitalize()
            self.aliases[(module, simple)] = unit
            self._add_unit(unit)
            return module, simple
        self.add(module, name)
        return module, name

    def add(self, module: str, name: str) -> None:
        module, name = resolve(module, name)
        self._add_unit(load_module(module).units[name])

    def _add_unit(self, unit: Unit) -> None:
        queue = [unit]
        while queue:
            u = queue.pop()
            if u.key in self.units:
                continue
            m = load_module(u.module)
            refs = Collector(m, u).run()
            self.units[u.key], self.refs[u.key] = u, refs
            deps: dict[str, tuple[str, str]] = {}
            for local in sorted(refs.runtime | refs.annotations):
                target = self._target(m, refs, local)
                if target is None:
                    continue
                if target == ("external", local):
                    continue
                deps[local] = target
                if local in refs.runtime:
                    if target == REGISTER_OP or target[0] == KERNELS:
                        self.needs_register_op = True
                        continue
                    queue.append(load_module(target[0]).units[target[1]])
                else:
                    self.annotation_only[target] = None
            self.deps[u.key] = deps
            queue.extend(self._registered_parts(u))

    def _target(self, m: SourceModule, refs: Refs, local: str) -> tuple[str, str] | None:
        imported = refs.local_archgram.get(local) or m.archgram.get(local)
        if imported is not None and _is_kernel_module(*imported):
            self.needs_kernels = True
            return (KERNELS, NO_KERNELS)
        if local in refs.local_archgram:
            return resolve(*refs.local_archgram[local])
        if local in m.units:
            return (m.name, local)
        if local in m.archgram:
            return resolve(*m.archgram[local])
        if local in m.external:
            line = m.external[local]
            if self.external.get(local, line) != line:
                raise ExportError(f"cannot vendor: '{local}' means '{self.external[local]}' in one module and "
                                  f"'{line}' in {m.name}")
            self.external[local] = line
            return ("external", local)
        if local in _BUILTINS:
            return None
        return None  # a local of an enclosing scope we did not model; nothing to copy

    def _registered_parts(self, unit: Unit) -> list[Unit]:
        """A vendored part registry brings the registered classes the model resolved."""
        if not isinstance(unit.node, ast.Assign) or len(unit.names) != 1:
            return []
        obj = getattr(sys.modules.get(unit.module), unit.names[0], None)
        wanted = self.traced.get(id(obj))
        if not wanted:
            return []
        found: list[Unit] = []
        for modname in sorted(n for n in sys.modules if n.startswith("archgram.")):
            mod = sys.modules[modname]
            if mod is None or not (getattr(mod, "__file__", None) or "").endswith(".py") or modname.startswith(KERNELS):
                continue
            m = load_module(modname)
            for u in {id(x): x for x in m.units.values()}.values():
                if not isinstance(u.node, ast.ClassDef):
                    continue
                for dec in u.node.decorator_list:
                    if (isinstance(dec, ast.Attribute) and dec.attr == "register" and isinstance(dec.value, ast.Name)
                            and self._is(m, dec.value.id, unit)):
                        cls = getattr(mod, u.node.name, None)
                        if getattr(cls, "name", None) in wanted:
                            found.append(u)
        return found

    @staticmethod
    def _is(m: SourceModule, local: str, unit: Unit) -> bool:
        try:
            if local in m.units:
                return (m.name, local) == (unit.module, unit.names[0])
            if local in m.archgram:
                return resolve(*m.archgram[local]) == (unit.module, unit.names[0])
        except ExportError:
            return False
        return False

    # -- order and names
    def _order(self) -> list[Unit]:
        keys = list(self.units)
        rank = self._module_rank()
        need: dict[tuple, set[tuple]] = {k: set() for k in keys}
        users: dict[tuple, set[tuple]] = {k: set() for k in keys}
        for k in keys:
            for local in self.refs[k].definition:
                target = self.deps[k].get(local)
                if target is None or target[0] in ("external", KERNELS) or target == REGISTER_OP:
                    continue
                dep = load_module(target[0]).units[target[1]].key
                if dep != k and dep in need:
                    need[k].add(dep)
                    users[dep].add(k)
        heap = [(rank[k[0]], k[1], k) for k in keys if not need[k]]
        heapq.heapify(heap)
        out: list[Unit] = []
        done: set[tuple] = set()
        while len(out) < len(keys):
            if not heap:  # a cycle at definition time: fall back to source order for the rest
                rest = sorted((k for k in keys if k not in done), key=lambda k: (rank[k[0]], k[1]))
                heap = [(rank[rest[0][0]], rest[0][1], rest[0])]
            _, _, k = heapq.heappop(heap)
            if k in done:
                continue
            done.add(k)
            out.append(self.units[k])
            for u in users[k]:
                need[u].discard(k)
                if not need[u] and u not in done:
                    heapq.heappush(heap, (rank[u[0]], u[1], u))
        return out

    def _module_rank(self) -> dict[str, int]:
        graph: dict[str, set[str]] = {}
        for k, deps in self.deps.items():
            graph.setdefault(k[0], set()).update(t[0] for t in deps.values() if t[0] != "external" and t[0] != k[0])
        order: list[str] = []
        seen: set[str] = set()

        def visit(mod: str) -> None:
            if mod in seen:
                return
            seen.add(mod)
            for d in sorted(graph.get(mod, ())):
                visit(d)
            order.append(mod)

        for mod in sorted(graph):
            visit(mod)
        return {mod: i for i, mod in enumerate(order)}

    def render(self, reserved: set[str]) -> Vendored:
        order = self._order()
        taken = set(reserved) | set(self.external) | set(STAND_IN_NAMES)
        names: dict[tuple[str, str], str] = {}

        def claim(module: str, name: str) -> str:
            emitted = name
            if emitted in taken:
                emitted = f"{name}_{module.rsplit('.', 1)[-1]}"
                i = 2
                while emitted in taken:
                    emitted, i = f"{name}_{module.rsplit('.', 1)[-1]}{i}", i + 1
            taken.add(emitted)
            return emitted

        if self.needs_register_op:
            names[REGISTER_OP] = claim(*REGISTER_OP)
        for u in order:
            for n in u.names:
                names[(u.module, n)] = claim(u.module, n)
        for module, simple in self.aliases:
            names[(module, simple)] = claim(module, simple)
        stubs = []
        for target in self.annotation_only:
            if target not in names:
                names[target] = claim(*target)
                stubs.append(f"{names[target]} = Any  # an archgram type, only named in annotations")
        blocks = [STAND_INS]
        if self.needs_kernels:
            names[(KERNELS, NO_KERNELS)] = NO_KERNELS
            taken.update({NO_KERNELS, "NoKernels"})
            blocks.append(NO_KERNELS_SOURCE)
        if self.needs_register_op:
            blocks.append(REGISTER_OP_STAND_IN.replace("def register_op", f"def {names[REGISTER_OP]}"))
        if stubs:
            blocks.append("\n".join(stubs) + "\n")
        by_factory = {id(u): key for key, u in self.aliases.items()}
        modules: list[str] = []
        for u in order:
            text = self._text(u, names)
            if id(u) in by_factory:
                text = f"{names[by_factory[id(u)]]} = {text.lstrip()}"
            blocks.append(text)
            if u.module not in modules:
                modules.append(u.module)
        imports = sorted(set(self.external.values()) | {"from typing import Any, NamedTuple"})
        return Vendored("\n\n".join(b.rstrip("\n") + "\n" for b in blocks), imports, names, taken, modules)

    def _text(self, u: Unit, names: dict[tuple[str, str], str]) -> str:
        m, refs, deps = load_module(u.module), self.refs[u.key], self.deps[u.key]
        lines = m.lines[u.start - 1:u.end]
        offsets = [0]
        for line in lines:
            offsets.append(offsets[-1] + len(line))

        def at(lineno: int, col: int) -> int:
            return offsets[lineno - u.start] + col

        edits: list[tuple[int, int, bytes]] = []
        for a, b in refs.deleted:
            edits.append((at(a, 0), at(b + 1, 0) if b + 1 - u.start < len(lines) else offsets[-1], b""))
        for dec, opname in refs.decorators:
            line = lines[dec.lineno - u.start]
            indent = line[: len(line) - len(line.lstrip())]
            end = at(dec.end_lineno + 1, 0) if dec.end_lineno + 1 - u.start < len(lines) else offsets[-1]
            edits.append((at(dec.lineno, 0), end, indent + f'@op("{opname}")\n'.encode()))
        for n in refs.names:
            target = deps.get(n.id)
            if target is None or target[0] == "external":
                continue
            emitted = names.get(target)
            if emitted is not None and emitted != n.id:
                edits.append((at(n.lineno, n.col_offset), at(n.end_lineno, n.end_col_offset), emitted.encode()))
        own = {n: names[(u.module, n)] for n in u.names if names.get((u.module, n), n) != n}
        if own and isinstance(u.node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            line = lines[u.node.lineno - u.start]
            match = re.search(rb"\b(def|class)\s+(" + re.escape(u.node.name.encode()) + rb")\b", line)
            if match:
                edits.append((at(u.node.lineno, match.start(2)), at(u.node.lineno, match.end(2)),
                              own[u.node.name].encode()))
        elif own:  # assignment targets
            for t in (u.node.targets if isinstance(u.node, ast.Assign) else [u.node.target]):
                for n in ast.walk(t):
                    if isinstance(n, ast.Name) and n.id in own:
                        edits.append((at(n.lineno, n.col_offset), at(n.end_lineno, n.end_col_offset), own[n.id].encode()))
        data = b"".join(lines)
        for a, b, repl in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
            data = data[:a] + repl + data[b:]
        return data.decode()


def _is_kernel_module(module: str, name: str) -> bool:
    """Whether an import names a module of archgram's kernels package (not vendored)."""
    full = f"{module}.{name}" if name else module
    return full == KERNELS or full.startswith(KERNELS + ".") and (not name or importlib.util.find_spec(full) is not None)


def _first_arg(node: ast.stmt) -> object:
    call = node.value if isinstance(node, ast.Expr) else None
    if isinstance(call, ast.Call) and call.args and isinstance(call.args[0], ast.Constant):
        return call.args[0].value
    return None
