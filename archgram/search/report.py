"""Read a finished (or running) study back: leaderboard rows, status counts, the
best-so-far curve, the score-vs-cost Pareto front, and their plots.

Pure functions over ``TrialRecord`` lists, so they are tested on hand-made
records; ``open_study`` opens a study file without writing to it (a search may
be running on it), and the ``plot_*`` functions draw with matplotlib's Agg
backend (no display needed).
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from archgram.search.store import INTERRUPTED, STUDY_NAME, StudyError, StudyStore, TrialRecord

#: record attribute that holds each cost objective
COST_KEYS = {"params": "params", "latency": "latency_ms", "flops": "flops"}
COST_LABELS = {"params": "parameters", "latency_ms": "latency (ms)", "flops": "FLOPs"}


# ------------------------------------------------------------------ reading
class _ReadOnlyStore(StudyStore):
    """A StudyStore that never writes: no interrupted-trial recovery (a live search
    owns its RUNNING trials) and no meta check."""

    def recover_interrupted(self) -> int:  # noqa: D401
        return 0

    def _check_meta(self, meta: dict[str, Any]) -> None:
        return None


def open_study(study: str | Path) -> StudyStore:
    """Open an existing archgram study for reading. Raises StudyError (one line)
    for a missing, empty, foreign or corrupt file; never creates or changes one."""
    import optuna

    from archgram.search.store import storage_url

    text = str(study)
    if "://" not in text:
        path = Path(text).expanduser()
        if not path.exists():
            raise StudyError(f"no study file {text} (run `archgram search ... --study {text}` first)")
        if path.is_file() and path.stat().st_size == 0:
            raise StudyError(f"{text} is an empty file, not a study")
    url = storage_url(text)  # refuses directories, non-SQLite and foreign SQLite files
    try:
        storage = optuna.storages.RDBStorage(url, skip_table_creation=True)
        summaries = optuna.study.get_all_study_summaries(storage)
    except Exception as exc:  # SQLAlchemy/optuna errors: corrupt or foreign schema
        raise StudyError(f"cannot read study {text}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    names = [s.study_name for s in summaries]
    if STUDY_NAME not in names:
        raise StudyError(f"{text} holds no archgram study (it holds: {', '.join(names) or 'nothing'})")
    summary = next(s for s in summaries if s.study_name == STUDY_NAME)
    stored = summary.user_attrs.get("objectives")
    directions = summary.directions or [summary.direction]
    if not stored or len(stored) != len(directions):
        stored = ["score"] if len(directions) == 1 else ["score", "params"][: len(directions)]
    return _ReadOnlyStore(text, objectives=tuple(stored), create=False)


def interrupted_and_running(store: StudyStore) -> tuple[int, int]:
    """(trials interrupted by a dead driver, trials running now) — not in records()."""
    from optuna.trial import TrialState

    interrupted = running = 0
    for t in store.study.get_trials(deepcopy=False):
        if t.state in (TrialState.RUNNING, TrialState.WAITING):
            running += 1
        elif t.user_attrs.get("failure") == INTERRUPTED:
            interrupted += 1
    return interrupted, running


# ------------------------------------------------------------------- tables
def ok_records(records: Iterable[TrialRecord]) -> list[TrialRecord]:
    return [r for r in records if r.ok and _finite(r.score)]


def ranked(records: Iterable[TrialRecord]) -> list[TrialRecord]:
    """Successful trials, best score first (ties: fewer params, then earlier trial)."""
    return sorted(ok_records(records), key=lambda r: (-r.score, _num(r.attrs.get("params"), math.inf), r.number))


def status_counts(records: Iterable[TrialRecord]) -> dict[str, int]:
    """``{'ok': 12, 'failed': 3, 'pruned': 0, 'failed:shape': 2, 'failed:timeout': 1}``
    (pruned: stopped early by a scheduler such as ASHA; finished, not failed)."""
    records = list(records)
    counts: Counter[str] = Counter()
    counts["ok"] = sum(r.ok for r in records)
    counts["pruned"] = sum(r.state == "PRUNED" for r in records)
    counts["failed"] = len(records) - counts["ok"] - counts["pruned"]
    for r in records:
        if not r.ok and r.state != "PRUNED":
            counts[f"failed:{r.attrs.get('failure') or 'error'}"] += 1
    return dict(counts)


def leaderboard_rows(records: Iterable[TrialRecord], top: int = 10) -> list[dict[str, Any]]:
    """The best ``top`` trials as plain dicts (the JSON output and the table)."""
    rows = []
    for rank, r in enumerate(ranked(records)[:top], start=1):
        a = r.attrs
        rows.append({
            "rank": rank,
            "trial": r.number,
            "score": r.score,
            "metric": a.get("metric"),
            "params": a.get("params"),
            "flops": a.get("flops"),
            "latency_ms": a.get("latency_ms"),
            "hash": a.get("hash"),
            "strategy": a.get("strategy"),
            "origin": a.get("origin"),
            "train_seconds": a.get("train_seconds"),
        })
    return rows


# ------------------------------------------------------------------- curves
def best_so_far(records: Iterable[TrialRecord]) -> list[tuple[int, float | None]]:
    """(trial number, best score among ok trials up to it) in trial order; None
    until the first success."""
    best: float | None = None
    out = []
    for r in sorted(records, key=lambda r: r.number):
        if r.ok and _finite(r.score) and (best is None or r.score > best):
            best = r.score
        out.append((r.number, best))
    return out


def pareto_front(records: Iterable[TrialRecord], cost: str = "params") -> list[TrialRecord]:
    """Non-dominated ok trials for (max score, min ``cost``), by increasing cost.
    ``cost`` is a record attribute (params, latency_ms, flops) or objective name."""
    key = COST_KEYS.get(cost, cost)
    points = [r for r in ok_records(records) if _finite(r.attrs.get(key))]
    points.sort(key=lambda r: (r.attrs[key], -r.score, r.number))
    front: list[TrialRecord] = []
    for r in points:  # cheapest first: keep each that beats every cheaper score
        if not front or r.score > front[-1].score:
            front.append(r)
    return front


# ------------------------------------------------------------ multi-task
def study_tasks(objectives: Iterable[str]) -> list[str]:
    """The tasks of a multi-task study (S29), from its ``score:<task>`` objectives."""
    return [o.split(":", 1)[1] for o in objectives if o.startswith("score:")]


def _task_scores(r: TrialRecord, tasks: Sequence[str]) -> list[float] | None:
    values = [r.attrs.get(f"score:{t}") for t in tasks]
    return values if all(_finite(v) for v in values) else None


def task_pareto_front(records: Iterable[TrialRecord], tasks: Sequence[str]) -> list[TrialRecord]:
    """Ok trials that no other trial matches or beats on every task's score while beating
    it on one; best mean score first (ties: fewer params, earlier trial)."""
    points = [(r, v) for r in ok_records(records) if (v := _task_scores(r, tasks)) is not None]
    front = [r for r, v in points
             if not any(all(o >= x for o, x in zip(w, v)) and any(o > x for o, x in zip(w, v)) for _, w in points)]
    return sorted(front, key=lambda r: (-r.score, _num(r.attrs.get("params"), math.inf), r.number))


def task_report(records: Iterable[TrialRecord], tasks: Sequence[str]) -> dict[str, Any]:
    """Per-task report: the Pareto front over the task scores (rows) and each task's best trial."""
    records = list(records)
    rows = [{"trial": r.number, "mean": r.score, "params": r.attrs.get("params"), "hash": r.attrs.get("hash"),
             **{t: r.attrs.get(f"score:{t}") for t in tasks}} for r in task_pareto_front(records, tasks)]
    best = {}
    for t in tasks:
        scored = [r for r in ok_records(records) if _finite(r.attrs.get(f"score:{t}"))]
        if scored:
            top = max(scored, key=lambda r: (r.attrs[f"score:{t}"], -r.number))
            best[t] = {"trial": top.number, "score": top.attrs[f"score:{t}"],
                       "params": top.attrs.get(f"params:{t}"), "metric": top.attrs.get(f"metric:{t}")}
    return {"tasks": list(tasks), "front": rows, "best": best}


