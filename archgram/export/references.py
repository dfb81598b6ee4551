"""Name analysis of one source unit: which module-level names it reads (and
whether running its definition needs them or only its bodies do), which
``from archgram ...`` lines inside functions to drop, and which
``@register_op`` decorators to rewrite. The vendor follows these references to
the units it must copy too.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field

from archgram.errors import ExportError
from archgram.export.source import SourceModule, Unit, record_import, resolve

#: The op registry's decorator, rewritten to a stand-in in vendored code.
REGISTER_OP = ("archgram.ops.registry", "register_op")


@dataclass
class Refs:
    """What a unit reads: module-level names, by whether the definition needs them."""

    names: list[ast.Name] = field(default_factory=list)  # all global references (for renames)
    runtime: set[str] = field(default_factory=set)
    definition: set[str] = field(default_factory=set)  # needed when the unit itself runs
    annotations: set[str] = field(default_factory=set)
    local_archgram: dict[str, tuple[str, str]] = field(default_factory=dict)
    local_external: dict[str, str] = field(default_factory=dict)
    deleted: list[tuple[int, int]] = field(default_factory=list)  # whole lines (1-based, inclusive)
    decorators: list[tuple[ast.expr, str]] = field(default_factory=list)  # register_op -> @op(name)


def _bound_in(body: list[ast.stmt], args: ast.arguments | None) -> set[str]:
    """Names local to a function: parameters and everything assigned in its body
    (not in nested functions), minus ``global`` ones."""
    out: set[str] = set()
    if args is not None:
        for a in args.posonlyargs + args.args + args.kwonlyargs + [args.vararg, args.kwarg]:
            if a is not None:
                out.add(a.arg)
    glob: set[str] = set()
    stack = list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
            continue
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, ast.Global):
            glob.update(node.names)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            out.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                out.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            out.add(node.name)
        stack.extend(ast.iter_child_nodes(node))
    return out - glob


class Collector:
    def __init__(self, module: SourceModule, unit: Unit):
        self.m, self.unit, self.refs = module, unit, Refs()

    def run(self) -> Refs:
        node = self.unit.node
        self._stmt(node, scopes=[], definition=True, qual="")
        return self.refs

    # -- helpers
    def _use(self, n: ast.Name, scopes: list[set[str]], definition: bool, annotation: bool = False) -> None:
        if any(n.id in s for s in scopes):
            return
        if annotation:
            self.refs.annotations.add(n.id)
            self.refs.names.append(n)
            return
        self.refs.names.append(n)
        self.refs.runtime.add(n.id)
        if definition:
            self.refs.definition.add(n.id)

    def _expr(self, node: ast.AST | None, scopes, definition: bool, annotation: bool = False) -> None:
        if node is None:
            return
        if isinstance(node, ast.Lambda):
            self._args_defaults(node.args, scopes, definition)
            inner = scopes + [_bound_in([node.body], node.args)]
            self._expr(node.body, inner, False)
            return
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            targets = {n.id for g in node.generators for n in ast.walk(g.target) if isinstance(n, ast.Name)}
            inner = scopes + [targets]
            for child in ast.iter_child_nodes(node):
                self._expr(child, inner, definition, annotation)
            return
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load):
                self._use(node, scopes, definition, annotation)
            return
        for child in ast.iter_child_nodes(node):
            self._expr(child, scopes, definition, annotation)

    def _args_defaults(self, args: ast.arguments, scopes, definition: bool) -> None:
        for d in args.defaults + [d for d in args.kw_defaults if d is not None]:
            self._expr(d, scopes, definition)
        for a in args.posonlyargs + args.args + args.kwonlyargs + [args.vararg, args.kwarg]:
            if a is not None and a.annotation is not None:
                self._expr(a.annotation, scopes, False, annotation=True)

    def _decorators(self, node, scopes, definition: bool) -> None:
        for dec in node.decorator_list:
            call = dec.func if isinstance(dec, ast.Call) else dec
            if isinstance(call, ast.Name) and not any(call.id in s for s in scopes) and self._is_register_op(call.id):
                args = dec.args if isinstance(dec, ast.Call) else []
                if not args or not isinstance(args[0], ast.Constant) or not isinstance(args[0].value, str):
                    raise ExportError(f"{self.m.name}: @register_op on {node.name} does not name the op with a string")
                self.refs.decorators.append((dec, args[0].value))
                continue
            self._expr(dec, scopes, definition)

    def _is_register_op(self, local: str) -> bool:
        if local in self.m.units:
            return (self.m.name, local) == REGISTER_OP
        if local in self.m.archgram:
            try:
                return resolve(*self.m.archgram[local]) == REGISTER_OP
            except ExportError:
                return False
        return False

    def _stmt(self, node: ast.stmt, scopes: list[set[str]], definition: bool, qual: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            self._decorators(node, scopes, definition)
            self._args_defaults(node.args, scopes, definition)
            if node.returns is not None:
                self._expr(node.returns, scopes, False, annotation=True)
            name = f"{qual}{node.name}"
            self._local_imports(node)
            inner = scopes + [_bound_in(node.body, node.args) - set(self.refs.local_archgram)]
            for stmt in node.body:
                self._stmt(stmt, inner, False, f"{name}.")
            return
        if isinstance(node, ast.ClassDef):
            self._decorators(node, scopes, definition)
            for b in node.bases + [k.value for k in node.keywords]:
                self._expr(b, scopes, definition)
            inner = scopes + [_bound_in([s for s in node.body if not isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))], None)]
            for stmt in node.body:
                # methods run later and do not see the class scope; class-level
                # statements run with the class definition
                method = isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef))
                self._stmt(stmt, scopes if method else inner, definition, f"{qual}{node.name}.")
            return
        if isinstance(node, ast.AnnAssign):
            self._expr(node.annotation, scopes, False, annotation=True)
            self._expr(node.value, scopes, definition)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            return
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                self._stmt(child, scopes, definition, qual)
            else:
                self._expr(child, scopes, definition)

    def _local_imports(self, fn: ast.AST) -> None:
        """Record a function's ``from archgram... import`` lines (anywhere in its
        body) and mark them for deletion: their names are vendored alongside."""
        for stmt in ast.walk(fn):
            if not isinstance(stmt, (ast.Import, ast.ImportFrom)):
                continue
            arch: dict[str, tuple[str, str]] = {}
            ext: dict[str, str] = {}
            record_import(self.m, stmt, arch, ext)
            if arch and ext:
                raise ExportError(f"{self.m.name}:{stmt.lineno}: an import mixes archgram and other modules")
            if arch and (stmt.lineno, stmt.end_lineno) not in self.refs.deleted:
                self.refs.local_archgram.update(arch)
                self.refs.deleted.append((stmt.lineno, stmt.end_lineno))


# ------------------------------------------------------------------ closure
