"""``archgram export``: write a trial of a study as a self-contained folder.

    archgram export runs/digits.db --out best/            # the best trial
    archgram export runs/digits.db --out t3/ --trial 3    # a chosen trial
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.text import Text

from archgram.cli.common import console, emit_json


def print_result(console, result) -> None:
    """The lines ``export`` and ``search`` print after an export."""
    score = "-" if result.score is None else f"{result.score:.4f}"
    console.print(Text.assemble(("exported ", "bold green"), f"trial {result.trial} ({result.metric} {score}, "
                                f"{result.params:,} params) to ", (str(result.out), "bold"), f": {', '.join(result.files)}"),
                  soft_wrap=True, highlight=False)
    if result.weights_source != "study":
        console.print(Text.assemble(("note: ", "yellow"), "the search kept no weights for this trial, so it was "
                                    "retrained (see README.md)"), soft_wrap=True, highlight=False)
    for name, note in result.notes.items():
        if note != "not requested":
            console.print(Text.assemble((f"  {name}: ", "dim"), escape(note)), soft_wrap=True, highlight=False)


def export_command(
    study: Annotated[str, typer.Argument(metavar="STUDY", help="Study file (or RDB URL) written by archgram search.",
                                         show_default=False)],
    out: Annotated[Path | None, typer.Option("--out", "-o", metavar="DIR", show_default=False,
                                             help="Output folder (default: <study>-best or <study>-trial<N> beside it).")] = None,
    trial: Annotated[int | None, typer.Option("--trial", "-t", metavar="N", show_default=False,
                                              help="Export trial N (see `archgram show`).")] = None,
    best: Annotated[bool, typer.Option("--best", help="Export the best trial by score (the default).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite the export files in an existing --out.")] = False,
    pt2: Annotated[bool, typer.Option("--pt2/--no-pt2", help="Write model.pt2 (torch.export).")] = True,
    onnx: Annotated[bool, typer.Option("--onnx/--no-onnx", help="Write model.onnx (needs the onnx package).")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")] = False,
) -> None:
    """Export a trial as plain PyTorch: model.py, weights.safetensors, model.pt2, model.onnx,
    derivation.json and a README.md model card.

    The export is checked before it is written: model.py with the weights must
    reproduce the search's model output.
    """
    from archgram.export.exporter import export

    result = export(study, out, trial=trial, best=best, force=force, pt2=pt2, onnx=onnx)
    if as_json:
        emit_json(result.to_dict())
        return
    print_result(console, result)
    console.print(Text.assemble(("load: ", "bold"), f"cd {result.out} && python -c 'from model import load; "
                                    "print(load())'"), soft_wrap=True, highlight=False)


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
