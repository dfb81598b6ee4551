"""``archgram search``: run a search with a live display, then print how it ended (``show`` reads it back).

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
``--time-limit 60m`` ends the command near 60 minutes after it started (no
trial starts after that; running trials are capped at the time left), then
picks, tests and exports the best as usual (``archgram.search.time_limit``).

This module only translates options and prints: the checks, defaults and the
search itself are ``archgram.api`` (``prepare``, ``run``, ``export_best``), what
a finished run amounts to is ``archgram.search.summary``; the live display is
``search_display``, the options ``search_options``.

Every bad input (unknown task, strategy or objective, a bad budget, a study
file that is not an archgram study) is refused before Ray starts, with one
``error:`` line and exit code 2, and never changes the study file.
"""
from __future__ import annotations

import time
from typing import Any

import typer
from rich.text import Text

from archgram.cli import common as ui
from archgram.cli import search_options as options
from archgram.cli.common import EXIT_FAILED, EXIT_INTERRUPTED
from archgram.cli.search_display import SearchDisplay, run_shown
from archgram.cli.study_text import counts_text, final_text, leaderboard_table, reference_text
from archgram.errors import ArchgramError

TOP_AFTER_SEARCH = 5


def search(
    grammar: options.Grammar = "einspace", task: options.Task = None, data: options.Data = None,
    target: options.Target = None, task_kind: options.TaskKind = None, val_fraction: options.ValFraction = None,
    strategy: options.Strategy = "evolution", trials: options.Trials = 16, workers: options.Workers = 2,
    budget: options.Budget = None, study: options.Study = None, seed: options.Seed = 0,
    objectives: options.Objectives = None, address: options.Address = None,
    cpus_per_trial: options.CpusPerTrial = 1.0, gpus_per_trial: options.GpusPerTrial = 0.0,
    batch_size: options.BatchSize = None, lr: options.Lr = None, optimizer: options.Optimizer = None,
    reference: options.Reference = True, seed_baselines: options.SeedBaselines = None,
    population: options.Population = None, tournament: options.Tournament = None,
    scheduler: options.Scheduler = "fifo", rungs: options.Rungs = 1, eta: options.Eta = 3,
    prescreen: options.Prescreen = 1, proxy: options.Proxy = "synflow", inherit: options.Inherit = True,
    as_json: options.AsJson = False, export_best: options.ExportBest = True, train_option: options.TrainOption = None,
    time_limit: options.TimeLimit = None,
) -> None:
    """Search GRAMMAR for architectures on a task; resumable, results in an Optuna study.

    Exit code 0 when the study reached --trials (or --time-limit) with at least
    one successful trial, 1 when every trial failed, 2 on bad input, 130 when
    interrupted.
    """
    command_started = time.monotonic()  # --time-limit counts from here
    from archgram import api
    from archgram.search import report, summary
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
        time_limit=time_limit,
    )
    study_text = request.config.study
    header = (f"{request.grammar_name} on {request.label} | {strategy} | budget {request.config.budget} | "
              f"{workers} worker{'s' * (workers != 1)} | {study_text}"
              + (f" | time limit {request.config.time_limit}" if request.config.time_limit else ""))
    console = ui.err if as_json else ui.console
    display = SearchDisplay(console, live=console.is_terminal and not as_json, header=header)
    started, ran = time.monotonic(), []
    interrupted = run_shown(display, lambda on_update: ran.append(api.run(request, on_update,
                                                                          started=command_started)))
    store = report.open_study(study_text)
    records = store.records()
    result = summary.run_summary(study_text, store, records, trials, interrupted, time.monotonic() - started,
                                 TOP_AFTER_SEARCH, stopped_by=ran[0].stopped if ran else None,
                                 time_limit=request.config.time_limit)
    result.update(show=f"archgram show {study_text}", dashboard=f"optuna-dashboard {result['url']}")
    _finish(result, records, console, as_json, export_best)


def _finish(result: dict[str, Any], records: list, console, as_json: bool, export_best: bool) -> None:
    """Export the best, print (or emit) the end of a search, exit with its code.
    A run the time limit ended is a finished run, not an interrupted one."""
    short = result["stopped"] is True  # interrupted or short of --trials: rerun to resume
    exported = _export_best(result["study"], console) if export_best and result["leaderboard"] and not short \
        else None
    if exported is not None:
        result["export"] = exported.to_dict()
    if as_json:
        ui.emit_json(result)
    if short:
        _print_stopped(result)
        raise typer.Exit(EXIT_INTERRUPTED)
    if not as_json:
        _print_end(result, exported)
    if not result["leaderboard"]:
        _print_all_failed(records, result["stopped"] or None)
        raise typer.Exit(EXIT_FAILED)


def _print_all_failed(records: list, stopped: str | None = None) -> None:
    from archgram.search.summary import common_failure

    if not records:
        ui.error(f"no trial finished ({stopped})" if stopped else "no trial finished")
        return
    reason, n, message = common_failure(records)
    ui.error(f"every one of the {len(records)} trials failed (most often '{reason}', {n}x"
             + (f": {message.splitlines()[0][:200]}" if message else "") + ")")


def _print_stopped(result: dict[str, Any]) -> None:
    ui.err.print(Text.assemble(("stopped: ", "bold yellow"),
                               f"{result['finished']} of {result['trials']} trials are stored in {result['study']} "
                               f"({counts_text(result['status'])}); rerun the same command to resume; "
                               "unfinished trials run again."), soft_wrap=True, highlight=False)


def _print_end(result: dict[str, Any], exported) -> None:
    """The leaderboard, reference and final pick of a finished search, and what to run next."""
    rows = result["leaderboard"]
    if result["stopped"]:  # the time limit ended it: a finished run
        ui.console.print(Text.assemble(("stopped: ", "bold yellow"), f"{result['stopped']}; rerun the same command "
                                       "to continue the study (with a fresh --time-limit)"),
                         soft_wrap=True, highlight=False)
    if rows:
        ui.console.print(leaderboard_table(rows, f"top {len(rows)} of {result['finished']} trials "
                                                 f"({counts_text(result['status'])})"))
    if result["reference"]:
        ui.console.print(reference_text(result["reference"], rows[0]["score"] if rows else None), soft_wrap=True,
                         highlight=False)
    if result["final"]:
        ui.console.print(final_text(result["final"]), soft_wrap=True, highlight=False)
    if exported is not None:
        from archgram.cli.export import print_result

        print_result(ui.console, exported)
    ui.console.print(Text.assemble(("next: ", "bold"), result["show"], "   |   ", result["dashboard"]),
                     soft_wrap=True, highlight=False)


def _export_best(study: str, console):
    """Export the best trial beside the study (``archgram.api.export_best``); a
    failure is a warning, the search still succeeded."""
    from archgram import api

    out = api.best_export_dir(study)
    console.print(Text(f"exporting the best trial to {out} ...", style="dim"), soft_wrap=True, highlight=False)
    try:
        return api.export_best(study)
    except ArchgramError as exc:
        ui.warn(f"could not export the best trial: {exc} (try `archgram export {study} --out DIR`)")
        return None


def register(app: typer.Typer) -> None:
    """Add ``search`` to the ``archgram`` app."""
    app.command("search")(search)
