"""Data access: keyword-only functions over a SQLAlchemy session, no HTTP knowledge.

The contract every function keeps (Optuna's storage rules):
* the caller owns the transaction (``Database.session()``); a raised error rolls it back,
  so nothing is ever half-written;
* a trial is handed out by a compare-and-set ``UPDATE ... WHERE state = 'queued'`` after a
  ``SELECT ... FOR UPDATE SKIP LOCKED`` (PostgreSQL) - it cannot be claimed twice, by any
  number of server processes;
* finished trials never change; measurements are idempotent on ``(trial, step)``;
* rows are converted to the library's frozen ``TrialSpec`` / ``TrialResult`` here, before
  they reach a strategy.
"""

from __future__ import annotations

import functools
import math
import threading
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, bindparam, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased, joinedload, selectinload

from mfms_bo.errors import ValidationError
from mfms_bo.space import MixtureSpace
from mfms_bo.study import StudyConfig
from mfms_bo.trials import Measurement as LibMeasurement
from mfms_bo.trials import TrialResult, TrialSpec, objective_of
from server.bulk import MeasurementRecord, TrialRecord
from server.checks import check_online
from server.errors import Conflict, NotFound
from server.models import Measurement, Study, StudyState, Trial, TrialState, Worker

__all__ = [
    "create_study", "get_study", "list_studies", "set_study_state", "study_counts",
    "study_costs", "trials_run", "get_trial", "list_trials", "claim_trial", "touch_worker",
    "idle_workers", "heartbeat", "add_measurement", "complete_trial", "fail_trial",
    "reap_expired", "enqueue_trial", "history_of", "queued_count", "acquire_proposer",
    "release_proposer", "insert_proposals", "final_objective_of", "check_checkpoints",
    "record_proposal", "Lease", "renew_lease", "study_config",
    "insert_measurement", "CLAIMED_COLUMNS", "any_expired", "running_studies",
    "complete_leased",
]

_Q, _R = TrialState.QUEUED.value, TrialState.RUNNING.value
_Retry = aliased(Trial)
# Core statements of the worker protocol's hot paths are built once: SQLAlchemy then finds
# their compiled form without computing a cache key per call, and their SQL never varies,
# so psycopg prepares them on each pooled connection after a few uses.
_TT, _MT, _ST = Trial.__table__, Measurement.__table__, Study.__table__
_WT = Worker.__table__
#: What a claim returns: the columns of a worker's assignment.
CLAIMED_COLUMNS = (_TT.c.id, _TT.c.study_id, _TT.c.mixture, _TT.c.model_size, _TT.c.steps,
                   _TT.c.checkpoints, _TT.c.attempt, _TT.c.spec_metadata,
                   _TT.c.lease_expires_at)
_EXPIRED = select(_TT.c.id).where(_TT.c.state == _R,
                                  _TT.c.lease_expires_at < bindparam("now")).limit(1)
_RUNNING_STUDIES = (select(_ST.c.id, _ST.c.state, _ST.c.updated_at)
                    .where(_ST.c.state == StudyState.RUNNING.value).order_by(_ST.c.id))
_ONE_STUDY = select(_ST.c.id, _ST.c.state, _ST.c.updated_at).where(_ST.c.id == bindparam("sid"))


# -- studies ---------------------------------------------------------------------------------
def create_study(session: Session, *, name: str, config: Mapping[str, Any], seed: int
                 ) -> Study:
    """Insert a validated study: ``config`` is the JSON a ``StudyConfig`` parses from (the
    caller has built its strategy from it)."""
    if session.scalar(select(Study.id).where(Study.name == name)) is not None:
        raise Conflict(f"name: a study named {name!r} already exists")
    study = Study(name=name, config=dict(config), seed=seed, state=StudyState.RUNNING.value)
    session.add(study)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent create with the same name won
        raise Conflict(f"name: a study named {name!r} already exists") from exc
    return study


def get_study(session: Session, study_id: int, *, lock: bool = False) -> Study:
    q = select(Study).where(Study.id == study_id)
    if lock:
        q = q.with_for_update()
    study = session.scalar(q)
    if study is None:
        raise NotFound(f"study {study_id} not found")
    return study


def list_studies(session: Session) -> list[Study]:
    return list(session.scalars(select(Study).order_by(Study.id)))


_TRANSITIONS = {
    "pause": ({StudyState.RUNNING}, StudyState.PAUSED),
    "resume": ({StudyState.PAUSED}, StudyState.RUNNING),
    "stop": ({StudyState.RUNNING, StudyState.PAUSED}, StudyState.STOPPED),
}


def set_study_state(session: Session, *, study_id: int, action: str, now: datetime) -> Study:
    """Pause, resume or stop. Stopping cancels queued trials; running ones may finish (their
    results are still recorded) and their heartbeats answer ``should_stop``."""
    study = get_study(session, study_id, lock=True)
    allowed, new = _TRANSITIONS[action]
    current = StudyState(study.state)
    if current == new:
        return study  # idempotent
    if current not in allowed:
        raise Conflict(f"study {study_id} is {current.value}; cannot {action} it")
    study.state = new.value
    study.pause_reason = None
    study.paused_at = now if new == StudyState.PAUSED else None
    if new == StudyState.STOPPED:
        session.execute(
            update(Trial).where(Trial.study_id == study_id, Trial.state == _Q)
            .values(state=TrialState.CANCELLED.value, finished_at=now)
            .execution_options(synchronize_session=False))
    return study


