"""``archgram check``, ``sample`` and ``ops``: is a grammar sound, what does it
produce, which ops can it use.

    archgram check my.pcfg --input-shape 8,3,32,32          # lint + share of samples that compile and run
    archgram sample einspace -i 8,3,32,32 --n 20 --out samples/ --show --dot
    archgram ops --family primitives

The work is ``archgram.check_grammar`` and ``archgram.sample_grammar``; this
module parses options, calls them and prints. ``check`` exits 1 on lint errors
or a failed sample; either command exits 2 when no sample at all could be drawn
for the input shape.
"""
from __future__ import annotations

import math
import shutil
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from archgram.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    GrammarArg,
    JsonOpt,
    LimitOpt,
    SeedOpt,
    ShapeOpt,
    console,
    emit_json,
    error,
    limits_text,
    open_grammar,
    parse_input_shape,
    progress,
    warn,
)
from archgram.cli.util import arg_text, human, op_doc, op_to_dict, ops_text, parse_limits, shape_text, short_loc
from archgram.errors import ArchgramError

SHOW_FAILURES = 5


# ------------------------------------------------------------------- check
def check(
    grammar: GrammarArg,
    input_shape: ShapeOpt,
    n: Annotated[int, typer.Option("--n", "-n", min=0, help="Architectures to sample, compile and run.")] = 50,
    seed: SeedOpt = 0,
    limit: LimitOpt = None,
    device: Annotated[str, typer.Option("--device", help="Torch device for the forward passes.")] = "cpu",
    as_json: JsonOpt = False,
) -> None:
    """Lint a grammar, then sample, compile and run N architectures from it.

    Exit code 0 when the grammar is clean and every sample compiles and runs,
    1 on lint errors or any failed sample, 2 on bad input.
    """
    from archgram.compiler.check import check_grammar

    shape = parse_input_shape(input_shape)
    g = open_grammar(grammar)
    overrides = parse_limits(limit)
    dev = _device(device)
    with progress(n, "checking", as_json) as bar:
        task = bar.add_task("check", total=n)
        result = check_grammar(g, shape, n=n, seed=seed, limits=overrides, device=dev,
                               on_progress=lambda done: bar.update(task, completed=done))
    smp = result["samples"]
    no_sample = n > 0 and smp["sampled"] == 0
    code = EXIT_BAD_INPUT if no_sample else (EXIT_OK if result["ok"] else EXIT_FAILED)
    result["exit_code"] = code
    if as_json:
        emit_json(result)
    else:
        _print_check(g, result)
    if no_sample:
        first = result["failures"][0]["error"] if result["failures"] else ""
        tried = f"the first {smp['stopped_after']} seeds" if smp["stopped_after"] else f"{n} seeds"
        error(f"no architecture of '{g.name}' could be sampled for input shape {shape_text(shape)} "
              f"(tried {tried}): {first}")
    raise typer.Exit(code)


