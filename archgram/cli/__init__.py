"""The ``archgram`` command line: check a grammar, sample architectures, list ops.

Every failure a user can cause ends in one ``error: ...`` line on stderr and exit
code 2; only ``--debug`` shows a traceback. Exit codes:

  0  everything checked out
  1  the grammar loads but something it produced failed (lint error, a sample
     that would not sample, compile or run)
  2  bad input: arguments, a malformed grammar file, an input shape the grammar
     cannot accept
  3  internal error (a bug in archgram; rerun with --debug)
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

import archgram
from archgram.cli.util import (
    arg_text,
    human,
    jsonable,
    limits_dict,
    op_counts,
    op_doc,
    op_to_dict,
    ops_text,
    parse_limits,
    rules_summary,
    shape_text,
    short_loc,
)
from archgram.errors import ArchgramError, GrammarError
from archgram.shapes import parse_shape

try:  # typer >= 0.22 vendors click; its exceptions are not click's
    from typer._click import exceptions as _cx
except ImportError:  # pragma: no cover
    import click.exceptions as _cx  # type: ignore[no-redef]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3
PROGRESS_FROM = 20  # show a progress bar from this many samples on (on a terminal)
SHOW_FAILURES = 5
#: Stop after this many sampling failures in a row when none has succeeded yet:
#: the grammar almost surely cannot take the input shape, so say so quickly.
GIVE_UP_AFTER = 5



def _width(stream) -> int | None:
    # Piped output (files, CI logs) gets 120 columns instead of rich's 80.
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return None if tty or os.environ.get("COLUMNS") else 120


console = Console(width=_width(sys.stdout))
err = Console(stderr=True, width=_width(sys.stderr))
_state: dict[str, Any] = {"debug": False}

app = typer.Typer(
    name="archgram",
    help="Neural architecture search over probabilistic grammars.\n\n"
    "GRAMMAR arguments take a .pcfg file or the name of a shipped grammar (e.g. einspace).",
    epilog="Exit codes: 0 ok, 1 failures found, 2 bad input, 3 internal error.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


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


def _version(value: bool) -> None:
    if value:
        import platform

        import torch

        typer.echo(f"archgram {archgram.__version__} (torch {torch.__version__}, python {platform.python_version()})")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", "-V", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of internal errors.")] = False,
) -> None:
    """Neural architecture search over probabilistic grammars."""
    _state["debug"] = _state["debug"] or debug


# ----------------------------------------------------------------- helpers
def _load(grammar: str):
    from archgram.grammar.model import SHIPPED

    p = Path(grammar)
    shipped = [SHIPPED / p.name, SHIPPED / f"{p.name}.pcfg"]
    if p.is_dir():
        raise ArchgramError(f"grammar {grammar!r} is a directory; give a .pcfg file")
    if not p.exists() and not any(s.is_file() for s in shipped):
        names = ", ".join(sorted(s.stem for s in SHIPPED.glob("*.pcfg")))
        raise ArchgramError(f"grammar {grammar!r} not found: no such file, and no shipped grammar of that name (shipped: {names})")
    return archgram.load_grammar(grammar)


def _shape(text: str):
    try:
        return parse_shape(text)
    except ArchgramError as exc:
        raise ArchgramError(f"--input-shape: {exc}") from None


def _limits(grammar, items: list[str] | None):
    overrides = parse_limits(items)
    return grammar.limits.updated(**overrides), overrides


def _progress(total: int, what: str, quiet: bool) -> Progress:
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


def _emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(jsonable(obj), indent=2) + "\n")
    sys.stdout.flush()


def _warn(msg: str) -> None:
    err.print(Text.assemble(("warning: ", "bold yellow"), msg), soft_wrap=True, highlight=False)


def _error(msg: str) -> None:
    err.print(Text.assemble(("error: ", "bold red"), msg), soft_wrap=True, highlight=False)


def _limits_text(limits, overrides: dict) -> Text:
    text = Text()
    for i, (k, v) in enumerate(limits_dict(limits).items()):
        if i:
            text.append("  ")
        text.append(f"{k} ", style="dim")
        text.append(human(v) if k in ("params", "flops", "memory") else str(v), style="bold" if k in overrides else "")
        if k in overrides:
            text.append(" (--limit)", style="cyan")
    return text


# ------------------------------------------------------------------- check
@app.command()
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
    import torch

    shape = _shape(input_shape)
    g = _load(grammar)
    limits, overrides = _limits(g, limit)
    dev = _device(device)
    report = g.lint()
    rules = rules_summary(g)

    counts = {"sampled": 0, "compiled": 0, "ran": 0}
    stats = {"rejections": 0, "restarts": 0, "steps": 0}
    seconds = {"sample": 0.0, "compile": 0.0, "run": 0.0}
    failures: list[dict[str, Any]] = []
    nonfinite = 0
    hashes: set[str] = set()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dev)
    stopped = None

    with _progress(n, "checking", as_json) as progress:
        task = progress.add_task("check", total=n)
        for i in range(n):
            s = seed + i
            stage = "sample"
            try:
                t0 = time.perf_counter()
                try:
                    d = g.sample(shape, seed=s, limits=limits)
                finally:
                    seconds["sample"] += time.perf_counter() - t0
                counts["sampled"] += 1
                hashes.add(d.hash())
                for k in stats:
                    stats[k] += int(d.stats.get(k, 0))
                stage = "compile"
                t0 = time.perf_counter()
                try:
                    torch.manual_seed(s)
                    model = archgram.compile(d).to(dev).eval()
                finally:
                    seconds["compile"] += time.perf_counter() - t0
                counts["compiled"] += 1
                stage = "run"
                t0 = time.perf_counter()
                try:
                    with torch.no_grad():
                        y = model(x)
                    if dev.type == "cuda":
                        torch.cuda.synchronize()
                finally:
                    seconds["run"] += time.perf_counter() - t0
                if tuple(y.shape) != tuple(d.output_shape):
                    raise ArchgramError(f"output shape {shape_text(y.shape)} differs from the inferred {shape_text(d.output_shape)}")
                nonfinite += int(not bool(torch.isfinite(y).all()))
                counts["ran"] += 1
                del model, y
            except Exception as exc:  # a failed sample is a result, not a crash
                msg = str(exc) if isinstance(exc, ArchgramError) else f"{type(exc).__name__}: {exc}"
                failures.append({"index": i, "seed": s, "stage": stage, "error": msg})
            progress.advance(task)
            if counts["sampled"] == 0 and len(failures) >= GIVE_UP_AFTER:
                stopped = i + 1
                break

    def share(k: str) -> float:
        return counts[k] / n if n else 1.0

    tried = stats["rejections"] + stats["steps"]
    result = {
        "grammar": {
            "name": g.name, "path": g.root_file, "files": g.files, "sha256": g.sha256, "start": g.start,
            "rules": len(g.rules), "productions": report.productions, "warnings": list(g.warnings),
        },
        "input_shape": list(shape),
        "rules": rules,
        "lint": report.to_dict(),
        "limits": limits_dict(limits),
        "limit_overrides": overrides,
        "samples": {
            "n": n,
            "seed": seed,
            "device": str(dev),
            **counts,
            "unique": len(hashes),
            "share": {"sample": share("sampled"), "compile": share("compiled"), "run": share("ran")},
            "rejections": stats["rejections"],
            "restarts": stats["restarts"],
            "steps": stats["steps"],
            "rejection_rate": stats["rejections"] / tried if tried else 0.0,
            "rejections_per_sample": stats["rejections"] / counts["sampled"] if counts["sampled"] else None,
            "samples_per_s": counts["sampled"] / seconds["sample"] if seconds["sample"] > 0 else None,
            "seconds": seconds,
            "nonfinite_outputs": nonfinite,
            "stopped_after": stopped,
        },
        "share": share("ran"),
        "failures": failures,
    }
    no_sample = n > 0 and counts["sampled"] == 0
    if no_sample:
        code = EXIT_BAD_INPUT
    elif not report.ok or failures:
        code = EXIT_FAILED
    else:
        code = EXIT_OK
    result["ok"] = code == EXIT_OK
    result["exit_code"] = code
    if as_json:
        _emit_json(result)
    else:
        _print_check(g, result, report, limits, overrides)
    if no_sample:
        first = failures[0]["error"] if failures else ""
        tried_n = f"the first {stopped} seeds" if stopped else f"{n} seeds"
        _error(f"no architecture of '{g.name}' could be sampled for input shape {shape_text(shape)} "
               f"(tried {tried_n}): {first}")
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


def _print_check(g, result: dict, report, limits, overrides: dict) -> None:
    gi, smp = result["grammar"], result["samples"]
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
    table = Table(title="rules", title_justify="left", show_lines=False, header_style="bold")
    table.add_column("rule")
    table.add_column("kind", style="dim")
    table.add_column("#", justify="right")
    table.add_column("probabilities")
    table.add_column("normalisation", style="dim")
    table.add_column("location", style="dim", no_wrap=True)
    for r in result["rules"]:
        probs = [p["prob"] for p in r["productions"]]
        text = " ".join(f"{p:.3g}" for p in probs[:8]) + (f" … (+{len(probs) - 8})" if len(probs) > 8 else "")
        name = f"[bold]{escape(r['name'])}[/]" + (" [green](start)[/]" if r["start"] else "")
        table.add_row(name, r["kind"], str(len(probs)), text, escape(r["normalisation"]),
                      short_loc(g.rules[r["name"]].loc))
    console.print(table)

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
    console.print(Text.assemble(("limits  ", "bold"), _limits_text(limits, overrides)), soft_wrap=True)

    n = smp["n"]
    if n:
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
    failures = result["failures"]
    if failures:
        console.print(f"[bold red]failures[/] ({len(failures)}; first {min(len(failures), SHOW_FAILURES)}):")
        for f in failures[:SHOW_FAILURES]:
            console.print(Text.assemble("  ", (f"#{f['index']} seed {f['seed']} {f['stage']}: ", "red"), f["error"]),
                          soft_wrap=True)
    if result["ok"]:
        console.print("[bold green]ok[/]")
    else:
        why = []
        if not report.ok:
            why.append(f"{len(lint['errors'])} lint error(s)")
        if failures:
            why.append(f"{len(failures)} failed sample(s)")
        console.print(f"[bold red]FAILED[/]: {', '.join(why)}")


# ------------------------------------------------------------------ sample
_SAMPLE_FILE = re.compile(r"\d+_[0-9a-f]{16}\.(json|dot|png)")


@app.command()
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
    shape = _shape(input_shape)
    if dot and out is None:
        raise ArchgramError("--dot writes files: give --out DIR as well")
    g = _load(grammar)
    limits, overrides = _limits(g, limit)
    if out is not None:
        _prepare_out(out, overwrite)
    width = max(3, len(str(n - 1)))
    dot_bin = shutil.which("dot") if dot else None
    rows: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    t_start = time.perf_counter()

    with _progress(n, "sampling", as_json) as progress:
        task = progress.add_task("sample", total=n)
        for i in range(n):
            s = seed + i
            try:
                d = g.sample(shape, seed=s, limits=limits)
            except ArchgramError as exc:
                failures.append({"index": i, "seed": s, "error": str(exc)})
                progress.advance(task)
                if not rows and len(failures) >= GIVE_UP_AFTER:
                    break
                continue
            h = d.hash()
            row = {
                "index": i,
                "seed": s,
                "hash": h,
                "params": d.stats.get("params"),
                "flops": d.stats.get("flops"),
                "memory": d.stats.get("memory"),
                "depth": d.depth(),
                "nodes": d.size(),
                "output_shape": list(d.output_shape),
                "ops": op_counts(d),
                "rejections": d.stats.get("rejections"),
                "restarts": d.stats.get("restarts"),
            }
            if out is not None:
                stem = f"{i:0{width}d}_{h}"
                (out / f"{stem}.json").write_text(d.to_json() + "\n")
                row["file"] = f"{stem}.json"
                if dot:
                    from archgram.grammar.graph import to_dot

                    dot_path = out / f"{stem}.dot"
                    dot_path.write_text(to_dot(d, title=f"{g.name} #{i} {h}"))
                    row["dot"] = dot_path.name
                    if dot_bin:
                        png = _render(dot_bin, dot_path)
                        if png:
                            row["png"] = png.name
            if show and not as_json:
                console.print(Text(f"#{i} seed {s} {h}  {shape_text(shape)} -> {shape_text(d.output_shape)}",
                                   style="bold"))
                console.print(Text(d.pretty()), soft_wrap=True, highlight=False)
                console.print()
            rows.append(row)
            progress.advance(task)
    elapsed = time.perf_counter() - t_start

    summary = {
        "grammar": {"name": g.name, "path": g.root_file, "sha256": g.sha256},
        "input_shape": list(shape),
        "n": n,
        "seed": seed,
        "limits": limits_dict(limits),
        "limit_overrides": overrides,
        "sampled": len(rows),
        "unique": len({r["hash"] for r in rows}),
        "seconds": elapsed,
        "samples": rows,
        "failures": failures,
    }
    if out is not None:
        (out / "summary.json").write_text(json.dumps(jsonable(summary), indent=2) + "\n")
    if as_json:
        _emit_json(summary)
    elif rows:
        _print_samples(g, summary, limits, overrides)
        if out is not None:
            what = "JSON" + (" + .dot" if dot else "") + (" + .png" if dot_bin else "")
            console.print(f"wrote {len(rows)} derivations ({what}) and summary.json to [bold]{escape(str(out))}[/]")
    if dot and not dot_bin and rows:
        _warn("Graphviz 'dot' is not on PATH, so no .png was rendered; install graphviz and run "
              f"`dot -Tpng {out / (rows[0]['dot'])} -o {out / rows[0]['dot'].replace('.dot', '.png')}` "
              f"(or `for f in {out}/*.dot; do dot -Tpng \"$f\" -o \"${{f%.dot}}.png\"; done`)")
    if not rows:
        _error(f"no architecture of '{g.name}' could be sampled for input shape {shape_text(shape)} "
               f"(tried {len(failures)} seeds): {failures[0]['error']}")
        raise typer.Exit(EXIT_BAD_INPUT)
    if failures:
        _warn(f"{len(failures)} of {n} samples failed; first (seed {failures[0]['seed']}): {failures[0]['error']}")
        raise typer.Exit(EXIT_FAILED)


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ArchgramError(f"--out {out}: exists and is not a directory")
    if (out / "summary.json").exists():
        if not overwrite:
            raise ArchgramError(f"--out {out}: already holds a sample run (summary.json); pass --overwrite or pick another directory")
        for f in out.iterdir():  # only files this command writes
            if f.is_file() and (_SAMPLE_FILE.fullmatch(f.name) or f.name == "summary.json"):
                f.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArchgramError(f"--out {out}: cannot create directory: {exc.strerror}") from None


def _render(dot_bin: str, dot_path: Path) -> Path | None:
    png = dot_path.with_suffix(".png")
    try:
        proc = subprocess.run([dot_bin, "-Tpng", str(dot_path), "-o", str(png)], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        _warn(f"rendering {dot_path.name} failed: {exc}")
        return None
    if proc.returncode != 0:
        _warn(f"rendering {dot_path.name} failed: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
        return None
    return png


def _print_samples(g, summary: dict, limits, overrides: dict) -> None:
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
    console.print(table)
    rate = summary["sampled"] / summary["seconds"] if summary["seconds"] > 0 else math.nan
    console.print(Text.assemble(f"{summary['unique']} unique, {rate:.1f} samples/s   ", ("limits  ", "bold"),
                                _limits_text(limits, overrides)))


# --------------------------------------------------------------------- ops
@app.command("ops")
def ops_cmd(
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
        _emit_json([op_to_dict(s) for s in specs])
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


# ------------------------------------------------------- search and show
def _register_search() -> None:
    from archgram.cli.analyze import register as register_analyze
    from archgram.cli.bench import register as register_bench
    from archgram.cli.catalog import register as register_catalog
    from archgram.cli.experts import register as register_experts
    from archgram.cli.export import register as register_export
    from archgram.cli.fuse import register as register_fuse
    from archgram.cli.search import register

    register(app)
    register_catalog(app)
    register_export(app)
    register_bench(app)
    register_fuse(app)
    register_analyze(app)
    register_experts(app)


_register_search()


# ------------------------------------------------------------------- entry
def run(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default: sys.argv[1:]) and return the exit code.
    This is where every exception becomes one line, never a traceback."""
    args = list(sys.argv[1:] if argv is None else argv)
    _state["debug"] = "--debug" in args[: args.index("--") if "--" in args else len(args)] or bool(
        os.environ.get("ARCHGRAM_DEBUG")
    )
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=args, prog_name="archgram", standalone_mode=False)
        return rv if isinstance(rv, int) else EXIT_OK
    except _cx.NoArgsIsHelpError as exc:  # typer has printed the help already
        if exc.format_message().strip():
            typer.echo(exc.format_message())
        return EXIT_OK
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        _error("interrupted")
        return 130
    except _cx.UsageError as exc:
        path = exc.ctx.command_path if exc.ctx is not None else "archgram"
        _error(f"{exc.format_message()} (see '{path} --help')")
        return EXIT_BAD_INPUT
    except _cx.ClickException as exc:
        _error(exc.format_message())
        return exc.exit_code
    except GrammarError as exc:
        # Already 'file:line:col: error: message' plus an excerpt.
        err.print(Text(str(exc)), soft_wrap=True, highlight=False)
        return EXIT_BAD_INPUT
    except ArchgramError as exc:
        _error(str(exc))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except Exception as exc:
        if _state["debug"]:
            traceback.print_exc()
        err.print(
            Text.assemble(("internal error: ", "bold red"), f"{type(exc).__name__}: {exc}",
                          "" if _state["debug"] else " (rerun with --debug for the traceback)"),
            soft_wrap=True,
            highlight=False,
        )
        return EXIT_INTERNAL


def main() -> None:
    """Console-script entry point (``archgram``)."""
    sys.exit(run())


if __name__ == "__main__":
    main()
