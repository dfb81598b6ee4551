"""`archgram experts`: find a trained MoE model's behaviour-specific experts and
measure what switching them off or forcing them on does (S53, Mixture of
Tunable Experts).

    archgram experts runs/m-best --task mnist1d --a refusals.npy --b reference.npy
    archgram experts runs/m-best --task mnist1d --a a.npy --b b.npy --switch-off 2
    archgram experts runs/m.db --a a.npy --b b.npy --disable 3.moe.moe:1 --force 3.moe.moe:2

Sets A and B are model inputs in .npy files (N, ...) read without pickle. The
command ranks experts by activation rate on A minus rate on B; with
``--switch-off N`` (the top N), ``--disable`` or ``--force`` it reruns A and B
with that tuning and reports the mean output change and the share of changed
argmax predictions on each. In Python, ``archgram.analysis.experts`` does the
same on any model, an ``archgram export``'s model.py included.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from archgram.errors import ArchgramError


def _inputs(path: Path, batch_size: int) -> list:
    import numpy as np
    import torch

    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ArchgramError(f"{path}: cannot read a .npy array of model inputs ({exc})") from None
    x = torch.as_tensor(array, dtype=torch.float32)
    return list(x.split(batch_size))


def _pairs(values: list[str], flag: str) -> list[tuple[str, int]]:
    out = []
    for v in values:
        layer, _, expert = v.rpartition(":")
        if not layer or not expert.isdigit():
            raise ArchgramError(f"{flag} {v!r}: expected LAYER:EXPERT, e.g. 3.moe.moe:1")
        out.append((layer, int(expert)))
    return out


def experts_command(
    source: Annotated[str, typer.Argument(metavar="MODEL_OR_EXPORT", show_default=False,
                                          help="Study file (.db or URL), derivation .json, or export folder.")],
    set_a: Annotated[Path, typer.Option("--a", help="Inputs that elicit the behaviour (.npy).", show_default=False)],
    set_b: Annotated[Path, typer.Option("--b", help="Reference inputs (.npy).", show_default=False)],
    task: Annotated[str | None, typer.Option("--task", "-t", help="Task (needed for a derivation or an export).", show_default=False)] = None,
    trial: Annotated[int | None, typer.Option("--trial", help="Study trial number (default: the best).", show_default=False)] = None,
    top: Annotated[int, typer.Option("--top", min=1, help="How many distinctive experts to list.")] = 10,
    switch_off: Annotated[int, typer.Option("--switch-off", min=0, help="Disable the top N distinctive experts and report the effect.")] = 0,
    disable: Annotated[list[str] | None, typer.Option("--disable", help="LAYER:EXPERT to switch off (repeatable).", show_default=False)] = None,
    force: Annotated[list[str] | None, typer.Option("--force", help="LAYER:EXPERT to force on (repeatable).", show_default=False)] = None,
) -> None:
    """Rank experts by activation on A minus B; optionally tune them and report the change."""
    from archgram.analysis.experts import distinctive_experts, moe_layers, tuning_effect
    from archgram.analysis.source import AnalysisError, load

    def require_moe(model) -> None:
        if not moe_layers(model):
            raise AnalysisError("the model has no routed mixture-of-experts layer ('moe' op) to tune")

    loaded = load(source, task=task, trial=trial, best=trial is None, require=require_moe)
    model, bs = loaded.model, loaded.batch_size
    a, b = _inputs(set_a, bs), _inputs(set_b, bs)
    ranked = distinctive_experts(model, a, b, top=None)
    typer.echo(f"{loaded.description}: {len(moe_layers(model))} MoE layers; experts by activation on A - B")
    for d in ranked[:top]:
        typer.echo(f"  {d.layer}:{d.expert}  A {d.rate_a:.3f}  B {d.rate_b:.3f}  diff {d.difference:+.3f}")
    off = [(d.layer, d.expert) for d in ranked[:switch_off]] + _pairs(disable or [], "--disable")
    on = _pairs(force or [], "--force")
    if not off and not on:
        return
    try:
        effect = tuning_effect(model, {"A": a, "B": b}, disable=off, force=on)
    except ValueError as exc:
        raise ArchgramError(str(exc)) from None
    what = ", ".join([f"off {layer}:{e}" for layer, e in off] + [f"on {layer}:{e}" for layer, e in on])
    typer.echo(f"tuned ({what}):")
    for name, e in effect.items():
        typer.echo(f"  {name}: mean |output change| {e['mean_change']:.4f}, "
                   f"changed predictions {e['changed_predictions']:.1%}")


def register(app: typer.Typer) -> None:
    app.command("experts")(experts_command)
