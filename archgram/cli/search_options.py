"""The options of ``archgram search``, one annotated type each (``options.Trials``),
so the command's signature reads as a list of names; typer reads the help from here."""
from __future__ import annotations

from typing import Annotated

import typer

Grammar = Annotated[str, typer.Argument(metavar="[GRAMMAR]", help="Grammar file (.pcfg) or shipped grammar name.")]
Task = Annotated[list[str] | None, typer.Option("--task", "-t", metavar="TASK", show_default=False,
    help="Task to train on: a name (mnist1d, digits, mqar; default "
         "digits), package.module:Class or path/to/file.py:Class. "
         "Repeat names (or give a,b) for one multi-task search (S29).")]
Data = Annotated[str | None, typer.Option("--data", metavar="PATH", show_default=False,
    help="Search on your data: .npz (x, y [, x_val, y_val, x_test, y_test]), "
         ".csv/.parquet (with --target), .pt tensors, a folder of images "
         "with one subfolder per class, or a folder of .npy files (x.npy, "
         "y.npy: memory-mapped, for data larger than memory).")]
Target = Annotated[str | None, typer.Option("--target", metavar="COLUMN", show_default=False,
    help="--data table: the column to predict.")]
TaskKind = Annotated[str | None, typer.Option("--task-kind", metavar="KIND", show_default=False,
    help="--data: override the inferred kind: image, sequence or "
         "tabular, classification or regression, or both "
         "(image-classification).")]
ValFraction = Annotated[float | None, typer.Option("--val-fraction", show_default=False,
    help="--data without validation arrays: the share of training "
         "data carved into validation (fixed seed; default 0.1).")]
Strategy = Annotated[str, typer.Option("--strategy", help="random, evolution, pcfg-eda, tpe or nsga2.")]
Trials = Annotated[int, typer.Option("--trials", "-n", help="The study's total trials; a rerun continues to it.")]
TimeLimit = Annotated[str | None, typer.Option("--time-limit", metavar="DURATION", show_default=False,
    help="Wall-clock limit of this command, e.g. 90s, 60m, 1.5h, counted from "
         "its start (Ray start-up and the reference's training count). No "
         "trial starts after it; each trial is capped at the time left when "
         "it starts (or its own cap, if smaller): one still training at the "
         "limit fails as a 'timeout', like any trial past its cap. Then the "
         "final pick, test score and export happen as usual. A rerun gets a "
         "fresh limit. Default: none.")]
Workers = Annotated[int, typer.Option("--workers", "-w", help="Trials evaluated at once.")]
Budget = Annotated[str | None, typer.Option("--budget", "-b", show_default=False,
    help="Training per trial: 500steps, 60s, 2epochs, or several joined by "
         "commas (default: the task's recipe).")]
Study = Annotated[str | None, typer.Option("--study", metavar="PATH|URL", show_default=False,
    help="SQLite study file or RDB URL (default: runs/<task>.db).")]
Seed = Annotated[int, typer.Option("--seed", "-s", help="Strategy seed; trial k trains with seed SEED+k.")]
Objectives = Annotated[str | None, typer.Option("--objectives", metavar="LIST", show_default=False,
    help="score first, then any of params, latency, flops "
         "(default: score; score,params for nsga2).")]
Address = Annotated[str | None, typer.Option("--address", metavar="HOST:PORT", show_default=False,
    help="Join a running Ray cluster instead of starting a local one.")]
CpusPerTrial = Annotated[float, typer.Option("--cpus-per-trial", help="CPUs each trial reserves.")]
GpusPerTrial = Annotated[float, typer.Option("--gpus-per-trial", help="GPUs each trial reserves.")]
BatchSize = Annotated[int | None, typer.Option("--batch-size", show_default=False,
    help="Training batch size (default: the task's recipe).")]
Lr = Annotated[float | None, typer.Option("--lr", show_default=False,
    help="Learning rate of every trial (default: the task's recipe).")]
Optimizer = Annotated[str | None, typer.Option("--optimizer", show_default=False,
    help="adamw, adam or sgd (default: the task's recipe).")]
Reference = Annotated[bool, typer.Option("--reference/--no-reference",
    help="Train the task's reference architecture once (cached in the study), "
         "show best/reference, and seed the search with it where the grammar "
         "can express it.")]
SeedBaselines = Annotated[str | None, typer.Option("--seed-baselines", metavar="LIST", show_default=False,
    help="Seed evolution with baselines: resnet, vit, mlp_mixer (images), cnn1d (sequences); e.g. resnet,vit.")]
Population = Annotated[int | None, typer.Option("--population", show_default=False,
    help="Population size (evolution 20, nsga2 20).")]
Tournament = Annotated[int | None, typer.Option("--tournament", show_default=False,
    help="Tournament size (evolution, default 5).")]
Scheduler = Annotated[str, typer.Option("--scheduler", help="fifo, or asha to stop weak trials early.")]
Rungs = Annotated[int, typer.Option("--rungs", help="Multi-fidelity: successive-halving rungs over the step budget "
         "(1 = off); the best 1/ETA of each rung train again for ETA x the steps.")]
Eta = Annotated[int, typer.Option("--eta", help="Multi-fidelity reduction factor between rungs.")]
Prescreen = Annotated[int, typer.Option("--prescreen", metavar="K", help="Draw K candidates per trial, train only "
         "the zero-cost proxy's best (1 = off).")]
Proxy = Annotated[str, typer.Option("--proxy", help="Proxy of --prescreen: synflow, gradnorm, naswot or params.")]
Inherit = Annotated[bool, typer.Option("--inherit/--no-inherit",
    help="Weight inheritance: a mutated or crossed-over "
         "child starts from its parent's trained weights for the subtrees it "
         "shares with it (on by default: it measured best; see "
         "experiments/search_quality).")]
AsJson = Annotated[bool, typer.Option("--json", help="No live display; print one JSON summary at the end.")]
ExportBest = Annotated[bool, typer.Option("--export/--no-export", help="Export the best trial when the search "
         "finishes (to <study>-best/; see `archgram export`).")]
TrainOption = Annotated[list[str] | None, typer.Option("--train-option", metavar="OPT", show_default=False,
    help="Training: at or vat (adversarial training on the "
         "embedding), attention_at or attention_vat (on the "
         "attention logits, S74/S75), or KEY=VALUE such as adv_eps=0.05, "
         "adv_weight=1, schedule=constant; repeatable.")]