def _device(name: str):
    import torch

    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise ArchgramError(f"--device: {name!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ArchgramError(f"--device {name}: CUDA is not available on this machine")
    return dev


def _print_check(g, result: dict) -> None:
    gi = result["grammar"]
    files = f" (+{len(gi['files']) - 1} included)" if len(gi["files"]) > 1 else ""
    console.print(
        Panel.fit(
            f"[bold]{escape(g.name)}[/]  {escape(gi['path'])}{files}\n"
            f"{gi['rules']} rules, {gi['productions']} productions, start [bold]{escape(g.start)}[/], "
            f"sha256 {gi['sha256'][:16]}",
            title="grammar",
            border_style="blue",
        )
    )
    console.print(_rules_table(g, result["rules"]))
    _print_lint(result)
    if result["samples"]["n"]:
        _print_stages(result)
    _print_verdict(result)


def _rules_table(g, rules: list[dict]) -> Table:
    table = Table(title="rules", title_justify="left", show_lines=False, header_style="bold")
    table.add_column("rule")
    table.add_column("kind", style="dim")
    table.add_column("#", justify="right")
    table.add_column("probabilities")
    table.add_column("normalisation", style="dim")
    table.add_column("location", style="dim", no_wrap=True)
    for r in rules:
        probs = [p["prob"] for p in r["productions"]]
        text = " ".join(f"{p:.3g}" for p in probs[:8]) + (f" … (+{len(probs) - 8})" if len(probs) > 8 else "")
        name = f"[bold]{escape(r['name'])}[/]" + (" [green](start)[/]" if r["start"] else "")
        table.add_row(name, r["kind"], str(len(probs)), text, escape(r["normalisation"]),
                      short_loc(g.rules[r["name"]].loc))
    return table


def _print_lint(result: dict) -> None:
    lint = result["lint"]
    console.print("[bold]lint[/]")
    for e in lint["errors"]:
        console.print(Text.assemble("  ", ("error: ", "bold red"), e), soft_wrap=True)
    for w in lint["warnings"]:
        console.print(Text.assemble("  ", ("warning: ", "yellow"), w), soft_wrap=True)
    console.print(f"  unreachable:  {', '.join(lint['unreachable']) or '[green]none[/]'}")
    console.print(f"  unproductive: {', '.join(lint['unproductive']) or '[green]none[/]'}")
    radius = lint["spectral_radius"]
    style = "green" if radius < 1 else "red"
    size = "infinite" if lint["expected_nodes"] is None else f"{lint['expected_nodes']:.3g} op nodes"
    console.print(f"  spectral radius of the offspring matrix: [{style}]{radius:.4g}[/]  expected derivation size: {size}",
                  soft_wrap=True)
    console.print(Text.assemble(("limits  ", "bold"), limits_text(result["limits"], result["limit_overrides"])),
                  soft_wrap=True)


def _print_stages(result: dict) -> None:
    smp = result["samples"]
    n = smp["n"]
    console.print(f"[bold]{n} samples[/] for input {shape_text(result['input_shape'])} "
                  f"(seeds {smp['seed']}..{smp['seed'] + n - 1}, device {smp['device']})", soft_wrap=True)
    table = Table(header_style="bold")
    table.add_column("stage")
    table.add_column("ok", justify="right")
    table.add_column("share", justify="right")
    table.add_column("time", justify="right")
    for stage, key in (("sample", "sampled"), ("compile", "compiled"), ("run", "ran")):
        sh = smp["share"][stage]
        style = "green" if sh == 1 else ("yellow" if sh > 0 else "red")
        per = smp["seconds"][stage] / max(smp[key], 1) * 1000
        table.add_row(stage, f"{smp[key]}/{n}", f"[{style}]{sh:.0%}[/]", f"{per:.1f} ms/each")
    console.print(table)
    rate = smp["samples_per_s"]
    console.print(
        f"  unique architectures {smp['unique']}/{smp['sampled']}   "
        f"rejection rate {smp['rejection_rate']:.1%} ({smp['rejections']} rejected options, "
        f"{smp['restarts']} restarts)   "
        f"sampling {'-' if rate is None else f'{rate:.1f}'} samples/s"
        + (f"   [yellow]{smp['nonfinite_outputs']} outputs not finite[/]" if smp["nonfinite_outputs"] else ""),
        soft_wrap=True,
    )


def _print_verdict(result: dict) -> None:
    failures = result["failures"]
    if failures:
        console.print(f"[bold red]failures[/] ({len(failures)}; first {min(len(failures), SHOW_FAILURES)}):")
        for f in failures[:SHOW_FAILURES]:
            console.print(Text.assemble("  ", (f"#{f['index']} seed {f['seed']} {f['stage']}: ", "red"), f["error"]),
                          soft_wrap=True)
    if result["ok"]:
        console.print("[bold green]ok[/]")
        return
    why = []
    if result["lint"]["errors"]:
        why.append(f"{len(result['lint']['errors'])} lint error(s)")
    if failures:
        why.append(f"{len(failures)} failed sample(s)")
    console.print(f"[bold red]FAILED[/]: {', '.join(why)}")


# ------------------------------------------------------------------ sample
def sample(
    grammar: GrammarArg,
    input_shape: ShapeOpt,
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="Architectures to sample.")] = 20,
    seed: SeedOpt = 0,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", metavar="DIR", help="Write NNN_<hash>.json per sample and summary.json here.",
                     show_default=False),
    ] = None,
    show: Annotated[bool, typer.Option("--show", help="Pretty-print each derivation tree.")] = False,
    dot: Annotated[bool, typer.Option("--dot", help="Write a Graphviz .dot per sample (and .png if 'dot' is installed).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the samples of an earlier run in --out.")] = False,
    limit: LimitOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Sample N architectures (sample i from seed SEED+i) and summarise them."""
    from archgram.grammar.samples import sample_grammar

    shape = parse_input_shape(input_shape)
    if dot and out is None:
        raise ArchgramError("--dot writes files: give --out DIR as well")
    g = open_grammar(grammar)
    overrides = parse_limits(limit)

    def show_tree(d, row: dict) -> None:
        console.print(Text(f"#{row['index']} seed {row['seed']} {row['hash']}  {shape_text(shape)} -> "
                           f"{shape_text(d.output_shape)}", style="bold"))
        console.print(Text(d.pretty()), soft_wrap=True, highlight=False)
        console.print()

    with progress(n, "sampling", as_json) as bar, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        task = bar.add_task("sample", total=n)
        summary = sample_grammar(g, shape, n=n, seed=seed, limits=overrides, out=out, dot=dot, overwrite=overwrite,
                                 on_sample=show_tree if show and not as_json else None,
                                 on_progress=lambda done: bar.update(task, completed=done))
    for w in caught:
        warn(str(w.message))
    _report_samples(g, summary, out, dot, as_json)


def _report_samples(g, summary: dict, out: Path | None, dot: bool, as_json: bool) -> None:
    rows, failures, n = summary["samples"], summary["failures"], summary["n"]
    rendered = any("png" in r for r in rows)
    if as_json:
        emit_json(summary)
    elif rows:
        console.print(_samples_table(g, summary))
        rate = summary["sampled"] / summary["seconds"] if summary["seconds"] > 0 else math.nan
        console.print(Text.assemble(f"{summary['unique']} unique, {rate:.1f} samples/s   ", ("limits  ", "bold"),
                                    limits_text(summary["limits"], summary["limit_overrides"])))
        if out is not None:
            what = "JSON" + (" + .dot" if dot else "") + (" + .png" if rendered else "")
            console.print(f"wrote {len(rows)} derivations ({what}) and summary.json to [bold]{escape(str(out))}[/]")
    if dot and rows and not shutil.which("dot"):
        first = out / rows[0]["dot"]
        warn("Graphviz 'dot' is not on PATH, so no .png was rendered; install graphviz and run "
             f"`dot -Tpng {first} -o {first.with_suffix('.png')}` "
             f"(or `for f in {out}/*.dot; do dot -Tpng \"$f\" -o \"${{f%.dot}}.png\"; done`)")
    if not rows:
        error(f"no architecture of '{g.name}' could be sampled for input shape {shape_text(summary['input_shape'])} "
              f"(tried {len(failures)} seeds): {failures[0]['error']}")
        raise typer.Exit(EXIT_BAD_INPUT)
    if failures:
        warn(f"{len(failures)} of {n} samples failed; first (seed {failures[0]['seed']}): {failures[0]['error']}")
        raise typer.Exit(EXIT_FAILED)


def _samples_table(g, summary: dict) -> Table:
    table = Table(
        title=f"{summary['sampled']} of {summary['n']} architectures from {g.name} for input "
        f"{shape_text(summary['input_shape'])}",
        title_justify="left",
        header_style="bold",
    )
    for col, kw in (("#", {"justify": "right"}), ("hash", {"style": "cyan", "no_wrap": True}),
                    ("params", {"justify": "right"}), ("FLOPs", {"justify": "right"}),
                    ("depth", {"justify": "right"}), ("nodes", {"justify": "right"}),
                    ("output", {"no_wrap": True}), ("ops", {})):
        table.add_column(col, **kw)
    for r in summary["samples"]:
        table.add_row(str(r["index"]), r["hash"], human(r["params"]), human(r["flops"]), str(r["depth"]),
                      str(r["nodes"]), shape_text(r["output_shape"]), escape(ops_text(r["ops"])))
    return table


# --------------------------------------------------------------------- ops
def ops_command(
    name: Annotated[str | None, typer.Argument(help="Show one op only.", show_default=False)] = None,
    family: Annotated[str | None, typer.Option("--family", "-f", help="Only ops of this family.", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list of op objects.")] = False,
) -> None:
    """List the registered ops: kind, typed arguments, catalog refs, doc."""
    from archgram.ops import all_ops, get_op

    specs = all_ops()
    if family is not None:
        families = sorted({s.family for s in specs})
        if family not in families:
            raise ArchgramError(f"--family {family!r}: no such op family (families: {', '.join(families)})")
        specs = [s for s in specs if s.family == family]
    if name is not None:
        spec = get_op(name)  # raises with a did-you-mean
        specs = [s for s in specs if s.name == spec.name]
        if not specs:
            raise ArchgramError(f"op '{name}' is in family '{spec.family}', not '{family}'")
    if as_json:
        emit_json([op_to_dict(s) for s in specs])
        return
    table = Table(title=f"{len(specs)} ops", title_justify="left", header_style="bold", show_lines=True)
    table.add_column("op", style="bold cyan", no_wrap=True)
    table.add_column("family")
    table.add_column("kind")
    table.add_column("arguments")
    table.add_column("refs", no_wrap=True)
    table.add_column("doc")
    for s in specs:
        args = "\n".join(escape(arg_text(k, a)) for k, a in s.args.items()) or "[dim]-[/]"
        table.add_row(s.name, s.family, s.kind, args, " ".join(s.refs), escape(op_doc(s)))
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("check")(check)
    app.command("sample")(sample)
    app.command("ops")(ops_command)