def budget_room(session: Session, study_id: int, config: StudyConfig, cap: int) -> int:
    """How many more trials the study's budget allows, at most ``cap`` (``cap`` when it is
    unlimited; 0 once ``budget.cost`` is spent)."""
    room = cap
    if config.budget_trials is not None:
        room = min(room, config.budget_trials - trials_run(session, study_id))
    if config.budget_cost is not None:
        if study_costs(session, [study_id])[study_id] >= config.budget_cost:
            room = 0
    return room


def update_study(session: Session, *, study_id: int, changes: Mapping[str, Any]) -> Study:
    """Apply ``PATCH /studies/{id}``: ``budget`` replaces the study's budget
    (``{"trials": n | None, "cost": c | None}``; None lifts that limit) and
    ``pause_after_failures`` its pause threshold. A study completed because its budget was
    spent runs again when the new budget leaves room; a stopped study stays stopped (409)."""
    study = get_study(session, study_id, lock=True)
    if study.state == StudyState.STOPPED.value:
        raise Conflict(f"study {study_id} is stopped; a stopped study cannot be changed "
                       "(create a new one, or import this one's export)")
    config = dict(study.config)
    if "budget" in changes:
        budget = changes["budget"] or {}
        config["budget"] = {k: budget.get(k) for k in ("trials", "cost")}
    if "pause_after_failures" in changes:
        config["pause_after_failures"] = changes["pause_after_failures"]
    study.config = config
    if (study.state == StudyState.COMPLETED.value
            and budget_room(session, study_id, StudyConfig.from_dict(config), 1) > 0):
        study.state = StudyState.RUNNING.value
    return study


def study_counts(session: Session, study_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, int]] = {i: {s.value: 0 for s in TrialState} for i in study_ids}
    rows = session.execute(
        select(Trial.study_id, Trial.state, func.count())
        .where(Trial.study_id.in_(study_ids)).group_by(Trial.study_id, Trial.state))
    for sid, state, n in rows:
        out[sid][state] = int(n)
    return out


def study_costs(session: Session, study_ids: Sequence[int]) -> dict[int, float]:
    """Cost spent by this service's runs (imports excluded): a finished trial's reported cost,
    else the last cost a running or lost trial reported with its measurements."""
    last = (select(Measurement.trial_id, func.max(Measurement.cost).label("c"))
            .group_by(Measurement.trial_id).subquery())
    rows = session.execute(
        select(Trial.study_id, func.sum(func.coalesce(Trial.cost, last.c.c, 0.0)))
        .outerjoin(last, last.c.trial_id == Trial.id)
        .where(Trial.study_id.in_(study_ids), Trial.source != "import")
        .group_by(Trial.study_id))
    out = dict.fromkeys(study_ids, 0.0)
    out.update({sid: float(c or 0.0) for sid, c in rows})
    return out


def _taught_nothing(t: Any = Trial) -> Any:
    """SQL condition on ``t`` (the trials table or an alias of it): the trial ended failed or
    abandoned without a single measurement (a worker that could not start it: wrong data
    folder, bad command, missing domain)."""
    return (t.state.in_((TrialState.FAILED.value, TrialState.ABANDONED.value))
            & ~select(Measurement.id).where(Measurement.trial_id == t.id).exists())


def trials_run(session: Session, study_id: int) -> int:
    """Trials counted against ``budget.trials``: each spec run or queued here once, by the
    last attempt of its retry chain, and not at all when that attempt failed before
    reporting any loss (a broken worker must not spend a study's budget). Imports and
    cancelled trials are not counted."""
    later = select(Trial.id).where(Trial.retry_of == _Retry.id).exists()
    return int(session.scalar(
        select(func.count()).select_from(_Retry).where(
            _Retry.study_id == study_id, _Retry.source != "import",
            _Retry.state != TrialState.CANCELLED.value, ~later, ~_taught_nothing(_Retry)))
        or 0)


def failed_streak(session: Session, study_id: int, limit: int) -> list[Trial]:
    """The study's last ``limit`` finished runs (newest first) when every one of them
    failed before reporting a loss; fewer (an empty list) otherwise."""
    rows = session.execute(
        select(Trial, _taught_nothing().label("empty")).where(
            Trial.study_id == study_id, Trial.source != "import",
            Trial.state.in_((TrialState.COMPLETED.value, TrialState.FAILED.value,
                             TrialState.ABANDONED.value)))
        .order_by(Trial.finished_at.desc(), Trial.id.desc()).limit(limit)).all()
    if len(rows) < limit or not all(empty for _, empty in rows):
        return []
    return [trial for trial, _ in rows]


def pause_after_failures(session: Session, study_id: int, default_limit: int,
                         now: datetime) -> str | None:
    """Pause a running study whose last ``limit`` runs all failed before reporting a loss,
    and say why on the study; the reason, or None when nothing changed. ``limit`` is the
    study's own ``pause_after_failures`` when it set one, else ``default_limit`` (the
    server's); 0 never pauses. Its queued trials stay queued for after the fix."""
    study = get_study(session, study_id, lock=True)
    limit = pause_limit(study.config, default_limit)
    if limit <= 0 or study.state != StudyState.RUNNING.value:
        return None
    streak = failed_streak(session, study_id, limit)
    if not streak:
        return None
    last = (streak[0].fail_reason or "no reason given").strip()
    if len(last) > 500:
        last = last[:500] + "..."
    study.state = StudyState.PAUSED.value
    study.pause_reason = (
        f"paused automatically: the last {limit} trials failed before reporting any loss "
        f"(latest: trial {streak[0].id} on worker {streak[0].worker_id!r}: {last}). Fix "
        "the worker, then resume the study; those trials did not count against "
        "budget.trials")
    study.paused_at = now
    return study.pause_reason


