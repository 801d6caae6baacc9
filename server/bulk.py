"""Reads and writes of many trials at once: the trials list's pages, exports, imports and
the dashboard of a study with thousands of trials.

:mod:`server.storage` loads ORM objects, which is right for the few rows a state change
touches but costs ~0.4 ms per trial with its measurements (identity map, instrumented
attributes): 4 s for a 10,000-trial study before anything is serialised. Here the same
rows come back as plain frozen records from two SQLAlchemy Core selects per batch (the
trials, then their measurements), with the attribute names of the ORM models, so
:func:`server.api.views.trial_public` and :func:`server.storage.final_objective_of` take
either; :mod:`server.storage`'s Core paths of the worker protocol answer with the same
records. Inserts are Core bulk inserts, a batch per statement.

Pages are keyed on the trial id (``id > after ORDER BY id LIMIT n``): every page costs the
same at any depth, and a trial inserted while a client walks the pages appears once, on a
later page (ids only grow), instead of shifting an offset.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Text, and_, bindparam, case, cast, func, insert, select, update
from sqlalchemy.orm import Session

from server.models import Measurement, Trial

__all__ = ["TrialRecord", "MeasurementRecord", "TrialDigest", "trial_records",
           "iter_trial_records", "trial_digests", "curves", "insert_trials", "BATCH"]

BATCH = 500  # trials per select when walking a whole study: bounded memory, few round trips

_TRIALS, _MEASUREMENTS = Trial.__table__, Measurement.__table__
_TRIAL_COLUMNS, _MEASUREMENT_COLUMNS = tuple(_TRIALS.c), tuple(_MEASUREMENTS.c)


@dataclass(frozen=True, slots=True)
class MeasurementRecord:
    """One row of ``measurements``."""

    id: int
    trial_id: int
    step: int
    losses: dict[str, Any]
    objective: float | None
    cost: float | None
    created_at: datetime
    proportions: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class TrialRecord:
    """One row of ``trials`` and its measurements in step order."""

    id: int
    study_id: int
    state: str
    source: str
    priority: int
    mixture: dict[str, Any]
    model_size: float
    steps: int
    checkpoints: list[Any]
    spec_metadata: dict[str, Any]
    attempt: int
    retry_of: int | None
    worker_id: str | None
    lease_expires_at: datetime | None
    heartbeat_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cost: float | None
    fail_reason: str | None
    online_result: dict[str, Any] | None
    measurements: tuple[MeasurementRecord, ...]


def trial_records(session: Session, study_id: int, states: Collection[str] | None = None, *,
                  after: int | None = None, limit: int | None = None) -> list[TrialRecord]:
    """The study's trials in id order, those with an id above ``after`` (exclusive), in
    ``states`` when given, at most ``limit`` of them."""
    q = select(*_TRIAL_COLUMNS).where(Trial.study_id == study_id).order_by(Trial.id)
    if states:
        q = q.where(Trial.state.in_(sorted(states)))
    if after is not None:
        q = q.where(Trial.id > after)
    if limit is not None:
        q = q.limit(limit)
    rows = session.execute(q).all()
    if not rows:
        return []
    by_trial: dict[int, list[MeasurementRecord]] = {r.id: [] for r in rows}
    # ``IN (ids)`` rather than an id range: another study's trials, or this one's in other
    # states, may lie between a page's first and last id.
    ms = session.execute(
        select(*_MEASUREMENT_COLUMNS).where(Measurement.trial_id.in_(list(by_trial)))
        .order_by(Measurement.trial_id, Measurement.step))
    for m in ms:
        by_trial[m.trial_id].append(MeasurementRecord(**m._mapping))
    return [_trial(r, by_trial[r.id]) for r in rows]


def iter_trial_records(session: Session, study_id: int, batch: int = BATCH
                       ) -> Iterator[list[TrialRecord]]:
    """Every trial of the study in id order, ``batch`` at a time (one page in memory)."""
    after: int | None = None
    while True:
        page = trial_records(session, study_id, after=after, limit=batch)
        if page:
            yield page
        if len(page) < batch:
            return
        after = page[-1].id


@dataclass(frozen=True, slots=True)
class TrialDigest:
    """A trial as a page of many trials shows it: its own fields but its spec's
    checkpoints and metadata, and of its measurements only aggregates: how many, how many
    with an objective, the objective at the last step that has one, the largest reported
    cost and whether any carried proportions."""

    id: int
    state: str
    source: str
    mixture: dict[str, Any]
    model_size: float
    steps: int
    attempt: int
    worker_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cost: float | None
    fail_reason: str | None
    n_measurements: int
    n_objectives: int
    final_objective: float | None
    measured_cost: float | None
    has_proportions: bool


def trial_digests(session: Session, study_id: int) -> list[TrialDigest]:
    """Every trial of the study in id order as a :class:`TrialDigest`, in one select: the
    database aggregates the measurements (10,000 trials x 8 checkpoints are 80,000 rows,
    each a JSON value to decode, that never reach Python here)."""
    of_study = select(Trial.id).where(Trial.study_id == study_id).scalar_subquery()
    has_props = and_(Measurement.proportions.is_not(None),  # SQL NULL or JSON null: none
                     cast(Measurement.proportions, Text) != "null")
    agg = (select(Measurement.trial_id, func.count().label("n_measurements"),
                  func.count(Measurement.objective).label("n_objectives"),
                  func.max(Measurement.cost).label("measured_cost"),
                  func.max(case((has_props, 1), else_=0)).label("has_proportions"))
           .where(Measurement.trial_id.in_(of_study)).group_by(Measurement.trial_id)
           .subquery())
    ranked = (select(Measurement.trial_id, Measurement.objective,
                     func.row_number().over(partition_by=Measurement.trial_id,
                                            order_by=Measurement.step.desc()).label("rn"))
              .where(Measurement.trial_id.in_(of_study), Measurement.objective.is_not(None))
              .subquery())
    q = (select(Trial.id, Trial.state, Trial.source, Trial.mixture, Trial.model_size,
                Trial.steps, Trial.attempt, Trial.worker_id, Trial.created_at,
                Trial.started_at, Trial.finished_at, Trial.cost, Trial.fail_reason,
                func.coalesce(agg.c.n_measurements, 0), func.coalesce(agg.c.n_objectives, 0),
                ranked.c.objective, agg.c.measured_cost,
                func.coalesce(agg.c.has_proportions, 0))
         .outerjoin(agg, agg.c.trial_id == Trial.id)
         .outerjoin(ranked, and_(ranked.c.trial_id == Trial.id, ranked.c.rn == 1))
         .where(Trial.study_id == study_id).order_by(Trial.id))
    return [TrialDigest(*row[:13], int(row[13]), int(row[14]),
                        None if row[15] is None else float(row[15]), row[16], bool(row[17]))
            for row in session.execute(q)]


def curves(session: Session, trial_ids: Collection[int]
           ) -> dict[int, tuple[list[int], list[float]]]:
    """The steps and objectives (where reported) of some trials' learning curves."""
    out: dict[int, tuple[list[int], list[float]]] = {}
    ids = list(trial_ids)
    for lo in range(0, len(ids), BATCH):
        rows = session.execute(
            select(Measurement.trial_id, Measurement.step, Measurement.objective)
            .where(Measurement.trial_id.in_(ids[lo:lo + BATCH]),
                   Measurement.objective.is_not(None))
            .order_by(Measurement.trial_id, Measurement.step))
        for tid, step, objective in rows:
            steps, objectives = out.setdefault(tid, ([], []))
            steps.append(step)
            objectives.append(objective)
    return out