# -------------------------------------------------------------------- plots
def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_best_so_far(records: Sequence[TrialRecord], path: str | Path, title: str = "") -> Path:
    """Score of every ok trial (points), failed trials (x on the floor) and the
    best-so-far step curve, against trial number."""
    plt = _plt()
    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    ok = ok_records(records)
    failed = [r for r in records if not r.ok and r.state != "PRUNED"]
    if ok:
        ax.scatter([r.number for r in ok], [r.score for r in ok], s=14, color="tab:blue", alpha=0.6, label="trial")
    curve = [(n, b) for n, b in best_so_far(records) if b is not None]
    if curve:
        ax.step([n for n, _ in curve], [b for _, b in curve], where="post", color="tab:red", lw=2, label="best so far")
    if failed:
        floor = min((r.score for r in ok), default=0.0)
        ax.scatter([r.number for r in failed], [floor] * len(failed), marker="x", color="grey", s=18,
                   label=f"failed ({len(failed)})")
    metric = next((r.attrs.get("metric") for r in ok if r.attrs.get("metric")), None)
    ax.set_xlabel("trial")
    ax.set_ylabel(f"score ({metric})" if metric else "score")
    ax.set_title(title or "best score so far")
    ax.grid(alpha=0.3)
    if ok or failed:
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _scatter_front(ax, points, front, x, y, step: bool) -> None:
    """Every trial as a faint point, the front in red and labelled with trial numbers."""
    if points:
        ax.scatter([x(r) for r in points], [y(r) for r in points], s=14, color="tab:blue", alpha=0.5, label="trial")
    if front:
        if step:
            ax.step([x(r) for r in front], [y(r) for r in front], where="post", color="tab:red", lw=1.5)
        ax.scatter([x(r) for r in front], [y(r) for r in front], s=36, color="tab:red", zorder=3,
                   label=f"Pareto front ({len(front)})")
        for r in front:
            ax.annotate(f"#{r.number}", (x(r), y(r)), textcoords="offset points", xytext=(4, -10), fontsize=7)