def pause_limit(config: Mapping[str, Any], default_limit: int) -> int:
    """The study's pause threshold: its own when its config sets one, else the server's."""
    own = config.get("pause_after_failures")
    return default_limit if own is None else int(own)


def queued_count(session: Session, study_id: int) -> int:
    return int(session.scalar(select(func.count()).select_from(Trial).where(
        Trial.study_id == study_id, Trial.state == _Q)) or 0)


# -- trials ----------------------------------------------------------------------------------
def get_trial(session: Session, trial_id: int, *, lock: bool = False,
              with_study: bool = False) -> Trial:
    """The trial (404 if unknown); ``lock`` row-locks it, ``with_study`` loads its study in
    the same query (the write routes need the study's config)."""
    q = select(Trial).where(Trial.id == trial_id)
    if with_study:
        q = q.options(joinedload(Trial.study, innerjoin=True))
    if lock:
        q = q.with_for_update(of=Trial)
    trial = session.scalar(q)
    if trial is None:
        raise NotFound(f"trial {trial_id} not found")
    return trial


def list_trials(session: Session, study_id: int, state: str | None = None, *,
                after: int | None = None, limit: int | None = None) -> list[Trial]:
    """A study's trials in id order; ``after`` (a trial id, exclusive) and ``limit`` page
    through a large study by keyset, which stays fast at any depth, unlike an offset."""
    q = (select(Trial).where(Trial.study_id == study_id).order_by(Trial.id)
         .options(selectinload(Trial.measurements)))
    if state is not None:
        q = q.where(Trial.state == state)
    if after is not None:
        q = q.where(Trial.id > after)
    if limit is not None:
        q = q.limit(limit)
    return list(session.scalars(q))


def claim_trial(session: Session | Connection, *, worker_id: str, study_id: int | None,
                max_model_size: float | None, lease_seconds: float, now: datetime,
                study_ids: Collection[int] | None = None) -> Row | None:
    """Atomically hand the next queued trial of a running study to ``worker_id``; the
    claimed row has the columns a worker's assignment needs (:data:`CLAIMED_COLUMNS`).

    User-enqueued trials and retries come first (``priority``), then oldest first.
    ``study_ids`` restricts the claim to those studies (the ones the worker can run).
    One statement claims: ``UPDATE .. WHERE id = (SELECT .. FOR UPDATE SKIP LOCKED) AND
    state = 'queued' RETURNING ..``, the compare-and-set on the state row-locked by the
    sub-select, so no two transactions (of any server process) claim the same trial.
    """
    claim, probe = _claim_statements(study_id is not None, max_model_size is not None,
                                     study_ids is not None)
    params: dict[str, Any] = {"wid": worker_id, "now": now,
                              "until": now + timedelta(seconds=lease_seconds)}
    if study_id is not None:
        params["sid"] = study_id
    if max_model_size is not None:
        params["max_size"] = max_model_size * (1 + 1e-9)
    if study_ids is not None:
        if not study_ids:
            return None
        params["sids"] = sorted(study_ids)
    for _ in range(8):
        row = session.execute(claim, params).first()
        if row is not None:
            return row
        if session.execute(probe, params).first() is None:
            return None  # nothing claimable (else another claim raced us: try again)
    return None


@functools.cache
def _claim_statements(pinned: bool, capped: bool, restricted: bool) -> tuple[Any, Any]:
    """The claim ``UPDATE .. RETURNING`` and its sub-select (the probe that tells an empty
    queue from a lost race), built once per combination of filters."""
    q = (select(_TT.c.id).join(_ST, _ST.c.id == _TT.c.study_id)
         .where(_TT.c.state == _Q, _ST.c.state == StudyState.RUNNING.value))
    if pinned:
        q = q.where(_TT.c.study_id == bindparam("sid"))
    if capped:
        q = q.where(_TT.c.model_size <= bindparam("max_size"))
    if restricted:
        q = q.where(_TT.c.study_id.in_(bindparam("sids", expanding=True)))
    q = (q.order_by(_TT.c.priority, _TT.c.id).limit(1)
         .with_for_update(skip_locked=True, of=_TT))
    claim = (update(_TT).where(_TT.c.id == q.scalar_subquery(), _TT.c.state == _Q)
             .values(state=_R, worker_id=bindparam("wid"), started_at=bindparam("now"),
                     heartbeat_at=bindparam("now"), lease_expires_at=bindparam("until"))
             .returning(*CLAIMED_COLUMNS))
    return claim, q


def touch_worker(session: Session | Connection, *, worker_id: str,
                 capabilities: Mapping[str, Any], now: datetime) -> None:
    """Record that a worker asked for work (an upsert: one row per worker id)."""
    session.execute(_TOUCH[_dialect(session)],
                    {"wid": worker_id, "caps": dict(capabilities), "now": now})


def _touch_statement(dialect: str) -> Any:
    ins = pg_insert if dialect == "postgresql" else sqlite_insert
    caps = bindparam("caps", type_=_WT.c.capabilities.type)
    return ins(_WT).values(id=bindparam("wid"), capabilities=caps, first_seen=bindparam("now"),
                           last_seen=bindparam("now")).on_conflict_do_update(
        index_elements=[_WT.c.id], set_={"last_seen": bindparam("now"), "capabilities": caps})


_TOUCH = {d: _touch_statement(d) for d in ("postgresql", "sqlite")}


def _dialect(session: Session | Connection) -> str:
    return (session.dialect if isinstance(session, Connection)
            else session.get_bind().dialect).name


