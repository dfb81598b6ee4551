"""Live status of the catalog rows (S01..S78): what implements each, what tests it.

Implementations are read from the registries (ops, attention parts, search
strategies, tasks, compiler passes), each of which names its rows in ``refs``. Tests are read
from the test suite: a test covers a row when its name, docstring or a
``pytest.mark.catalog("S06")`` marker names the row, or when its file sets
``pytestmark = pytest.mark.catalog(...)``. Nothing here is a hand-kept list.
"""
from __future__ import annotations

import ast
import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

ROWS_FILE = Path(__file__).with_name("catalog_rows.tsv")
#: One line per row: how faithful archgram's implementation is to the paper, the
#: paper's claim a test checks, and that test's id. Kept by hand after reading the
#: paper (the row's implementing class says in its docstring what differs).
FIDELITY_FILE = Path(__file__).with_name("catalog_fidelity.tsv")
#: Values of the fidelity column: "faithful", "n/a", "simplified: <what, why forced, what is lost>",
#: and "unreviewed" for a row not yet read against its paper.
FIDELITY = re.compile(r"^(faithful|n/a|unreviewed|simplified: .{20,})$")
GRAMMARS_DIR = Path(__file__).with_name("grammars")
REF = re.compile(r"\bS(\d\d)\b")


#: A row's status, most complete first: implementations and tests, either, neither.
STATUSES = ("implemented", "partial", "missing")


@dataclass
class Row:
    id: str
    paper: str
    kind: str
    what: str
    implementations: list[str] = field(default_factory=list)
    tests: list[str] = field(default_factory=list)
    fidelity: str = "unreviewed"
    claim: str = ""
    claim_test: str = ""

    @property
    def status(self) -> str:
        """One of STATUSES."""
        if self.implementations and self.tests:
            return "implemented"
        if self.implementations or self.tests:
            return "partial"
        return "missing"

    def to_dict(self) -> dict:
        return {"id": self.id, "status": self.status, "paper": self.paper, "kind": self.kind,
                "ops": self.implementations, "tests": self.tests, "fidelity": self.fidelity,
                "claim": self.claim, "claim_test": self.claim_test}


def rows() -> list[Row]:
    """The 78 rows with their fidelity entries."""
    with open(ROWS_FILE, newline="") as fh:
        table = [Row(r["id"], r["paper"], r["kind"], r["what"]) for r in csv.DictReader(fh, delimiter="\t")]
    entries = fidelity_entries()
    for row in table:
        entry = entries.get(row.id, {})
        row.fidelity = entry.get("fidelity") or "unreviewed"
        row.claim = entry.get("claim") or ""
        row.claim_test = entry.get("test") or ""
    return table


def fidelity_entries() -> dict[str, dict[str, str]]:
    """Row id -> {"fidelity", "claim", "test"} from ``catalog_fidelity.tsv``."""
    with open(FIDELITY_FILE, newline="") as fh:
        return {r["id"]: r for r in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)}


def implementations() -> dict[str, list[str]]:
    """Row id -> implementing registry entries, e.g. 'op:attention', 'score:sigmoid'."""
    from archgram.ops import all_ops
    from archgram.ops.attention import LAYOUTS, PATTERNS, POSITIONS, SCORES
    from archgram.search.strategies.base import STRATEGIES
    from archgram.tasks.base import all_tasks

    found: dict[str, list[str]] = {}

    def add(refs, label: str) -> None:
        for ref in refs or ():
            found.setdefault(ref, []).append(label)

    for spec in all_ops():
        add(spec.refs, f"op:{spec.name}")
    for registry in (SCORES, PATTERNS, POSITIONS, LAYOUTS):
        for name, cls in registry.items():
            add(cls.refs, f"{registry.axis}:{name}")
    for name, cls in STRATEGIES.items():
        add(getattr(cls, "refs", ()), f"strategy:{name}")
    for cls in all_tasks():
        add(getattr(cls, "refs", ()), f"task:{cls.name}")
    _add_kernels_and_benches(add)
    from archgram.compiler.passes import all_passes

    for spec in all_passes():
        add(spec.refs, f"pass:{spec.name}")
    from archgram import analysis, distributed
    from archgram.search import multitask, training

    # features and tools outside the registries name their rows in CATALOG_REFS {label: refs}
    for module in (training, multitask, analysis, distributed):
        for label, refs in module.CATALOG_REFS.items():
            add(refs, label)
    for path in sorted(GRAMMARS_DIR.glob("*.pcfg")):  # a shipped grammar names its rows in a '# catalog: S36' line
        for line in path.read_text().splitlines():
            if line.startswith("# catalog:"):
                add([f"S{n}" for n in REF.findall(line)], f"grammar:{path.stem}")
    return found


def _add_kernels_and_benches(add) -> None:
    """Kernel families (each archgram/kernels/<family> package's ``REFS``) and
    ``archgram bench`` suites (their ``refs``)."""
    import importlib
    import pkgutil

    import archgram.kernels
    from archgram.bench.base import SUITES

    for info in pkgutil.iter_modules(archgram.kernels.__path__):
        module = importlib.import_module(f"archgram.kernels.{info.name}")
        add(getattr(module, "REFS", ()), f"kernel:{info.name}")
    for name, cls in SUITES.items():
        add(cls.refs, f"bench:{name}")


def tests_by_ref(tests_dir: Path) -> dict[str, list[str]]:
    """Row id -> test ids ('tests/ops/x.py::test_y') that name the row."""
    found: dict[str, list[str]] = {}
    for path in sorted(tests_dir.rglob("test_*.py")):
        try:
            tree = ast.parse(path.read_text())
        except (SyntaxError, UnicodeDecodeError):
            continue
        module_refs = {
            ref
            for stmt in tree.body
            if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in stmt.targets)
            for ref in REF.findall(ast.unparse(stmt.value))
        }
        rel = path.relative_to(tests_dir.parent).as_posix()
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef) or not node.name.startswith("test"):
                continue
            text = " ".join([node.name, ast.get_docstring(node) or ""] + [ast.unparse(d) for d in node.decorator_list])
            refs = set(REF.findall(text)) | set(REF.findall(node.name.replace("_s", " S"))) | module_refs
            for ref in refs:
                found.setdefault(f"S{ref}", []).append(f"{rel}::{node.name}")
    return found


def default_tests_dir() -> Path | None:
    """The repository's tests/ next to the package (absent in a wheel install)."""
    candidate = Path(__file__).resolve().parent.parent / "tests"
    return candidate if candidate.is_dir() else None


def catalog(tests_dir: Path | None = None) -> list[Row]:
    table = rows()
    impl = implementations()
    tests = tests_by_ref(tests_dir) if tests_dir else {}
    for row in table:
        row.implementations = sorted(impl.get(row.id, []))
        row.tests = sorted(tests.get(row.id, []))
    return table
