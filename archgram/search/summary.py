"""What a study amounts to, for people: the summary a search run ends with and
the report ``archgram show`` prints (both also as JSON).

Everything here reads the study (opened read-only by the caller) and, for the
report, writes plots; nothing changes the study, so both work while a search runs.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from archgram.search import report
from archgram.search.final import stored_final
from archgram.search.reference_arch import REFERENCE_KEY, ratio
from archgram.search.store import StudyStore, TrialRecord, storage_url


def run_summary(study: str, store: StudyStore, records: list[TrialRecord], trials: int, interrupted: bool,
                seconds: float, top: int, stopped_by: str | None = None,
                time_limit: str | None = None) -> dict[str, Any]:
    """A search run's end: whether it stopped short of ``trials``, the status
    counts, the top ``top`` trials, the final pick and the reference ratio.
    ``stopped``: True when interrupted or short of ``trials`` (rerun to resume),
    else ``stopped_by`` when the run ended early by design (its ``time_limit``:
    "time limit 60m reached after 23 of 100 trials"), else False."""
    rows = report.leaderboard_rows(records, top)
    ref = store.meta.get(REFERENCE_KEY)
    stopped = True if interrupted else (stopped_by or len(records) < trials)
    return {
        "study": study, "url": storage_url(study), "trials": trials, "finished": len(records),
        "status": report.status_counts(records), "stopped": stopped, "time_limit": time_limit,
        "seconds": seconds, "leaderboard": rows, "final": stored_final(store), "reference": ref,
        "best_over_reference": ratio(rows[0]["score"] if rows else None, ref),
    }


def common_failure(records: list[TrialRecord]) -> tuple[str, int, str]:
    """The most frequent failure kind among failed trials, how many had it, and one of their messages."""
    reasons = Counter(r.attrs.get("failure") or "error" for r in records if r.state == "FAIL")
    reason, n = reasons.most_common(1)[0] if reasons else ("error", 0)
    message = next((r.attrs.get("message") for r in records if r.state == "FAIL"
                    and (r.attrs.get("failure") or "error") == reason and r.attrs.get("message")), "")
    return reason, n, str(message or "")


def study_report(study: str, top: int, plots: bool, out: Path | None) -> dict[str, Any]:
    """A study's leaderboard, status, Pareto fronts (score vs params and any
    cost objective; per task for a multi-task study), final pick and
    reference, and the plots written to ``out`` (default: beside the study)."""
    store = report.open_study(study)
    records = store.records()
    interrupted, running = report.interrupted_and_running(store)
    rows = report.leaderboard_rows(records, top)
    meta = store.meta
    costs = ["params", *(o for o in store.objectives if o in ("latency", "flops"))]
    tasks = report.study_tasks(store.objectives)  # a multi-task study (S29)
    per_task = report.task_report(records, tasks) if tasks else None
    written = write_plots(records, study, meta, costs, tasks, out) if plots and records else []
    return {
        "study": str(study), "url": store.url, "meta": meta, "objectives": list(store.objectives),
        "finished": len(records), "interrupted": interrupted, "running": running,
        "status": report.status_counts(records), "leaderboard": rows, "final": meta.get("final"),
        "reference": meta.get("reference"),
        "best_over_reference": ratio(rows[0]["score"], meta.get("reference")) if rows else None,
        "pareto": {c: [r.number for r in report.pareto_front(records, c)] for c in costs}, "plots": written,
        **({"per_task": per_task} if per_task else {}),
    }


def write_plots(records: list[TrialRecord], study: str, meta: dict, costs: list[str], tasks: list[str],
                out: Path | None) -> list[str]:
    """Best score so far, score vs each cost, and (two or more tasks) the per-task front."""
    from archgram.errors import ArchgramError

    out_dir = out if out is not None else plots_dir(study)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArchgramError(f"--out {out_dir}: cannot create directory: {exc.strerror}") from None
    name = Path(str(study)).stem if "://" not in str(study) else "study"
    written = [str(report.plot_best_so_far(records, out_dir / "best_so_far.png",
                                           title=f"{name}: best score so far ({meta.get('task', '?')})"))]
    for c in costs:
        written.append(str(report.plot_pareto(records, out_dir / f"pareto_{c}.png", cost=c,
                                              title=f"{name}: score vs {c} (Pareto front)")))
    if len(tasks) >= 2:
        written.append(str(report.plot_task_pareto(records, out_dir / "pareto_tasks.png", tasks,
                                                   title=f"{name}: per-task scores (Pareto front)")))
    return written


def plots_dir(study: str) -> Path:
    """``runs/x.db`` -> ``runs/x_plots``; a non-SQLite URL -> ``study_plots``."""
    if "://" in study:
        if study.startswith("sqlite:///"):
            p = Path(study[len("sqlite:///"):])
            return p.with_name(f"{p.stem}_plots")
        return Path("study_plots")
    p = Path(study)
    return p.with_name(f"{p.stem}_plots")