def any_expired(conn: Connection, *, now: datetime) -> bool:
    """Whether some running trial's lease lapsed: the cheap test before
    :func:`reap_expired`, which the claim path would otherwise run on every request."""
    return conn.execute(_EXPIRED, {"now": now}).first() is not None


def running_studies(conn: Connection, study_id: int | None) -> list[Row]:
    """``(id, state, updated_at)`` of the running studies, or of the one study
    ``study_id`` whatever its state (404 when it does not exist)."""
    if study_id is None:
        return list(conn.execute(_RUNNING_STUDIES))
    rows = list(conn.execute(_ONE_STUDY, {"sid": study_id}))
    if not rows:
        raise NotFound(f"study {study_id} not found")
    return rows


def idle_workers(session: Session, *, since: datetime) -> int:
    """Workers seen since ``since`` that hold no running trial: the demand for proposals."""
    busy = select(Trial.worker_id).where(Trial.state == _R, Trial.worker_id.is_not(None))
    return int(session.scalar(
        select(func.count()).select_from(Worker)
        .where(Worker.last_seen >= since, Worker.id.not_in(busy))) or 0)


def _leased_trial(session: Session, trial_id: int | Trial, worker_id: str, action: str
                  ) -> Trial:
    """The running trial (row-locked; pass an already locked row to skip the query) leased
    to ``worker_id``, or the 404/409 that explains why not. Every write on a trial proves
    its lease this way: the worker id is required (the request schemas), never optional.

    A lease is honoured until the reaper takes the trial back: a worker that missed a
    heartbeat but is still alive loses nothing.
    """
    trial = trial_id if isinstance(trial_id, Trial) else get_trial(session, trial_id, lock=True)
    trial_id = trial.id
    if trial.state != _R:
        why = f"trial {trial_id} is {trial.state}, not running; {action} refused"
        if trial.state == TrialState.ABANDONED.value:
            successor = session.scalar(select(Trial.id).where(Trial.retry_of == trial_id))
            why += f" (its lease expired: {trial.fail_reason}"
            why += f"; re-queued as trial {successor})" if successor else ")"
        raise Conflict(why)
    if trial.worker_id != worker_id:
        raise Conflict(f"trial {trial_id} is leased to worker {trial.worker_id!r}, "
                       f"not {worker_id!r}; {action} refused")
    return trial


def heartbeat(session: Session, *, trial_id: int, worker_id: str, lease_seconds: float,
              now: datetime) -> Trial:
    trial = get_trial(session, trial_id, lock=True, with_study=True)
    trial = _leased_trial(session, trial, worker_id, "heartbeat")
    trial.heartbeat_at = now
    trial.lease_expires_at = now + timedelta(seconds=lease_seconds)
    return trial


def _same_losses(a: Mapping[str, Any], b: Mapping[str, float]) -> bool:
    return a.keys() == b.keys() and all(
        math.isclose(float(a[k]), float(b[k]), rel_tol=1e-12, abs_tol=1e-15) for k in b)


def _checked_measurement(trial: Any, measurement: LibMeasurement, config: StudyConfig,
                         proportions: Mapping[str, float] | None
                         ) -> tuple[dict[str, float], dict[str, float] | None]:
    """The report's losses and proportions as stored, after the checks every path that
    records a measurement makes (single, batch, ``complete``'s final losses): known
    domains, finite losses inside the study's bounds, proportions a mixture, and a step
    within ``trial.steps`` (``trial``: an ORM row or a :class:`Lease`)."""
    step = measurement.step
    losses = config.check_losses(measurement.losses)
    if proportions is not None:
        proportions = config.check_proportions(proportions, "proportions")
    if step > trial.steps:
        raise ValidationError(f"step: {step} is beyond the trial's steps ({trial.steps})")
    return losses, proportions


def _check_replay(existing: Any, trial_id: int, step: int, losses: Mapping[str, float],
                  proportions: Mapping[str, float] | None) -> None:
    """Re-posting the recorded step ``existing`` is a no-op only with the same report: a
    worker retrying after a lost response; anything else is a conflict."""
    if existing is not None:
        if not _same_losses(existing.losses, losses):
            raise Conflict(f"trial {trial_id} already has different losses at step {step}")
        if proportions is not None and (existing.proportions is None or
                                        not _same_losses(existing.proportions, proportions)):
            raise Conflict(
                f"trial {trial_id} already has different proportions at step {step}")


def add_measurement(session: Session, *, trial: Trial, measurement: LibMeasurement,
                    worker_id: str, config: StudyConfig, lease_seconds: float, now: datetime,
                    proportions: Mapping[str, float] | None = None
                    ) -> tuple[Measurement, bool]:
    """Record one checkpoint of a row-locked ``trial``; returns ``(row, created)``.

    Re-posting the same ``(trial, step, losses)`` is a no-op (a worker retrying after a lost
    response); different losses for a recorded step are a conflict. A replay that omits
    ``proportions`` matches (``complete`` re-posts the final losses without them); one that
    gives them must give the recorded ones. Posting also renews the lease: a worker that
    reports is alive. (:func:`renew_lease` + :func:`insert_measurement` are the same on a
    Core connection, for a trial its worker holds.)
    """
    step = measurement.step
    losses, proportions = _checked_measurement(trial, measurement, config, proportions)
    existing = session.scalar(select(Measurement).where(
        Measurement.trial_id == trial.id, Measurement.step == step))
    if existing is not None:
        _check_replay(existing, trial.id, step, losses, proportions)
        return existing, False
    _leased_trial(session, trial, worker_id, "measurement")
    row = Measurement(trial_id=trial.id, step=step, losses=losses, cost=measurement.cost,
                      objective=objective_of(losses, config.space.objective_weights or {}),
                      proportions=proportions, created_at=now)
    session.add(row)
    trial.heartbeat_at = now
    trial.lease_expires_at = now + timedelta(seconds=lease_seconds)
    session.flush()
    return row, True


