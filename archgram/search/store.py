"""The study store: every trial of a search in an Optuna RDB study.

A SQLite file by default (any SQLAlchemy URL works), so optuna-dashboard reads
it and a killed search resumes from it. One process, the search driver, writes;
workers only evaluate. Each trial keeps its derivation as JSON (never a pickle),
its metrics, status and failure reason. A trial left RUNNING by a driver that
died is marked FAIL with reason 'interrupted' on the next open, and does not
count towards the study's total, so it is run again, not lost. A trial that a
scheduler (ASHA) stopped early is PRUNED: finished, counted, never re-run, and
without a score (it was stopped before its validation step).

Each ``start`` and ``finish`` writes its attributes in one transaction (a
SQLite commit costs milliseconds; one per attribute made storage the largest
part of the driver's per-trial overhead).
"""
from __future__ import annotations

import datetime
import json
import logging
import math
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from archgram.errors import ArchgramError
from archgram.grammar.derivation import Derivation
from archgram.registry import Registry
from archgram.search.drivers import alive
from archgram.tasks.data.fingerprint import changes

STUDY_NAME = "archgram"
SQLITE_MAGIC = b"SQLite format 3\x00"
#: objective name -> direction
OBJECTIVES: Registry[str] = Registry("objective", entries={
    "score": "maximize", "params": "minimize", "latency": "minimize", "flops": "minimize"})
INTERRUPTED = "interrupted"
#: a driver sharing the study claimed a trial for an architecture the study
#: already holds, or past the study's total: never run, never counted
DUPLICATE, SURPLUS = "duplicate", "surplus"
NOT_RUN = (INTERRUPTED, DUPLICATE, SURPLUS)
#: ``claim`` outcomes other than a trial
FULL = "full"
#: meta keys a later run must repeat exactly
FIXED_META = ("task", "input_shape", "objectives", "tasks", "train_options", "training")
#: How trials are scored. Version 2: trials score the validation split; test is read
#: once, for the final pick. A study without this attribute but with trials was
#: written by an earlier archgram that scored trials on test.
PROTOCOL = 2
PROTOCOL_KEY = "protocol"


def direction(objective: str) -> str:
    """'maximize' or 'minimize'; ``score:<task>`` is one task's score in a multi-task study."""
    if objective.startswith("score:") and len(objective) > len("score:"):
        return "maximize"
    if objective not in OBJECTIVES:
        raise StudyError(f"{OBJECTIVES.unknown(objective)} (and score:TASK)")
    return OBJECTIVES[objective]


optuna.logging.set_verbosity(logging.WARNING)


class StudyError(ArchgramError):
    """The study file or URL cannot be used (unreadable, foreign, mismatched)."""


