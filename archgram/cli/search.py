"""``archgram search`` and ``archgram show``: run a search with a live display, read a study back.

Usage::

    archgram search archgram/grammars/einspace.pcfg --task mnist1d --strategy evolution \\
        --trials 100 --workers 2 --budget 60s --study runs/mnist1d.db
    archgram show runs/mnist1d.db            # leaderboard + runs/mnist1d_plots/*.png
    optuna-dashboard sqlite:///runs/mnist1d.db

``--trials`` is the study's total: stop a search with Ctrl-C (or kill it) and
rerun the same command to resume; finished trials are kept, unfinished ones are
run again. A larger ``--trials`` continues a finished study. ``--address`` joins
a running Ray cluster (``ray start --head``); ``--cpus-per-trial`` and
``--gpus-per-trial`` size each trial. ``--objectives score,params`` (or
``score,latency``) stores several objectives, so optuna-dashboard and ``show``
draw the Pareto front. Evolution can start from known architectures:
``--seed-baselines resnet,vit``. ``--data train.npz`` (or .csv/.parquet with
``--target``, .pt, a folder of images) searches on your own data; ``--task``
also takes ``package.module:Class`` and ``path/to/file.py:Class``.

This module only translates options and shows progress: the checks, defaults
and the search itself are ``archgram.api`` (``prepare``, ``run``).

Every bad input (unknown task, strategy or objective, a bad budget, a study
file that is not an archgram study) is refused before Ray starts, with one
``error:`` line and exit code 2, and never changes the study file.
"""
from __future__ import annotations

import math
import os
import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from archgram.cli import common as ui
from archgram.cli.common import EXIT_FAILED, EXIT_INTERRUPTED
from archgram.cli.util import human
from archgram.errors import ArchgramError

TOP_AFTER_SEARCH = 5


def _clock(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:d}:{s:02d}"