# -- the worker protocol's hot path on a Core connection ----------------------------------

@dataclass(frozen=True)
class Lease:
    """A running trial whose lease its worker's write just renewed; ``study_version`` is
    its study row's ``updated_at`` (the key of the per-process config cache)."""

    id: int
    study_id: int
    steps: int
    study_version: datetime


_RENEW = (
    update(_TT)
    .where(_TT.c.id == bindparam("tid"), _TT.c.state == _R, _TT.c.worker_id == bindparam("wid"))
    .values(heartbeat_at=bindparam("now"), lease_expires_at=bindparam("until"))
    .returning(_TT.c.id, _TT.c.study_id, _TT.c.steps,
               select(_ST.c.updated_at).where(_ST.c.id == _TT.c.study_id).scalar_subquery()))
_EXISTING = select(_MT).where(_MT.c.trial_id == bindparam("tid"),
                              _MT.c.step == bindparam("step"))
_STUDY_CONFIG = select(_ST.c.config, _ST.c.seed).where(_ST.c.id == bindparam("sid"))


def _insert_new_measurement(dialect: str) -> Any:
    ins = pg_insert if dialect == "postgresql" else sqlite_insert
    return (ins(_MT).values(trial_id=bindparam("tid"), step=bindparam("step"),
                            losses=bindparam("losses"), cost=bindparam("cost"),
                            objective=bindparam("objective"),
                            proportions=bindparam("proportions"),
                            created_at=bindparam("now"))
            .on_conflict_do_nothing(index_elements=["trial_id", "step"])
            .returning(_MT.c.id))


_INSERT_MEASUREMENT = {d: _insert_new_measurement(d) for d in ("postgresql", "sqlite")}


def renew_lease(conn: Connection, *, trial_id: int, worker_id: str, lease_seconds: float,
                now: datetime) -> Lease | None:
    """Renew the lease of a trial running under ``worker_id`` in one statement, which also
    row-locks it for the rest of the transaction (the compare-and-set on state and holder
    is the lease check). None when the trial is not running under that worker's lease:
    the caller then takes the ORM path, which accepts a replay and otherwise says why
    (404, 409)."""
    row = conn.execute(_RENEW, {"tid": trial_id, "wid": worker_id, "now": now,
                                "until": now + timedelta(seconds=lease_seconds)}).first()
    return None if row is None else Lease(int(row[0]), int(row[1]), int(row[2]), row[3])


def study_config(conn: Connection, study_id: int) -> tuple[dict[str, Any], int]:
    """A study's stored ``(config, seed)``: what the config cache parses on a miss."""
    config, seed = conn.execute(_STUDY_CONFIG, {"sid": study_id}).one()
    return config, int(seed)


def insert_measurement(conn: Connection, *, lease: Lease, measurement: LibMeasurement,
                       config: StudyConfig, now: datetime,
                       proportions: Mapping[str, float] | None = None
                       ) -> tuple[MeasurementRecord, bool]:
    """:func:`add_measurement` for a trial whose lease :func:`renew_lease` just renewed in
    this transaction: the same checks and replay rules, one ``INSERT .. ON CONFLICT DO
    NOTHING`` for a new step (a second statement only for a replay)."""
    step = measurement.step
    losses, proportions = _checked_measurement(lease, measurement, config, proportions)
    objective = objective_of(losses, config.space.objective_weights or {})
    created = conn.execute(_INSERT_MEASUREMENT[conn.dialect.name], {
        "tid": lease.id, "step": step, "losses": losses, "cost": measurement.cost,
        "objective": objective, "proportions": proportions, "now": now}).first()
    if created is not None:
        return MeasurementRecord(int(created.id), lease.id, step, losses, objective,
                                 measurement.cost, now, proportions), True
    existing = conn.execute(_EXISTING, {"tid": lease.id, "step": step}).one()
    _check_replay(existing, lease.id, step, losses, proportions)
    return MeasurementRecord(**existing._mapping), False


_COMPLETE = (
    update(_TT)
    .where(_TT.c.id == bindparam("tid"), _TT.c.state == _R, _TT.c.worker_id == bindparam("wid"),
           select(_MT.c.id).where(_MT.c.trial_id == _TT.c.id).exists())
    .values(state=TrialState.COMPLETED.value, cost=bindparam("cost"),
            finished_at=bindparam("now"), lease_expires_at=None)
    .returning(*_TT.c, select(_ST.c.updated_at).where(_ST.c.id == _TT.c.study_id)
               .scalar_subquery().label("study_version")))
_CURVE = select(_MT).where(_MT.c.trial_id == bindparam("tid")).order_by(
    _MT.c.step)


def complete_leased(conn: Connection, *, trial_id: int, worker_id: str, cost: float,
                    now: datetime) -> tuple[TrialRecord, datetime] | None:
    """:func:`complete_trial` on a Core connection for the usual case: the trial runs under
    ``worker_id``'s lease, has measurements, and the request brings neither final losses
    nor an online summary. One ``UPDATE .. RETURNING`` (the compare-and-set on state and
    holder is the lease check), then its curve for the answer. Returns ``(trial, study
    version)``, the trial as the :class:`~server.bulk.TrialRecord` the trials list also
    answers with; None in every other case, for the ORM path to handle (an idempotent
    re-complete, or the 404/409/422 that says why)."""
    row = conn.execute(_COMPLETE, {"tid": trial_id, "wid": worker_id, "cost": cost,
                                   "now": now}).first()
    if row is None:
        return None
    columns = row._mapping
    curve = tuple(MeasurementRecord(**m._mapping) for m in conn.execute(_CURVE, {"tid": trial_id}))
    trial = TrialRecord(**{c.name: columns[c] for c in _TT.c}, measurements=curve)
    return trial, columns["study_version"]