def storage_url(study: str | Path) -> str:
    """A path becomes a SQLite URL; URLs pass through. Bad files are refused here,
    before SQLAlchemy could touch (and create tables in) a file that is not ours."""
    text = str(study)
    if "://" in text:
        return text
    path = Path(text).expanduser().resolve()
    if path.exists():
        if path.is_dir():
            raise StudyError(f"study path {path} is a directory; give a file such as runs/study.db")
        with open(path, "rb") as fh:
            head = fh.read(16)
        if head and head != SQLITE_MAGIC:
            raise StudyError(f"{path} is not a SQLite database (a study file written by archgram or optuna)")
        if head:
            _refuse_foreign_sqlite(path)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _refuse_foreign_sqlite(path: Path) -> None:
    """Optuna would add its tables to any SQLite file; refuse one that holds other data."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = {row[0] for row in con.execute("select name from sqlite_master where type='table'")}
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise StudyError(f"{path} is not a readable SQLite database ({exc})") from None
    if tables and "studies" not in tables:
        shown = ", ".join(sorted(tables)[:5])
        raise StudyError(f"{path} is a SQLite database of something else (tables: {shown}), not an optuna study")


@dataclass
class TrialRecord:
    """A finished trial as the store reads it back."""

    number: int
    state: str  # COMPLETE | FAIL | PRUNED
    derivation: Derivation | None
    score: float | None
    attrs: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.state == "COMPLETE"

    @property
    def pruned(self) -> bool:
        return self.state == "PRUNED"

    @property
    def failed(self) -> bool:
        return self.state == "FAIL"


class StudyStore:
    """Open (or create) the archgram study at ``study`` (path or URL)."""

    def __init__(
        self,
        study: str | Path,
        *,
        objectives: tuple[str, ...] = ("score",),
        meta: dict[str, Any] | None = None,
        create: bool = True,
        name: str = STUDY_NAME,
    ):
        for obj in objectives:
            direction(obj)
        self.url = storage_url(study)
        self.objectives = tuple(objectives)
        for attempt in range(CREATE_TRIES):
            try:
                self.storage = optuna.storages.RDBStorage(self.url)
                names = [s.study_name for s in optuna.study.get_all_study_summaries(self.storage)]
                break
            except Exception as exc:  # SQLAlchemy/optuna errors: unreadable or foreign schema
                if attempt + 1 < CREATE_TRIES and _created_meanwhile(exc):
                    time.sleep(0.2 * (attempt + 1))  # another driver is creating the same study: use it
                    continue
                raise StudyError(f"cannot open study {study}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
        if name not in names:
            if not create:
                raise StudyError(f"no archgram study '{name}' in {study} (it holds: {', '.join(names) or 'nothing'})")
            if names:
                raise StudyError(f"{study} holds other studies ({', '.join(names)}), not an archgram study '{name}'")
        directions = [direction(o) for o in self.objectives]
        self.study = optuna.create_study(storage=self.storage, study_name=name, directions=directions, load_if_exists=True)
        stored = [d.name.lower() for d in self.study.directions]
        if stored != directions:
            raise StudyError(f"study {study} optimises {stored}, not {directions} (objectives {self.objectives})")
        self._check_meta(meta or {})
        self.recover_interrupted()

    # ---------------------------------------------------------------- meta
    def _check_meta(self, meta: dict[str, Any]) -> None:
        """The first run records what the study is about; later runs must match."""
        stored = self.study.user_attrs
        if PROTOCOL_KEY in meta and stored.get(PROTOCOL_KEY) != meta[PROTOCOL_KEY] and self.study.get_trials(deepcopy=False):
            raise StudyError(
                f"study {self.url} was written by an earlier archgram (scoring protocol "
                f"{stored.get(PROTOCOL_KEY, 1)}): its trials were scored on the test split, which this version "
                f"reads only once, for the final pick (protocol {meta[PROTOCOL_KEY]}). Its scores cannot be "
                "compared or continued: start a new study with --study NEW.db (`archgram show` still reads the old one)"
            )
        for key, value in meta.items():  # every check before any write
            if key in FIXED_META and key in stored and stored[key] != value:
                raise StudyError(
                    f"this study was run with {key}={stored[key]!r}, not {value!r}; use another --study file"
                )
        if "task_ref" in meta and "task_ref" in stored:
            _check_task_ref(stored["task_ref"], meta["task_ref"])
        for key, value in meta.items():
            if key not in stored:
                self.study.set_user_attr(key, value)

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self.study.user_attrs)

    # -------------------------------------------------------------- trials
    def recover_interrupted(self) -> int:
        """Mark trials left RUNNING by a dead driver as interrupted failures
        (a driver sharing the study that still runs keeps its trials)."""
        count = 0
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
            if _running_elsewhere(trial):
                continue
            self.storage.set_trial_user_attr(trial._trial_id, "failure", INTERRUPTED)
            self.storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            count += 1
        return count

    def start(self, derivation: Derivation, **attrs: Any) -> optuna.trial.Trial:
        """Record a trial as RUNNING before it is evaluated (one transaction)."""
        user_attrs = {"derivation": derivation.to_json(indent=None), "hash": derivation.hash()}
        user_attrs.update({k: v for k, v in attrs.items() if _jsonable(v)})
        now = datetime.datetime.now()
        template = optuna.trial.FrozenTrial(
            number=-1, state=TrialState.RUNNING, value=None, datetime_start=now, datetime_complete=None,
            params={}, distributions={}, user_attrs=user_attrs, system_attrs={}, intermediate_values={},
            trial_id=-1,
        )
        trial_id = self.storage.create_new_trial(self.study._study_id, template_trial=template)
        return optuna.trial.Trial(self.study, trial_id)

    def claim(self, derivation: Derivation, total: int, **attrs: Any) -> optuna.trial.Trial | str:
        """Start a trial for ``derivation`` unless the study already holds that
        architecture on the same rung (``attrs['rung']``, multi-fidelity; DUPLICATE) or its ``total`` (FULL), counting the trials
        that live drivers are running. Safe with several drivers on one study:
        the trial is written first, then everything started before it (by
        trial id) decides; a trial that loses is marked FAIL with reason
        'duplicate' or 'surplus', is never run, and counts for nothing."""
        trial = self.start(derivation, **attrs)
        # a multi-fidelity promotion trains a held architecture again on a higher rung
        mine, digest = trial._trial_id, (derivation.hash(), attrs.get("rung"))
        ahead = 0
        for t in self._light_trials():
            if t.trial_id >= mine or not _counts(t):
                continue
            if (t.user_attrs.get("hash"), t.user_attrs.get("rung")) == digest:
                self._drop(trial, DUPLICATE)
                return DUPLICATE
            ahead += 1
        if ahead >= total:
            self._drop(trial, SURPLUS)
            return FULL
        return trial

    def _drop(self, trial: optuna.trial.Trial, reason: str) -> None:
        self._set_attrs(trial, {"failure": reason})
        self.study.tell(trial, state=TrialState.FAIL)

    def hashes(self) -> set[str]:
        """Architectures the study holds or live drivers are running."""
        return {t.user_attrs["hash"] for t in self._light_trials() if _counts(t) and "hash" in t.user_attrs}

    def _light_trials(self) -> list[_Light]:
        """Every trial's id, state and the attributes that decide whether it counts
        (hash, failure, driver, heartbeat), in one query that skips the
        derivations: claims stay cheap in a study of thousands of trials."""
        try:
            from optuna.storages._rdb import models
            from optuna.storages._rdb.storage import _create_scoped_session

            with _create_scoped_session(self.storage.scoped_session) as session:
                study_id = self.study._study_id
                rows = session.query(models.TrialModel.trial_id, models.TrialModel.state).filter(
                    models.TrialModel.study_id == study_id).all()
                attrs = session.query(models.TrialUserAttributeModel.trial_id, models.TrialUserAttributeModel.key,
                                      models.TrialUserAttributeModel.value_json).join(models.TrialModel).filter(
                    models.TrialModel.study_id == study_id, models.TrialUserAttributeModel.key.in_(_LIGHT_KEYS)).all()
        except (ImportError, AttributeError):  # optuna internals moved: read whole trials
            return [_Light(t._trial_id, t.state, {k: t.user_attrs[k] for k in _LIGHT_KEYS if k in t.user_attrs})
                    for t in self.study.get_trials(deepcopy=False)]
        by_id: dict[int, dict[str, Any]] = {tid: {} for tid, _ in rows}
        for tid, key, value in attrs:
            by_id.setdefault(tid, {})[key] = json.loads(value)
        return sorted((_Light(tid, state, by_id[tid]) for tid, state in rows), key=lambda t: t.trial_id)

    def heartbeat(self, trials: list[optuna.trial.Trial]) -> None:
        """Renew the heartbeat of this driver's running trials (see drivers.py)."""
        now = time.time()
        for trial in trials:
            self.storage.set_trial_user_attr(trial._trial_id, "heartbeat", now)

    def _set_attrs(self, trial: optuna.trial.Trial, attrs: dict[str, Any]) -> None:
        """All user attributes in one transaction where the RDB storage allows it."""
        try:
            from optuna.storages._rdb import models
            from optuna.storages._rdb.storage import _create_scoped_session

            with _create_scoped_session(self.storage.scoped_session, True) as session:
                for key, value in attrs.items():
                    self.storage._set_trial_attr_without_commit(
                        session, models.TrialUserAttributeModel, trial._trial_id, key, value
                    )
        except (ImportError, AttributeError):  # optuna internals moved: one write per attribute
            for key, value in attrs.items():
                trial.set_user_attr(key, value)

    def finish(self, trial: optuna.trial.Trial, result: dict[str, Any]) -> None:
        """Record the outcome; ``result`` is an evaluator result as a dict.
        ``status`` is 'ok', 'failed' or 'pruned' (stopped early by a scheduler)."""
        attrs = {k: v for k, v in result.items() if k != "status" and _jsonable(v)}
        ok = result.get("status") == "ok" and _finite(result.get("score"))
        if ok:
            values = [_objective_value(o, result) for o in self.objectives]
            if not all(_finite(v) for v in values):
                ok = False
                attrs.update(failure="error", message=f"non-finite objective values {values}")
        self._set_attrs(trial, attrs)
        if ok:
            self.study.tell(trial, values)
        elif result.get("status") == "pruned":
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            self.study.tell(trial, state=TrialState.FAIL)

    def records(self) -> list[TrialRecord]:
        """Finished trials (COMPLETE, FAIL and PRUNED; interrupted ones excluded), in
        the order they started."""
        out = []
        states = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
        for t in self.study.get_trials(deepcopy=False, states=states):
            if t.user_attrs.get("failure") in NOT_RUN:
                continue
            try:
                d = Derivation.from_json(t.user_attrs["derivation"]) if "derivation" in t.user_attrs else None
            except ArchgramError:
                d = None
            score = t.values[self.objectives.index("score")] if t.values and "score" in self.objectives else t.user_attrs.get("score")
            out.append(TrialRecord(t.number, t.state.name, d, score if t.state == TrialState.COMPLETE else None, dict(t.user_attrs)))
        return out

    def count_finished(self) -> int:
        return len(self.records())

    def leaderboard(self, k: int = 10) -> list[TrialRecord]:
        ok = [r for r in self.records() if r.ok and r.score is not None]
        return sorted(ok, key=lambda r: r.score, reverse=True)[:k]