def _score(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and math.isfinite(value) else "-"


# ----------------------------------------------------------------- display
class _Display:
    """Live panel on a terminal, one plain line per finished trial otherwise."""

    def __init__(self, console, live: bool, header: str):
        self.console = console
        self.live = live
        self.header = header
        self.progress = None
        self.wall = time.monotonic()
        self.printed_done: int | None = None

    def update(self, progress) -> None:
        self.progress = progress
        if not self.live and progress.done != self.printed_done:
            first = self.printed_done is None
            self.printed_done = progress.done
            self.console.print(self._line(progress, first), soft_wrap=True, highlight=False, markup=False)

    def _line(self, p, first: bool) -> str:
        if first and p.done >= p.total:
            return (f"{self.header}: the study already holds {p.done} finished trials (--trials {p.total}); "
                    "nothing to run (a larger --trials continues it)")
        if first:
            resumed = f", resuming with {p.done} finished" if p.done else ""
            return f"{self.header}: {p.total} trials{resumed}"
        last = p.last or {}
        what = self._last_text(last)
        best = f"best {_score(p.best)} ({(p.best_hash or '')[:8]})" if p.best is not None else "best -"
        return (f"[{p.done}/{p.total}] {what} | running {p.running} failed {p.failed} | {best} | "
                f"elapsed {_clock(time.monotonic() - self.wall)} ETA {_clock(p.eta_seconds())}")

    @staticmethod
    def _last_text(last: dict) -> str:
        if not last:
            return "-"
        num = f"trial {last['number']} " if "number" in last else ""
        if last.get("status") == "ok":
            return f"{num}ok score {_score(last.get('score'))} params {human(last.get('params'))}"
        if last.get("status") == "pruned":
            return f"{num}pruned (stopped early)"
        msg = (last.get("message") or "").splitlines()[0][:80] if last.get("message") else ""
        return f"{num}failed ({last.get('failure') or 'error'})" + (f": {msg}" if msg else "")

    def render(self):
        p = self.progress
        if p is None:
            return Text(f"{self.header}: starting…")
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        grid.add_row("search", Text(self.header))
        bar = Table.grid(padding=(0, 1))
        bar.add_row(ProgressBar(total=max(p.total, 1), completed=min(p.done, p.total), width=40),
                    Text(f"{p.done}/{p.total} done"))
        grid.add_row("trials", bar)
        grid.add_row("", Text.assemble(("running ", "dim"), str(p.running), ("   failed ", "dim"),
                                       (str(p.failed), "red" if p.failed else ""),
                                       ("   pruned ", "dim"), str(getattr(p, "pruned", 0))))
        best = Text("-") if p.best is None else Text.assemble((_score(p.best), "bold green"),
                                                            ("  " + (p.best_hash or "")[:16], "cyan"))
        grid.add_row("best", best)
        grid.add_row("time", Text.assemble(("elapsed ", "dim"), _clock(time.monotonic() - self.wall),
                                           ("   ETA ", "dim"), _clock(p.eta_seconds())))
        grid.add_row("last", Text(self._last_text(p.last or {}),
                                  style="" if (p.last or {}).get("status", "ok") == "ok" else "yellow"))
        return Group(grid, Text("Ctrl-C stops; rerun the same command to resume.", style="dim"))


#: The display run_search reports to. Ray Tune pickles the searcher, and with it
#: the on_update callback; a module-level function pickles by reference, a bound
#: method of an object holding a Console (locks) would not pickle at all.
_ACTIVE: list[_Display] = []


def _on_update(progress) -> None:
    if _ACTIVE:
        _ACTIVE[-1].update(progress)


# ------------------------------------------------------------------ tables
def leaderboard_table(rows: list[dict], title: str) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold")
    for col, kw in (("#", {"justify": "right"}), ("trial", {"justify": "right"}), ("score", {"justify": "right"}),
                    ("metric", {"style": "dim"}), ("params", {"justify": "right"}), ("FLOPs", {"justify": "right"}),
                    ("latency ms", {"justify": "right"}), ("hash", {"style": "cyan", "no_wrap": True}),
                    ("strategy/origin", {"style": "dim"})):
        table.add_column(col, **kw)
    for r in rows:
        lat = r.get("latency_ms")
        table.add_row(str(r["rank"]), str(r["trial"]), _score(r["score"]), escape(str(r.get("metric") or "-")),
                      human(r.get("params")), human(r.get("flops")),
                      f"{lat:.3g}" if isinstance(lat, (int, float)) else "-", str(r.get("hash") or "-")[:16],
                      escape(f"{r.get('strategy') or '-'}/{r.get('origin') or '-'}"))
    return table


def _counts_text(counts: dict[str, int], interrupted: int = 0, running: int = 0) -> str:
    reasons = ", ".join(f"{k.split(':', 1)[1]} {v}" for k, v in sorted(counts.items()) if k.startswith("failed:"))
    text = f"{counts.get('ok', 0)} ok, {counts.get('failed', 0)} failed" + (f" ({reasons})" if reasons else "")
    if counts.get("pruned"):
        text += f", {counts['pruned']} pruned"
    if interrupted:
        text += f"; {interrupted} interrupted (not counted, rerun)"
    if running:
        text += f"; {running} running now"
    return text


def _dashboard_cmd(url: str) -> str:
    return f"optuna-dashboard {url}"


# ------------------------------------------------------------------ search
def search(
    grammar: Annotated[str, typer.Argument(metavar="[GRAMMAR]", help="Grammar file (.pcfg) or shipped grammar name.")] = "einspace",
    task: Annotated[list[str] | None, typer.Option("--task", "-t", metavar="TASK", show_default=False,
                                                   help="Task to train on: a name (mnist1d, digits, mqar; default "
                                                        "digits), package.module:Class or path/to/file.py:Class. "
                                                        "Repeat names (or give a,b) for one multi-task search (S29).")] = None,
    data: Annotated[str | None, typer.Option("--data", metavar="PATH", show_default=False,
                                             help="Search on your data: .npz (x, y [, x_val, y_val, x_test, y_test]), "
                                                  ".csv/.parquet (with --target), .pt tensors, a folder of images "
                                                  "with one subfolder per class, or a folder of .npy files (x.npy, "
                                                  "y.npy: memory-mapped, for data larger than memory).")] = None,
    target: Annotated[str | None, typer.Option("--target", metavar="COLUMN", show_default=False,
                                               help="--data table: the column to predict.")] = None,
    task_kind: Annotated[str | None, typer.Option("--task-kind", metavar="KIND", show_default=False,
                                                  help="--data: override the inferred kind: image, sequence or "
                                                       "tabular, classification or regression, or both "
                                                       "(image-classification).")] = None,
    val_fraction: Annotated[float | None, typer.Option("--val-fraction", show_default=False,
                                                       help="--data without validation arrays: the share of training "
                                                            "data carved into validation (fixed seed; default 0.1).")] = None,
    strategy: Annotated[str, typer.Option("--strategy", help="random, evolution, pcfg-eda, tpe or nsga2.")] = "evolution",
    trials: Annotated[int, typer.Option("--trials", "-n", help="The study's total trials; a rerun continues to it.")] = 16,
    workers: Annotated[int, typer.Option("--workers", "-w", help="Trials evaluated at once.")] = 2,
    budget: Annotated[str | None, typer.Option("--budget", "-b", show_default=False,
                                               help="Training per trial: 500steps, 60s, 2epochs, or several joined by "
                                                    "commas (default: the task's recipe).")] = None,
    study: Annotated[str | None, typer.Option("--study", metavar="PATH|URL", show_default=False,
                                              help="SQLite study file or RDB URL (default: runs/<task>.db).")] = None,
    seed: Annotated[int, typer.Option("--seed", "-s", help="Strategy seed; trial k trains with seed SEED+k.")] = 0,
    objectives: Annotated[str | None, typer.Option("--objectives", metavar="LIST", show_default=False,
                                                   help="score first, then any of params, latency, flops "
                                                        "(default: score; score,params for nsga2).")] = None,
    address: Annotated[str | None, typer.Option("--address", metavar="HOST:PORT", show_default=False,
                                                help="Join a running Ray cluster instead of starting a local one.")] = None,
    cpus_per_trial: Annotated[float, typer.Option("--cpus-per-trial", help="CPUs each trial reserves.")] = 1.0,
    gpus_per_trial: Annotated[float, typer.Option("--gpus-per-trial", help="GPUs each trial reserves.")] = 0.0,
    batch_size: Annotated[int | None, typer.Option("--batch-size", show_default=False,
                                                   help="Training batch size (default: the task's recipe).")] = None,
    lr: Annotated[float | None, typer.Option("--lr", show_default=False,
                                             help="Learning rate of every trial (default: the task's recipe).")] = None,
    optimizer: Annotated[str | None, typer.Option("--optimizer", show_default=False,
                                                  help="adamw, adam or sgd (default: the task's recipe).")] = None,
    reference: Annotated[bool, typer.Option("--reference/--no-reference",
                                            help="Train the task's reference architecture once (cached in the study), "
                                                 "show best/reference, and seed the search with it where the grammar "
                                                 "can express it.")] = True,
    seed_baselines: Annotated[str | None, typer.Option("--seed-baselines", metavar="LIST", show_default=False,
                                                       help="Seed evolution with baselines, e.g. resnet,vit.")] = None,
    population: Annotated[int | None, typer.Option("--population", show_default=False,
                                                   help="Population size (evolution 20, nsga2 20).")] = None,
    tournament: Annotated[int | None, typer.Option("--tournament", show_default=False,
                                                   help="Tournament size (evolution, default 5).")] = None,
    scheduler: Annotated[str, typer.Option("--scheduler", help="fifo, or asha to stop weak trials early.")] = "fifo",
    rungs: Annotated[int, typer.Option("--rungs", help="Multi-fidelity: successive-halving rungs over the step budget "
                                       "(1 = off); the best 1/ETA of each rung train again for ETA x the steps.")] = 1,
    eta: Annotated[int, typer.Option("--eta", help="Multi-fidelity reduction factor between rungs.")] = 3,
    prescreen: Annotated[int, typer.Option("--prescreen", metavar="K", help="Draw K candidates per trial, train only "
                                           "the zero-cost proxy's best (1 = off).")] = 1,
    proxy: Annotated[str, typer.Option("--proxy", help="Proxy of --prescreen: synflow, gradnorm, naswot or params.")] = "synflow",
    inherit: Annotated[bool, typer.Option("--inherit/--no-inherit", help="Weight inheritance: a mutated or crossed-over "
                                          "child starts from its parent's trained weights for the subtrees it "
                                          "shares with it (on by default: it measured best; see "
                                          "experiments/search_quality).")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="No live display; print one JSON summary at the end.")] = False,
    export_best: Annotated[bool, typer.Option("--export/--no-export", help="Export the best trial when the search "
                                              "finishes (to <study>-best/; see `archgram export`).")] = True,
    train_option: Annotated[list[str] | None, typer.Option("--train-option", metavar="OPT", show_default=False,
                                                           help="Training: at or vat (adversarial training on the "
                                                                "embedding), attention_at or attention_vat (on the "
                                                                "attention logits, S74/S75), or KEY=VALUE such as adv_eps=0.05, "
                                                                "adv_weight=1, schedule=constant; repeatable.")] = None,
) -> None:
    """Search GRAMMAR for architectures on a task; resumable, results in an Optuna study.

    Exit code 0 when the study reached --trials with at least one successful
    trial, 1 when every trial failed, 2 on bad input, 130 when interrupted.
    """
    from archgram import api
    from archgram.search.store import storage_url
    from archgram.search.training import parse_cli

    # every check and default lives in the API: this only translates options
    request = api.prepare(
        grammar, task=task, data=data, target=target, task_kind=task_kind, strategy=strategy, trials=trials,
        budget=budget, workers=workers, study=study, seed=seed, batch_size=batch_size, lr=lr, optimizer=optimizer,
        objectives=objectives, address=address, cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
        population=population, tournament=tournament, seed_baselines=seed_baselines, scheduler=scheduler,
        train_options=parse_cli(train_option), task_options=None,
        data_options={"val_fraction": val_fraction} if val_fraction is not None else None, warn=ui.warn,
        reference=reference, rungs=rungs, eta=eta, prescreen=prescreen, proxy=proxy, inherit=inherit,
    )
    config = request.config
    study_text, budget_text, url = config.study, config.budget, storage_url(config.study)
    header = f"{request.grammar_name} on {request.label} | {strategy} | budget {budget_text} | {workers} worker{'s' * (workers != 1)} | {study_text}"
    console = ui.err if as_json else ui.console
    display = _Display(console, live=console.is_terminal and not as_json, header=header)
    interrupted = False
    started = time.monotonic()
    _ACTIVE.append(display)
    try:
        if display.live:
            from rich.live import Live

            with Live(get_renderable=display.render, console=console, refresh_per_second=2, transient=False):
                api.run(request, _on_update)
        else:
            api.run(request, _on_update)
    except KeyboardInterrupt:
        interrupted = True
    except ArchgramError as exc:
        if address and str(exc).startswith("cannot join") and "RAY_AUTH_MODE" not in os.environ:
            # Ray 2.5x clusters use token auth by default; an explicit address never sends a token unasked
            raise ArchgramError(f"{str(exc).splitlines()[0]} (if the cluster uses token authentication, export "
                                "RAY_AUTH_MODE=token and its token as RAY_AUTH_TOKEN or in ~/.ray/auth_token)") from None
        raise
    finally:
        _ACTIVE.remove(display)
    from archgram.search.report import interrupted_and_running, leaderboard_rows, open_study, status_counts

    store = open_study(study_text)
    records = store.records()
    counts = status_counts(records)
    lost, _ = interrupted_and_running(store)
    stopped = interrupted or len(records) < trials
    rows = leaderboard_rows(records, TOP_AFTER_SEARCH)
    show_cmd = f"archgram show {study_text}"
    from archgram.search.final import stored_final
    from archgram.search.reference_arch import REFERENCE_KEY, ratio

    final = stored_final(store)
    ref = store.meta.get(REFERENCE_KEY)
    best = rows[0]["score"] if rows else None
    summary = {
        "study": study_text, "url": url, "trials": trials, "finished": len(records), "status": counts,
        "stopped": stopped, "seconds": time.monotonic() - started, "leaderboard": rows,
        "final": final, "reference": ref, "best_over_reference": ratio(best, ref),
        "show": show_cmd, "dashboard": _dashboard_cmd(url),
    }
    exported = _export_best(study_text, ui.err if as_json else ui.console) if export_best and rows and not stopped else None
    if exported is not None:
        summary["export"] = exported.to_dict()
    if as_json:
        ui.emit_json(summary)
    if stopped:
        rerun = "rerun the same command to resume"
        ui.err.print(Text.assemble(("stopped: ", "bold yellow"),
                                   f"{len(records)} of {trials} trials are stored in {study_text} "
                                   f"({_counts_text(counts)}); {rerun}; unfinished trials run again."),
                     soft_wrap=True, highlight=False)
        raise typer.Exit(EXIT_INTERRUPTED)
    if not as_json:
        if rows:
            ui.console.print(leaderboard_table(rows, f"top {len(rows)} of {len(records)} trials ({_counts_text(counts)})"))
        if ref:
            ui.console.print(_reference_text(ref, best), soft_wrap=True, highlight=False)
        if final:
            ui.console.print(_final_text(final), soft_wrap=True, highlight=False)
        if exported is not None:
            from archgram.cli.export import print_result

            print_result(ui.console, exported)
        ui.console.print(Text.assemble(("next: ", "bold"), show_cmd, "   |   ", _dashboard_cmd(url)),
                         soft_wrap=True, highlight=False)
    if not rows:
        reasons = Counter(r.attrs.get("failure") or "error" for r in records if r.state == "FAIL")
        reason, n = reasons.most_common(1)[0] if reasons else ("error", 0)
        message = next((r.attrs.get("message") for r in records if r.state == "FAIL"
                        and (r.attrs.get("failure") or "error") == reason and r.attrs.get("message")), "")
        ui.error(f"every one of the {len(records)} trials failed (most often '{reason}', {n}x"
                  + (f": {str(message).splitlines()[0][:200]}" if message else "") + ")")
        raise typer.Exit(EXIT_FAILED)