def complete_trial(session: Session, *, trial: Trial, cost: float,
                   losses: Mapping[str, float] | None, worker_id: str,
                   config: StudyConfig, now: datetime,
                   online: Mapping[str, Mapping[str, float] | None] | None = None) -> Trial:
    """Finish a row-locked running trial with its measured cost (idempotent for the same
    cost). ``online`` is an online-mixed run's summary (``final_proportions``,
    ``average_proportions``), each mixture checked before anything is written."""
    online_result = {key: config.check_proportions(value, f"online.{key}")
                     for key, value in (online or {}).items() if value is not None} or None
    if trial.state == TrialState.COMPLETED.value and trial.cost is not None \
            and math.isclose(trial.cost, cost, rel_tol=1e-9):
        return trial
    _leased_trial(session, trial, worker_id, "complete")
    if losses:
        add_measurement(session, trial=trial, config=config, lease_seconds=0.0, now=now,
                        measurement=LibMeasurement(trial.steps, dict(losses), cost),
                        worker_id=worker_id)
    n = session.scalar(select(func.count()).select_from(Measurement)
                       .where(Measurement.trial_id == trial.id))
    if not n:
        raise ValidationError(
            f"losses: trial {trial.id} has no measurements; post them to /measurements or "
            "pass the final losses with complete")
    trial.state = TrialState.COMPLETED.value
    trial.cost = cost
    trial.finished_at = now
    trial.lease_expires_at = None
    trial.online_result = online_result
    return trial


def _requeue(session: Session, trial: Trial, max_attempts: int, now: datetime) -> Trial | None:
    if trial.attempt >= max_attempts or trial.source == "import":
        return None
    study_state = session.scalar(select(Study.state).where(Study.id == trial.study_id))
    if study_state not in (StudyState.RUNNING.value, StudyState.PAUSED.value):
        return None
    again = Trial(study_id=trial.study_id, state=_Q, source=trial.source, priority=0,
                  mixture=dict(trial.mixture), model_size=trial.model_size, steps=trial.steps,
                  checkpoints=list(trial.checkpoints), spec_metadata=dict(trial.spec_metadata),
                  attempt=trial.attempt + 1, retry_of=trial.id, created_at=now)
    session.add(again)
    session.flush()
    return again


def fail_trial(session: Session, *, trial_id: int, reason: str, retryable: bool,
               cost: float | None, worker_id: str, max_attempts: int, now: datetime
               ) -> tuple[Trial, Trial | None]:
    """Mark a running trial failed; a retryable failure re-queues its spec while attempts
    remain. Returns ``(trial, retry or None)``."""
    trial = _leased_trial(session, trial_id, worker_id, "fail")
    trial.state = TrialState.FAILED.value
    trial.fail_reason = reason
    trial.finished_at = now
    trial.lease_expires_at = None
    if cost is not None:
        trial.cost = cost
    retry = _requeue(session, trial, max_attempts, now) if retryable else None
    return trial, retry


def reap_expired(session: Session, *, now: datetime, max_attempts: int) -> list[int]:
    """Running trials whose lease lapsed become ``abandoned`` (measurements kept) and their
    spec is re-queued while attempts remain. Returns the abandoned ids."""
    rows = list(session.scalars(
        select(Trial).where(Trial.state == _R, Trial.lease_expires_at < now)
        .order_by(Trial.id).with_for_update(skip_locked=True)))
    for trial in rows:
        trial.state = TrialState.ABANDONED.value
        trial.finished_at = now
        trial.fail_reason = (f"lease expired at {trial.lease_expires_at:%Y-%m-%dT%H:%M:%SZ} "
                             f"(worker {trial.worker_id!r})")
        trial.lease_expires_at = None
        _requeue(session, trial, max_attempts, now)
    return [t.id for t in rows]


def study_ids_of(session: Session, trial_ids: Sequence[int]) -> list[int]:
    """The distinct studies of some trials, in id order."""
    return list(session.scalars(select(Trial.study_id).where(Trial.id.in_(trial_ids))
                                .distinct().order_by(Trial.study_id)))


def check_checkpoints(given: Sequence[int], steps: int) -> list[int]:
    """The evaluation steps a trial to run may ask for: sorted, unique, in ``[1, steps]``
    (hand-enqueued trials and imported ones)."""
    out = sorted({int(s) for s in given})
    if not out or out[0] < 1 or out[-1] > steps:
        raise ValidationError(f"checkpoints: need steps in [1, {steps}]")
    return out


