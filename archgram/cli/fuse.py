"""`archgram fusions`: the attention cascades a derivation hides in its primitives
(catalog row S55), as FuseMax-style cascades of Einsums.

    archgram fusions derivation.json               # each match: where, Q/K/V, sizes, cascade
    archgram fusions derivation.json --one-pass    # the one-pass cascade a fused kernel runs
    archgram fusions derivation.json --json        # [{"kind", "path", "paths", "cascade", ...}]
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from archgram.cli.common import emit_json
from archgram.errors import ArchgramError


def _as_dict(match, one_pass: bool) -> dict:
    from archgram.compiler.passes.attention import HeadsMatch

    out = {"kind": "multi_head" if isinstance(match, HeadsMatch) else "attention", "path": match.path,
           "paths": list(match.paths), "cascade": match.cascade(one_pass)}
    first = match.heads[0] if isinstance(match, HeadsMatch) else match
    out.update(sizes=first.sizes(), scale=first.scale)
    if isinstance(match, HeadsMatch):
        out["heads"] = [m.path for m in match.heads]
    return out


def fusions_command(
    derivation: Annotated[Path, typer.Argument(help="A derivation JSON file (archgram sample --out).", show_default=False)],
    one_pass: Annotated[bool, typer.Option("--one-pass", help="Show the one-pass (online softmax) cascade.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="A JSON list of matches instead of text.")] = False,
) -> None:
    """Attention written with primitives in a derivation, as cascades of Einsums;
    `archgram.compile(d, fuse=True)` runs each as one fused attention call."""
    from archgram.compiler.passes.attention import describe, find_fusions
    from archgram.grammar.derivation import Derivation

    try:
        text = derivation.read_text()
    except OSError as exc:
        raise ArchgramError(f"cannot read derivation {derivation}: {exc.strerror}") from None
    matches = find_fusions(Derivation.from_json(text))
    if as_json:
        emit_json([_as_dict(m, one_pass) for m in matches])
    else:
        typer.echo(describe(matches, one_pass))


def register(app: typer.Typer) -> None:
    app.command("fusions")(fusions_command)