def _save(fig, ax, path: Path, xlabel: str, ylabel: str, title: str, legend: str | None) -> Path:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(loc=legend, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    _plt().close(fig)
    return path


def plot_pareto(records: Sequence[TrialRecord], path: str | Path, cost: str = "params", title: str = "") -> Path:
    """Score against ``cost`` (log axis) for every ok trial, the Pareto front
    (max score, min cost) highlighted and labelled with trial numbers."""
    plt = _plt()
    key = COST_KEYS.get(cost, cost)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    points = [r for r in ok_records(records) if _finite(r.attrs.get(key))]
    _scatter_front(ax, points, pareto_front(points, key), lambda r: r.attrs[key], lambda r: r.score, step=True)
    if points and min(r.attrs[key] for r in points) > 0:
        ax.set_xscale("log")
    label = COST_LABELS.get(key, key)
    return _save(fig, ax, Path(path), label, "score", title or f"score vs {label}", "lower right" if points else None)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _num(value: Any, default: float) -> float:
    return float(value) if _finite(value) else default


def plot_task_pareto(records: Sequence[TrialRecord], path: str | Path, tasks: Sequence[str], title: str = "") -> Path:
    """First two tasks' scores against each other, the per-task Pareto front highlighted."""
    plt = _plt()
    a, b = tasks[0], tasks[1]
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=120)
    points = [r for r in ok_records(records) if _task_scores(r, tasks) is not None]
    _scatter_front(ax, points, task_pareto_front(points, tasks), lambda r: r.attrs[f"score:{a}"],
                   lambda r: r.attrs[f"score:{b}"], step=False)
    return _save(fig, ax, Path(path), f"score on {a}", f"score on {b}", title or f"{a} vs {b}",
                 "lower left" if points else None)


__all__ = [
    "best_so_far", "interrupted_and_running", "leaderboard_rows", "open_study", "pareto_front", "plot_best_so_far",
    "plot_pareto", "plot_task_pareto", "ranked", "status_counts", "study_tasks", "task_pareto_front", "task_report",
]
