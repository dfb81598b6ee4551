"""The import graph: no module cycles, and no import that points up the layers
drawn in docs/architecture.md. Read from the source with ``ast`` (nothing is
imported), so a violation fails here before it can hide behind a lazy import.

Imports under ``if TYPE_CHECKING:`` are annotations only and do not count. A
module importing its own ancestor package (``archgram.ops.x`` -> ``archgram.ops``)
is how Python packages work and is not a cycle.
"""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parent.parent / "archgram"

#: Lowest first: a module may import from its own layer and the layers before it.
LAYERS = (
    ("errors", "shapes", "registry"),
    ("kernels",),
    ("ops",),
    ("grammar",),
    ("compiler",),
    ("tasks",),
    ("search",),
    ("export", "analysis", "distributed", "bench"),
    ("catalog", "api"),
    ("cli",),
)

#: Known violations being removed (issue 19), each with what removes it. The
#: test fails on any violation not listed here, and on a listed one that is gone
#: (so the list only shrinks).
KNOWN_UPWARD: dict[tuple[str, str], str] = {}
KNOWN_CYCLES: dict[frozenset, str] = {}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(tree: ast.Module):
    """Import nodes outside ``if TYPE_CHECKING:`` blocks."""
    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for sub in child.orelse:
                    yield from visit_one(sub)
                continue
            yield from visit_one(child)

    def visit_one(node):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from visit(node)

    yield from visit(tree)


def _discovered(name: str, path: Path, tree: ast.Module) -> list[str]:
    """The modules a package's ``import_submodules(__name__)`` imports: each
    module file beside its ``__init__`` (as archgram.registry finds them)."""
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "import_submodules"]
    if path.name != "__init__.py" or not calls:
        return []
    return [f"{name}.{p.stem}" for p in sorted(path.parent.glob("*.py")) if not p.name.startswith("_")]


def import_graph() -> nx.DiGraph:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = nx.DiGraph()
    graph.add_nodes_from(files)
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text())
        graph.add_edges_from((name, module) for module in _discovered(name, path, tree))
        for node in _runtime_imports(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    pkg = name.split(".") if is_package else name.split(".")[:-1]
                    pkg = pkg[: len(pkg) - (node.level - 1)]
                    base = ".".join(pkg + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for target in targets:
                while target not in files and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in files and target != name and not name.startswith(target + "."):
                    graph.add_edge(name, target)
    return graph


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None
    top = "cli" if parts[1].startswith("cli") else parts[1]
    return next((i for i, names in enumerate(LAYERS) if top in names), None)


def top_package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def test_every_subpackage_has_a_layer():
    tops = {m.split(".")[1] for m in import_graph() if m.count(".") >= 1}
    missing = sorted(t for t in tops if layer_of(f"archgram.{t}") is None and t != "__main__")
    assert not missing, f"add these to LAYERS (and docs/architecture.md): {missing}"


def test_no_import_points_up_the_layers():
    graph = import_graph()
    upward = set()
    for a, b in graph.edges:
        la, lb = layer_of(a), layer_of(b)
        if la is not None and lb is not None and lb > la:
            upward.add((a, top_package(b)))
    assert upward - set(KNOWN_UPWARD) == set(), "imports pointing up the layers (see docs/architecture.md)"
    assert set(KNOWN_UPWARD) - upward == set(), "fixed: remove these from KNOWN_UPWARD"


def test_no_module_import_cycles():
    cycles = {frozenset(c) for c in nx.simple_cycles(import_graph())}
    assert cycles - set(KNOWN_CYCLES) == set(), "import cycles between modules"
    assert set(KNOWN_CYCLES) - cycles == set(), "fixed: remove these from KNOWN_CYCLES"




def test_archgram_imports_the_evaluator_s_re_exports_from_their_home_modules():
    """archgram.search.evaluator re-exports Budget, build_model, score_split, ...
    for users; inside archgram they come from the modules that define them, so
    the graph above shows the real dependency (and importing one does not load
    the whole training stack)."""
    tree = ast.parse((PACKAGE / "search" / "evaluator.py").read_text())
    own = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    found = [f"{module_name(path)}: {a.name}" for path in sorted(PACKAGE.rglob("*.py"))
             for node in _runtime_imports(ast.parse(path.read_text()))
             if isinstance(node, ast.ImportFrom) and node.module == "archgram.search.evaluator"
             for a in node.names if a.name not in own]
    assert found == [], "import these from the module that defines them, not archgram.search.evaluator"

# ------------------------------------------------------------------ sizes
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 60
#: Files still over a limit while they are being split, each with what splits it.
#: The test fails on a file not listed here and on a listed one now within both limits.
#: files allowed past the limits while they are split (path -> why); empty since issue 19
KNOWN_OVERSIZE: dict[str, str] = {}


def oversize() -> dict[str, list[str]]:
    """Source files outside archgram/kernels/ (Triton kernels are long by nature)
    over a limit: path -> what is too long."""
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).as_posix()
        if rel.startswith("archgram/kernels/"):
            continue
        text = path.read_text()
        problems = []
        if len(text.splitlines()) > MAX_FILE_LINES:
            problems.append(f"{len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    problems.append(f"{node.name}: {length} lines")
        if problems:
            found[rel] = problems
    return found


def test_files_within_500_lines_and_functions_within_60_outside_kernels_or_known_oversize():
    found = oversize()
    assert {k: v for k, v in found.items() if k not in KNOWN_OVERSIZE} == {}, "split these along meaning (issue 19)"
    assert set(KNOWN_OVERSIZE) - set(found) == set(), "within the limits now: remove these from KNOWN_OVERSIZE"