def _reference_text(ref: dict, best: float | None) -> Text:
    """One line: the task's reference under the recipe, and the best trial's ratio to it."""
    from archgram.search.reference_arch import ratio

    r = ref.get("recipe", {})
    recipe = (f"{r.get('optimizer')} lr {r.get('lr')}, batch {r.get('batch_size')}, {r.get('budget')}, "
              f"{r.get('schedule')}")
    share = ratio(best, ref)
    tail = f" | best {_score(best)}" + (f" = {share:.3f}x the reference" if share is not None else "")
    return Text.assemble(("reference: ", "bold"), f"{ref.get('grammar')} validation {ref.get('metric', 'score')} "
                         f"{_score(ref.get('validation'))} (recipe {recipe})", tail if best is not None else "")


def _final_text(final: dict) -> Text:
    """One line: the final pick, its validation score and its one test score."""
    return Text.assemble(("final pick: ", "bold"), f"trial {final['trial']} ({str(final.get('hash') or '')[:8]}), "
                         f"validation {final.get('metric', 'score')} {_score(final.get('validation'))}, "
                         f"test {_score(final.get('test'))} (scored once, {final.get('weights')} weights)")


def _ratio(rows: list[dict], meta: dict) -> float | None:
    from archgram.search.reference_arch import ratio

    return ratio(rows[0]["score"], meta.get("reference")) if rows else None


