"""Grammar files on disk: the folder of shipped grammars, and ``use`` includes
resolved depth-first (each file once, next to the including file first, then
among the shipped grammars)."""
from __future__ import annotations

from pathlib import Path

from archgram.errors import GrammarError, Location
from archgram.grammar import syntax
from archgram.grammar.parser import parse_text

SHIPPED = Path(__file__).resolve().parent.parent / "grammars"


def load_all(root: syntax.FileSyntax, text: str, base: Path) -> tuple[list[syntax.FileSyntax], dict[str, str]]:
    """Depth-first include resolution, each file once; the root comes last."""
    files: list[syntax.FileSyntax] = []
    sources: dict[str, str] = {root.path: text}
    seen: set[str] = set()

    def visit(f: syntax.FileSyntax, here: Path) -> None:
        for rel, loc in f.uses:
            path = find_include(rel, here, loc)
            key = str(path.resolve())
            if key in seen:
                continue
            seen.add(key)
            try:
                sources[str(path)] = path.read_text()
            except OSError as exc:
                raise GrammarError(f"cannot read included file '{rel}': {exc.strerror}", loc) from None
            sub = parse_text(sources[str(path)], str(path))
            visit(sub, path.parent)
            files.append(sub)

    if root.path != "<string>":
        seen.add(str(Path(root.path).resolve()))
    visit(root, base)
    files.append(root)
    return files, sources


def find_include(rel: str, here: Path, loc: Location) -> Path:
    for candidate in (here / rel, SHIPPED / rel):
        if candidate.is_file():
            return candidate
    raise GrammarError(f"included file '{rel}' not found next to the grammar or among the shipped grammars ({SHIPPED})", loc)


def shipped_grammars() -> list[str]:
    """Names of the grammars that ship with archgram ('einspace', 'baselines/resnet', ...)."""
    return sorted(str(p.relative_to(SHIPPED).with_suffix("")) for p in SHIPPED.rglob("*.pcfg"))
