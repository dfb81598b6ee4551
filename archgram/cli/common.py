"""What every command module shares: the consoles, the exit codes, the option
types and the small helpers that turn user input into objects or print one line.

One definition of each, imported by name (``from archgram.cli.common import
console, EXIT_FAILED``), so a command module never reaches into another one or
into the package ``__init__``. Exit codes:

  0    everything checked out
  1    the input was fine but something it produced failed (a lint error, a
       sample that would not sample, compile or run, a search whose trials all failed)
  2    bad input: arguments, a malformed grammar file, an input shape the grammar
       cannot accept
  3    internal error (a bug in archgram; rerun with --debug)
  130  interrupted
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from archgram.cli.util import human, jsonable
from archgram.errors import ArchgramError
from archgram.shapes import parse_shape

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
PROGRESS_FROM = 20  # show a progress bar from this many steps on (on a terminal)


def _width(stream) -> int | None:
    # Piped output (files, CI logs) gets 120 columns instead of rich's 80.
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return None if tty or os.environ.get("COLUMNS") else 120


console = Console(width=_width(sys.stdout))
err = Console(stderr=True, width=_width(sys.stderr))

# ----------------------------------------------------------------- options
GrammarArg = Annotated[str, typer.Argument(metavar="GRAMMAR", help="Grammar file (.pcfg) or shipped grammar name.", show_default=False)]
ShapeOpt = Annotated[
    str,
    typer.Option("--input-shape", "-i", metavar="SHAPE", show_default=False,
                 help="Input shape B,C,H,W (image) or B,N,D (sequence), e.g. 8,3,32,32."),
]
SeedOpt = Annotated[int, typer.Option("--seed", "-s", help="Sample i uses seed SEED+i.")]
LimitOpt = Annotated[
    list[str] | None,
    typer.Option("--limit", "-l", metavar="KEY=VALUE", show_default=False,
                 help="Override a grammar limit (depth, nodes, params, flops, memory); repeatable, e.g. params=1M."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one machine-readable JSON object instead of tables.")]


# ----------------------------------------------------------------- input
def open_grammar(grammar: str):
    """The grammar a GRAMMAR argument names, with a message that lists the
    shipped grammars when it names neither a file nor one of them."""
    import archgram
    from archgram.grammar.files import SHIPPED

    p = Path(grammar)
    shipped = [SHIPPED / p.name, SHIPPED / f"{p.name}.pcfg"]
    if p.is_dir():
        raise ArchgramError(f"grammar {grammar!r} is a directory; give a .pcfg file")
    if not p.exists() and not any(s.is_file() for s in shipped):
        names = ", ".join(sorted(s.stem for s in SHIPPED.glob("*.pcfg")))
        raise ArchgramError(f"grammar {grammar!r} not found: no such file, and no shipped grammar of that name (shipped: {names})")
    return archgram.load_grammar(grammar)


def parse_input_shape(text: str) -> tuple[int, ...]:
    """``--input-shape`` text as a shape; the error names the option."""
    try:
        return parse_shape(text)
    except ArchgramError as exc:
        raise ArchgramError(f"--input-shape: {exc}") from None


# ----------------------------------------------------------------- output
def progress(total: int, what: str, quiet: bool) -> Progress:
    """A progress bar on stderr, shown only on a terminal and for long runs."""
    return Progress(
        TextColumn(f"[bold]{what}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=quiet or total < PROGRESS_FROM or not err.is_terminal,
    )


def emit_json(obj: Any) -> None:
    """One JSON document on stdout (plain write: rich would wrap and colour it)."""
    sys.stdout.write(json.dumps(jsonable(obj), indent=2) + "\n")
    sys.stdout.flush()


def warn(msg: str) -> None:
    err.print(Text.assemble(("warning: ", "bold yellow"), msg), soft_wrap=True, highlight=False)


def error(msg: str) -> None:
    err.print(Text.assemble(("error: ", "bold red"), msg), soft_wrap=True, highlight=False)


def limits_text(limits: dict, overrides: dict) -> Text:
    """``depth 12  nodes 80  params 5M (--limit)``: the limits in force, overrides marked."""
    text = Text()
    for i, (k, v) in enumerate(limits.items()):
        if i:
            text.append("  ")
        text.append(f"{k} ", style="dim")
        text.append(human(v) if k in ("params", "flops", "memory") else str(v), style="bold" if k in overrides else "")
        if k in overrides:
            text.append(" (--limit)", style="cyan")
    return text