def _export_best(study: str, console):
    """Export the best trial beside the study (``runs/digits.db`` -> ``runs/digits-best/``),
    replacing an earlier export there; a failure is a warning, the search still succeeded."""
    from archgram.export.exporter import default_out, export

    out = default_out(study, None)
    ours = (out / "model.py").is_file() and (out / "derivation.json").is_file()
    console.print(Text(f"exporting the best trial to {out} ...", style="dim"), soft_wrap=True, highlight=False)
    try:
        return export(study, out, force=ours)
    except ArchgramError as exc:
        ui.warn(f"could not export the best trial: {exc} (try `archgram export {study} --out DIR`)")
        return None


# -------------------------------------------------------------------- show
def show(
    study: Annotated[str, typer.Argument(metavar="STUDY", help="Study file (or RDB URL) written by archgram search.",
                                         show_default=False)],
    top: Annotated[int, typer.Option("--top", "-k", min=1, help="Rows of the leaderboard.")] = 10,
    out: Annotated[Path | None, typer.Option("--out", "-o", show_default=False,
                                             help="Directory for the plots (default: <study>_plots beside the study).")] = None,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write the PNG plots.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
) -> None:
    """Print a study's leaderboard and write its plots (best-so-far curve, score-vs-params Pareto front).

    Reads the study without changing it, so it works while a search runs.
    """
    from archgram.search import report

    store = report.open_study(study)
    records = store.records()
    counts = report.status_counts(records)
    interrupted, running = report.interrupted_and_running(store)
    rows = report.leaderboard_rows(records, top)
    meta = store.meta
    costs = [c for c in ("params",) + tuple(o for o in store.objectives if o in ("latency", "flops"))]
    fronts = {c: [r.number for r in report.pareto_front(records, c)] for c in costs}
    tasks = report.study_tasks(store.objectives)  # a multi-task study (S29)
    per_task = report.task_report(records, tasks) if tasks else None
    written: list[str] = []
    if plots and records:
        out_dir = out if out is not None else _plots_dir(study)
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ArchgramError(f"--out {out_dir}: cannot create directory: {exc.strerror}") from None
        name = Path(str(study)).stem if "://" not in str(study) else "study"
        written.append(str(report.plot_best_so_far(records, out_dir / "best_so_far.png",
                                                   title=f"{name}: best score so far ({meta.get('task', '?')})")))
        for c in costs:
            written.append(str(report.plot_pareto(records, out_dir / f"pareto_{c}.png", cost=c,
                                                   title=f"{name}: score vs {c} (Pareto front)")))
        if len(tasks) >= 2:
            written.append(str(report.plot_task_pareto(records, out_dir / "pareto_tasks.png", tasks,
                                                       title=f"{name}: per-task scores (Pareto front)")))
    result = {
        "study": str(study), "url": store.url, "meta": meta, "objectives": list(store.objectives),
        "finished": len(records), "interrupted": interrupted, "running": running, "status": counts,
        "leaderboard": rows, "final": meta.get("final"), "reference": meta.get("reference"),
        "best_over_reference": _ratio(rows, meta), "pareto": fronts, "plots": written,
        **({"per_task": per_task} if per_task else {}),
    }
    if as_json:
        ui.emit_json(result)
        return
    about = ", ".join(f"{k} {meta[k]}" for k in ("grammar", "task", "objectives") if k in meta)
    ui.console.print(Text.assemble((f"{study}", "bold"), f"  {about}" if about else "", "\n",
                                   f"{len(records)} finished trials: {_counts_text(counts, interrupted, running)}"),
                     soft_wrap=True, highlight=False)
    if rows:
        ui.console.print(leaderboard_table(rows, f"top {len(rows)} by validation score"))
        if isinstance(meta.get("reference"), dict):
            ui.console.print(_reference_text(meta["reference"], rows[0]["score"]), soft_wrap=True, highlight=False)
        if isinstance(meta.get("final"), dict):
            ui.console.print(_final_text(meta["final"]), soft_wrap=True, highlight=False)
        for c, nums in fronts.items():
            ui.console.print(Text.assemble((f"Pareto front (score vs {c}): ", "bold"),
                                           ", ".join(f"#{n}" for n in nums) or "-"), soft_wrap=True, highlight=False)
        if per_task:
            ui.console.print(_task_table(per_task))
    elif records:
        ui.warn("no trial succeeded yet")
    else:
        ui.warn("the study holds no finished trial yet")
    if written:
        ui.console.print(Text.assemble(("plots: ", "bold"), "  ".join(written)), soft_wrap=True, highlight=False)