_LIGHT_KEYS = ("hash", "failure", "driver", "heartbeat")


@dataclass
class _Light:
    trial_id: int
    state: TrialState
    user_attrs: dict[str, Any]


#: drivers starting together on a new study race to create its tables
CREATE_TRIES = 5


def _created_meanwhile(exc: Exception) -> bool:
    text = str(exc)
    return any(m in text for m in ("UNIQUE constraint failed", "already exists", "database is locked"))


def _running_elsewhere(t) -> bool:
    return t.state == TrialState.RUNNING and alive(t.user_attrs.get("driver"), t.user_attrs.get("heartbeat"))


def _counts(t) -> bool:
    """Does trial ``t`` count towards the study's total (and its architectures)?"""
    if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    if t.state == TrialState.FAIL:
        return t.user_attrs.get("failure") not in NOT_RUN
    return _running_elsewhere(t)


def _check_task_ref(stored: dict[str, Any], now: dict[str, Any]) -> None:
    """A resumed search must use the same task reference, options and data."""
    for key in ("ref", "options"):
        if stored.get(key) != now.get(key):
            raise StudyError(f"this study was run with task {key} {stored.get(key)!r}, not {now.get(key)!r}; "
                             "use another --study file")
    diff = changes({"sha256": stored.get("sha256"), "arrays": stored.get("arrays", {})},
                   {"sha256": now.get("sha256"), "arrays": now.get("arrays", {})})
    if diff:
        raise StudyError(f"the data of {stored.get('ref') or 'the task'} changed since the study began "
                         f"({'; '.join(diff)}); restore it, or use another --study file")


def _objective_value(name: str, result: dict[str, Any]) -> float:
    key = {"latency": "latency_ms"}.get(name, name)
    value = result.get(key)
    return float(value) if value is not None else math.nan


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False