def enqueue_trial(session: Session, *, study: Study, config: StudyConfig, spec: TrialSpec,
                  measurements: Sequence[LibMeasurement] = (), cost: float | None = None,
                  online: Mapping[str, Any] | None = None, now: datetime) -> Trial:
    """A person's trial: queued to run (claimed before the strategy's), or, when it comes
    with measurements, recorded as a completed import that informs the surrogate.
    ``online`` overrides the study's in-run mixing spec for this trial."""
    space = config.space
    if measurements:
        # Imports come from earlier sweeps: any simplex point and any size in the modelled
        # range, not just this study's bounds and ladder.
        free = MixtureSpace(space.mixtures.domains)
        mixture = free.to_dict(free.validate(spec.mixture))
        fid = space.fidelities
        top = max(fid.largest_runnable, fid.target_model_size)
        if not fid.model_sizes[0] <= spec.model_size <= top:
            raise ValidationError(
                f"model_size: {spec.model_size:g} outside the modelled range "
                f"[{fid.model_sizes[0]:g}, {top:g}]")
        trial = Trial(study_id=study.id, state=TrialState.COMPLETED.value, source="import",
                      priority=0, mixture=mixture, model_size=float(spec.model_size),
                      steps=spec.steps, checkpoints=sorted({m.step for m in measurements}),
                      spec_metadata=_trial_metadata(spec, online, space.mixtures.domains,
                                                    mixture),
                      cost=cost, created_at=now, started_at=now, finished_at=now)
        session.add(trial)
        session.flush()
        seen: set[int] = set()
        for i, m in enumerate(measurements):
            losses = config.check_losses(m.losses, f"measurements[{i}].losses")
            if m.step > spec.steps:
                raise ValidationError(
                    f"measurements[{i}].step: {m.step} is beyond steps ({spec.steps})")
            if m.step in seen:
                raise ValidationError(f"measurements[{i}].step: duplicate step {m.step}")
            seen.add(m.step)
            session.add(Measurement(trial_id=trial.id, step=m.step, losses=losses, cost=m.cost,
                                    objective=objective_of(losses, space.objective_weights or {}),
                                    created_at=now))
        return trial
    if StudyState(study.state).is_finished():
        raise Conflict(f"study {study.id} is {study.state}; it takes no new trials to run")
    if config.budget_trials is not None:  # the caller holds the study row lock
        used = trials_run(session, study.id)
        if used >= config.budget_trials:
            raise Conflict(f"budget.trials: study {study.id} has run or queued {used} of "
                           f"its {config.budget_trials} trials; a trial enqueued to run "
                           "counts against the budget (results with measurements do not)")
    mixture = space.mixtures.to_dict(space.mixtures.validate(spec.mixture))
    space.fidelities.validate(spec.model_size, spec.steps)
    trial = Trial(study_id=study.id, state=_Q, source="user", priority=0,
                  mixture=mixture, model_size=float(spec.model_size),
                  steps=spec.steps,
                  checkpoints=check_checkpoints(spec.checkpoints, spec.steps),
                  spec_metadata=_trial_metadata(spec, online, space.mixtures.domains, mixture),
                  created_at=now)
    session.add(trial)
    session.flush()
    return trial


def _trial_metadata(spec: TrialSpec, online: Mapping[str, Any] | None,
                    domains: Sequence[str], mixture: Mapping[str, float]) -> dict[str, Any]:
    """The trial's metadata with its ``online`` override, checked against its own mixture.

    ``metadata["online"]`` is where ``/next-trial`` looks for the override, so one passed
    inside ``metadata`` is checked the same way (never handed to a worker unchecked); the
    ``online`` argument wins over it.
    """
    meta = dict(spec.metadata)
    online = online if online is not None else meta.get("online")
    if online is not None:
        check_online(domains, online, mixture)
        meta["online"] = online
    return meta


# -- what strategies see ---------------------------------------------------------------------
def _spec(trial: Any, metadata: Mapping[str, Any] | None = None) -> TrialSpec:
    """The spec of a trial (an ORM row or a Core row with the same columns)."""
    return TrialSpec(mixture=dict(trial.mixture), model_size=float(trial.model_size),
                     steps=int(trial.steps), checkpoints=tuple(int(c) for c in trial.checkpoints),
                     metadata=dict(trial.spec_metadata if metadata is None else metadata))


_HISTORY_TRIALS = (select(_TT.c.id, _TT.c.state, _TT.c.mixture, _TT.c.model_size, _TT.c.steps,
                          _TT.c.checkpoints, _TT.c.spec_metadata, _TT.c.retry_of, _TT.c.cost)
                   .where(_TT.c.study_id == bindparam("sid")).order_by(_TT.c.id))
_HISTORY_CURVES = (select(_MT.c.trial_id, _MT.c.step, _MT.c.losses)
                   .where(_MT.c.trial_id.in_(bindparam("ids", expanding=True)))
                   .order_by(_MT.c.trial_id, _MT.c.step))
_STUDY_CREATED = select(_ST.c.created_at).where(_ST.c.id == bindparam("sid"))


class _FinishedCurves:
    """Per-process cache of finished trials' curves, for :func:`history_of`.

    A finished trial never changes (every write checks that it is running), so its curve,
    once read, is read again only if this process forgets it. Keyed by database URL, study
    id and the study's creation time, so a study re-created under a reused id (or a test
    database emptied and refilled) never sees another's curves; the least recently used
    studies go first.
    """

    def __init__(self, max_studies: int = 32) -> None:
        self.max_studies = max_studies
        self._lock = threading.Lock()
        self._studies: OrderedDict[tuple, dict[int, tuple[LibMeasurement, ...]]] = \
            OrderedDict()

    def curves(self, session: Session, study_id: int, finished: list[int]
               ) -> dict[int, tuple[LibMeasurement, ...]]:
        """The curves of the ``finished`` trials of the study (empty when a trial has none),
        read from the database only for those this process has not seen finished."""
        created = session.scalar(_STUDY_CREATED, {"sid": study_id})
        key = (session.get_bind().url.render_as_string(), study_id, created)
        with self._lock:
            known = self._studies.setdefault(key, {})
            self._studies.move_to_end(key)
            while len(self._studies) > self.max_studies:
                self._studies.popitem(last=False)
            missing = [t for t in finished if t not in known]
        if missing:
            read: dict[int, list[LibMeasurement]] = {t: [] for t in missing}
            for i in range(0, len(missing), 5000):  # SQLite binds at most 32766 values
                for trial_id, step, losses in session.execute(
                        _HISTORY_CURVES, {"ids": missing[i:i + 5000]}):
                    read[trial_id].append(LibMeasurement(int(step), dict(losses)))
            with self._lock:
                known.update((t, tuple(c)) for t, c in read.items())
        return known