def _task_table(per_task: dict) -> Table:
    """The per-task Pareto front of a multi-task study, then each task's best trial."""
    tasks = per_task["tasks"]
    table = Table(title="per-task Pareto front (no trial scores at least as well on every task)", title_justify="left",
                  header_style="bold")
    table.add_column("trial", justify="right")
    for t in tasks:
        table.add_column(escape(t), justify="right")
    for col in ("mean", "params"):
        table.add_column(col, justify="right")
    table.add_column("hash", style="cyan", no_wrap=True)
    for row in per_task["front"]:
        table.add_row(str(row["trial"]), *(_score(row[t]) for t in tasks), _score(row["mean"]), human(row["params"]),
                      str(row.get("hash") or "-")[:16])
    best = per_task["best"]
    table.caption = "best per task: " + ", ".join(
        f"{t} #{best[t]['trial']} {_score(best[t]['score'])}" for t in tasks if t in best)
    return table


def _plots_dir(study: str) -> Path:
    if "://" in study:
        if study.startswith("sqlite:///"):
            p = Path(study[len("sqlite:///"):])
            return p.with_name(f"{p.stem}_plots")
        return Path("study_plots")
    p = Path(study)
    return p.with_name(f"{p.stem}_plots")


def register(app: typer.Typer) -> None:
    """Add ``search`` and ``show`` to the ``archgram`` app."""
    app.command("search")(search)
    app.command("show")(show)