def _trial(row: Row[Any], measurements: list[MeasurementRecord]) -> TrialRecord:
    return TrialRecord(**row._mapping, measurements=tuple(measurements))


def insert_trials(session: Session, trials: Sequence[dict[str, Any]]) -> list[int]:
    """Insert trial rows (``trials`` columns, plus ``measurements``: a list of measurement
    column dicts, and ``retry_of_index``: the position in ``trials`` of the trial it
    retries, or None) in one transaction; returns the new ids in the given order.

    ``retry_of`` may point at a trial of the same batch, whose id the insert only now
    assigns, so it is set by one UPDATE afterwards."""
    ids: list[int] = []
    for lo in range(0, len(trials), BATCH):
        chunk = trials[lo:lo + BATCH]
        rows = [{**{k: v for k, v in t.items() if k not in ("measurements", "retry_of_index")},
                 "retry_of": None} for t in chunk]
        new = session.execute(
            insert(_TRIALS).returning(_TRIALS.c.id, sort_by_parameter_order=True), rows
        ).scalars().all()
        ids.extend(new)
        ms = [{**m, "trial_id": tid} for tid, t in zip(new, chunk, strict=True)
              for m in t.get("measurements", ())]
        if ms:
            session.execute(insert(_MEASUREMENTS), ms)
    retries = [{"tid": tid, "rid": ids[t["retry_of_index"]]}
               for tid, t in zip(ids, trials, strict=True)
               if t.get("retry_of_index") is not None]
    if retries:
        session.execute(update(_TRIALS).where(_TRIALS.c.id == bindparam("tid"))
                        .values(retry_of=bindparam("rid")), retries)
    return ids