_FINISHED_CURVES = _FinishedCurves()


def history_of(session: Session, study_id: int) -> tuple[list[TrialResult], list[TrialSpec]]:
    """``(history, pending)`` in creation order, as the study's strategy must see them.

    Failed and abandoned runs with measurements are partial results (``completed=False``):
    their learning curves still inform the surrogate. A run that was retried loses its
    strategy metadata, so bookkeeping such as Hyperband's rungs counts the spec once.

    Every proposal reads the whole study, so this is what a top-up costs as a study grows:
    the trials come from one Core query, and the curves of finished trials (which never
    change) from the database only the first time this process sees them finished.
    """
    trials = session.execute(_HISTORY_TRIALS, {"sid": study_id}).all()
    finished = [t.id for t in trials if t.state not in (_Q, _R, TrialState.CANCELLED.value)]
    curves = _FINISHED_CURVES.curves(session, study_id, finished)
    retried = {t.retry_of for t in trials if t.retry_of is not None}
    history: list[TrialResult] = []
    pending: list[TrialSpec] = []
    for t in trials:
        if t.state in (_Q, _R):
            pending.append(_spec(t))
            continue
        if t.state == TrialState.CANCELLED.value or not curves.get(t.id):
            continue
        meta = {"superseded": True} if t.id in retried else None
        history.append(TrialResult(
            spec=_spec(t, meta), measurements=curves[t.id],
            cost=t.cost, completed=t.state == TrialState.COMPLETED.value))
    return history, pending


def final_objective_of(trial: Trial) -> float | None:
    """Objective at the trial's last reported step (None while nothing is reported)."""
    for m in sorted(trial.measurements, key=lambda m: m.step, reverse=True):
        if m.objective is not None:
            return float(m.objective)
    return None


# -- the per-study proposer lock -------------------------------------------------------------
def acquire_proposer(session: Session, *, study_id: int, holder: str, now: datetime,
                     seconds: float) -> bool:
    """Take the study's proposer lock unless another live holder has it."""
    res = session.execute(
        update(Study).where(
            Study.id == study_id,
            or_(Study.proposer_until.is_(None), Study.proposer_until < now))
        .values(proposer_id=holder, proposer_until=now + timedelta(seconds=seconds))
        .execution_options(synchronize_session=False))
    return res.rowcount == 1


def renew_proposer(session: Session, *, study_id: int, holder: str, now: datetime,
                   seconds: float) -> bool:
    """Extend ``holder``'s lock (a long GP fit keeps it); False if it was lost."""
    res = session.execute(
        update(Study).where(Study.id == study_id, Study.proposer_id == holder)
        .values(proposer_until=now + timedelta(seconds=seconds))
        .execution_options(synchronize_session=False))
    return res.rowcount == 1


def release_proposer(session: Session, *, study_id: int, holder: str) -> None:
    session.execute(
        update(Study).where(Study.id == study_id, Study.proposer_id == holder)
        .values(proposer_id=None, proposer_until=None)
        .execution_options(synchronize_session=False))


def insert_proposals(session: Session, *, study_id: int, specs: Sequence[TrialSpec],
                     holder: str, now: datetime) -> list[Trial]:
    """Queue a strategy's proposals, only if ``holder`` still holds the lock (a holder whose
    lock lapsed mid-fit must not add a second batch next to its successor's)."""
    held = session.scalar(select(Study.proposer_id).where(Study.id == study_id)
                          .with_for_update())
    if held != holder:
        return []
    rows = [Trial(study_id=study_id, state=_Q, source="strategy", priority=1,
                  mixture=dict(s.mixture), model_size=float(s.model_size), steps=int(s.steps),
                  checkpoints=[int(c) for c in s.checkpoints],
                  spec_metadata=_jsonable(s.metadata), created_at=now) for s in specs]
    session.add_all(rows)
    release_proposer(session, study_id=study_id, holder=holder)
    session.flush()
    return rows


def record_proposal(session: Session, *, study_id: int, error: str | None, now: datetime
                    ) -> None:
    """Note how the strategy's proposal went on the study row: a failure (``error``, the
    strategy's exception; a random proposal ran instead) sets the message and time and
    counts it; a success clears message and time and keeps the count."""
    q = update(Study).where(Study.id == study_id)
    if error is None:  # most proposals succeed after successes: write nothing then
        q = q.where(Study.last_proposal_error.is_not(None)).values(
            last_proposal_error=None, last_proposal_error_at=None)
    else:
        q = q.values(last_proposal_error=error[:_MAX_PROPOSAL_ERROR],
                     last_proposal_error_at=now,
                     proposal_failures=Study.proposal_failures + 1)
    session.execute(q.execution_options(synchronize_session=False))


_MAX_PROPOSAL_ERROR = 2000  # characters; a traceback-sized message is in the server log


def _jsonable(meta: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in meta.items():
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        elif hasattr(v, "item"):
            v = v.item()
        out[str(k)] = v
    return out
