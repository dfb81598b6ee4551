"""`archgram catalog`: the seed-paper catalog with each row's live status.

    archgram catalog                 # table: id, status, paper, implementations, tests
    archgram catalog --status missing
    archgram catalog --json          # [{"id": "S06", "status": "implemented", "fidelity": "faithful", ...}]
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from archgram.catalog import STATUSES, catalog, default_tests_dir
from archgram.cli.common import console, emit_json
from archgram.errors import ArchgramError
from archgram.registry import unknown

STYLE = {"implemented": "green", "partial": "yellow", "missing": "red"}


def catalog_command(
    status: Annotated[str | None, typer.Option("--status", help="Only rows with this status: implemented, partial, missing.")] = None,
    tests: Annotated[Path | None, typer.Option("--tests", help="Test folder to scan (default: the repository's tests/).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="A JSON list of rows instead of the table.")] = False,
) -> None:
    """The catalog rows (S01..S78) with status, implementing ops and covering tests."""
    if status is not None and status not in STATUSES:
        raise ArchgramError(unknown("status", status, STATUSES))
    folder = tests or default_tests_dir()
    if tests is not None and not tests.is_dir():
        raise ArchgramError(f"test folder {tests} does not exist")
    rows = [r for r in catalog(folder) if status is None or r.status == status]
    if as_json:
        emit_json([r.to_dict() for r in rows])
        return
    table = Table(title="archgram catalog" + ("" if folder else " (no test folder found: tests not scanned)"))
    for col in ("id", "status", "fidelity", "paper", "implemented by", "tests"):
        table.add_column(col, overflow="fold")
    for r in rows:
        impl = ", ".join(r.implementations[:6]) + (f" (+{len(r.implementations) - 6})" if len(r.implementations) > 6 else "")
        table.add_row(r.id, f"[{STYLE[r.status]}]{r.status}[/]", r.fidelity, r.paper, impl or "-", str(len(r.tests)))
    console.print(table)
    counts = {s: sum(r.status == s for r in catalog(folder)) for s in STATUSES}
    console.print(" ".join(f"[{STYLE[s]}]{s}: {n}[/]" for s, n in counts.items()))


def register(app: typer.Typer) -> None:
    app.command("catalog")(catalog_command)
