"""`archgram analyze`: head importance, attention distances and maps of a trained model (S69).

    archgram analyze runs/mqar.db --best --out analysis/       # the study's best trial
    archgram analyze runs/mqar.db --trial 7
    archgram analyze arch.json --task mqar --budget 200steps   # a derivation, trained here
    archgram analyze runs/mqar-best --task mqar                # an `archgram export` folder

Writes index.html (open it), analysis.json, importance.png, distance.png and
attention_L<i>.png. A model without attention is bad input (exit code 2).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from archgram.errors import ArchgramError


def analyze_command(
    source: Annotated[str, typer.Argument(metavar="MODEL_OR_EXPORT", show_default=False,
                                          help="Study file (.db or URL), derivation .json, or export folder.")],
    task: Annotated[str | None, typer.Option("--task", "-t", help="Task (needed for a derivation or an export).", show_default=False)] = None,
    trial: Annotated[int | None, typer.Option("--trial", help="Study trial number (default: the best).", show_default=False)] = None,
    best: Annotated[bool, typer.Option("--best", help="The study's best trial (the default).")] = False,
    budget: Annotated[str | None, typer.Option("--budget", show_default=False,
                                               help="Training budget when (re)training, e.g. 200steps (default: the trial's; 200steps for a derivation).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Training seed for a derivation.")] = 0,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("analysis"),
    max_val: Annotated[int, typer.Option("--max-val", min=1, help="Validation examples used.")] = 256,
    no_ablation: Annotated[bool, typer.Option("--no-ablation", help="Skip head ablation (maps and distances only).")] = False,
) -> None:
    """Per-head importance by ablation, attention-distance profiles, attention-map PNGs and an HTML report."""
    from archgram.analysis.analyze import analyze
    from archgram.analysis.source import load

    if trial is not None and best:
        raise ArchgramError("give --trial N or --best, not both")
    if out.exists() and not out.is_dir():
        raise ArchgramError(f"--out {out}: exists and is not a directory")
    loaded = load(source, task=task, trial=trial, best=best, budget=budget, seed=seed)
    result, files = analyze(loaded, out, max_val=max_val, ablate=not no_ablation)
    typer.echo(f"{result['source']}: {len(result['layers'])} attention layers")
    imp = result["importance"]
    for i, layer in enumerate(result["layers"]):
        d = layer["mean_distance"]
        dist = " ".join(f"{v:.1f}" for v in d) if d else "n/a"
        top = ""
        if imp:
            deltas = imp["loss_delta"][layer["name"]]
            h = max(range(len(deltas)), key=deltas.__getitem__)
            top = f"; most important head {h} (+{deltas[h]:.4f} loss)"
        typer.echo(f"  L{i} {layer['name']}: {layer['heads']} heads, distance [{dist}] {result['distance_unit']}{top}")
    typer.echo(f"wrote {len(files)} files to {out} (open {out / 'index.html'})")


def register(app: typer.Typer) -> None:
    app.command("analyze")(analyze_command)
