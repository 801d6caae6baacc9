"""The worker protocol: claim (``/next-trial``), heartbeat, report, complete, fail."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Response, status

from mfms_bo.errors import ValidationError
from mfms_bo.trials import Measurement
from mfms_client.schemas import (
    CompleteRequest,
    FailRequest,
    HeartbeatRequest,
    HeartbeatResponse,
    MeasurementBatchIn,
    MeasurementBatchPublic,
    MeasurementIn,
    MeasurementPublic,
    NextTrialRequest,
    TrialAssignment,
    TrialPublic,
)
from server import storage
from server.api.deps import (
    DbDep,
    MaintainerDep,
    ProposerDep,
    ReadAuth,
    SettingsDep,
    StudiesDep,
    TrialId,
    WorkerAuth,
)
from server.api.views import assignment, measurement_public, trial_public
from server.config import Settings
from server.db import Database, utcnow
from server.dispatch import next_trial as dispatch_next_trial
from server.errors import Conflict
from server.maintenance import Maintainer
from server.models import StudyState
from server.proposer import Proposer
from server.study_cache import StudyCache

log = logging.getLogger("mfms.server")
router = APIRouter(tags=["trials"])


@router.post("/next-trial", response_model=TrialAssignment, dependencies=[WorkerAuth],
             responses={204: {"description": "no work now; poll again later"}})
def next_trial(body: NextTrialRequest, response: Response, db: DbDep, settings: SettingsDep,
               proposer: ProposerDep, maintainer: MaintainerDep
               ) -> TrialAssignment | Response:
    claim = dispatch_next_trial(db, proposer, settings, worker_id=body.worker_id,
                                study_id=body.study_id, capabilities=body.capabilities)
    maintainer.wake()
    if claim.trial is None:
        headers = {"Retry-After": "5"}
        if claim.study_state is not None:
            headers["X-MFMS-Study-State"] = claim.study_state
        return Response(status_code=status.HTTP_204_NO_CONTENT, headers=headers)
    assert claim.config is not None
    return assignment(claim.trial, settings, claim.config)


@router.get("/trials/{trial_id}", response_model=TrialPublic, dependencies=[ReadAuth])
def get_trial(trial_id: TrialId, db: DbDep) -> TrialPublic:
    with db.session() as s:
        return trial_public(storage.get_trial(s, trial_id))


@router.post("/trials/{trial_id}/heartbeat", response_model=HeartbeatResponse,
             dependencies=[WorkerAuth])
def heartbeat(trial_id: TrialId, body: HeartbeatRequest, db: DbDep, settings: SettingsDep
              ) -> HeartbeatResponse:
    with db.session() as s:
        trial = storage.heartbeat(s, trial_id=trial_id, worker_id=body.worker_id,
                                  lease_seconds=settings.lease_seconds, now=utcnow())
        state = trial.study.state
        assert trial.lease_expires_at is not None
        return HeartbeatResponse(trial_id=trial.id, lease_expires_at=trial.lease_expires_at,
                                 lease_seconds=settings.lease_seconds, study_state=state,
                                 should_stop=state == StudyState.STOPPED.value)


@router.post("/trials/{trial_id}/measurements", response_model=MeasurementPublic,
             dependencies=[WorkerAuth], responses={201: {"description": "recorded"},
                                                  200: {"description": "already recorded"}})
def post_measurement(trial_id: TrialId, body: MeasurementIn, response: Response, db: DbDep,
                     settings: SettingsDep, studies: StudiesDep) -> MeasurementPublic:
    [(row, created)] = _record(db, settings, studies, trial_id, body.worker_id,
                               [(Measurement(body.step, body.losses, body.cost),
                                 body.proportions)])
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return measurement_public(row)


@router.post("/trials/{trial_id}/measurements/batch", response_model=MeasurementBatchPublic,
             dependencies=[WorkerAuth],
             responses={201: {"description": "recorded (some may have been already)"},
                        200: {"description": "all already recorded"}})
def post_measurements(trial_id: TrialId, body: MeasurementBatchIn, response: Response,
                      db: DbDep, settings: SettingsDep, studies: StudiesDep
                      ) -> MeasurementBatchPublic:
    """Several checkpoints of one trial in one request (a worker's backlog), in order and
    all or nothing: each is checked as ``POST /trials/{id}/measurements`` checks one, and a
    refused item is named by its index, ``measurements[i]`` (422 or 409)."""
    done = _record(db, settings, studies, trial_id, body.worker_id,
                   [(Measurement(m.step, m.losses, m.cost), m.proportions)
                    for m in body.measurements], batch=True)
    created = sum(new for _, new in done)
    response.status_code = status.HTTP_200_OK if created == 0 else status.HTTP_201_CREATED
    return MeasurementBatchPublic(measurements=[measurement_public(row) for row, _ in done],
                                  created=created)


def _record(db: Database, settings: Settings, studies: StudyCache, trial_id: int,
            worker_id: str, items: list[tuple[Measurement, dict[str, float] | None]],
            batch: bool = False) -> list[tuple[Any, bool]]:
    """Record a trial's measurements in one transaction, all or nothing; ``(row, created)``
    per item. A worker reporting on the trial it holds (nearly every request) takes the Core
    path: one statement renews and locks the lease, one inserts each step, and the study's
    config comes from the per-process cache by the study row's version. Anything else (a
    replay after the trial finished, another worker's id, an unknown trial) takes the ORM
    path, which accepts a replay and otherwise says why not. In a batch (``batch``), a
    refused item's message starts with its index, ``measurements[i]``."""
    now = utcnow()
    with db.connection() as conn:
        lease = storage.renew_lease(conn, trial_id=trial_id, worker_id=worker_id,
                                    lease_seconds=settings.lease_seconds, now=now)
        if lease is not None:
            config = studies.at_version(lease.study_id, lease.study_version,
                                        lambda: storage.study_config(conn, lease.study_id)
                                        ).config
            return [_item(i, batch, lambda m=m, p=p: storage.insert_measurement(
                conn, lease=lease, measurement=m, config=config, now=now, proportions=p))
                for i, (m, p) in enumerate(items)]
    with db.session() as s:
        trial = storage.get_trial(s, trial_id, lock=True, with_study=True)
        config = studies.config_of(trial.study)
        return [_item(i, batch, lambda m=m, p=p: storage.add_measurement(
            s, trial=trial, config=config, measurement=m, worker_id=worker_id, proportions=p,
            lease_seconds=settings.lease_seconds, now=now))
            for i, (m, p) in enumerate(items)]


def _item(i: int, batch: bool, record: Callable[[], tuple[Any, bool]]) -> tuple[Any, bool]:
    """``record()``; in a batch, a refusal names the item: ``measurements[i].step: ...``
    (a field error, 422) or ``measurements[i]: ...`` (a conflict, 409)."""
    if not batch:
        return record()
    try:
        return record()
    except ValidationError as exc:
        raise ValidationError(f"measurements[{i}].{exc}") from exc
    except Conflict as exc:
        raise Conflict(f"measurements[{i}]: {exc}") from exc


def _finished(s, trial, proposer: Proposer, maintainer: Maintainer) -> TrialPublic:
    """Response for a trial that just finished; the last trial of a spent budget also ends
    its study, and the queue may need a top-up."""
    s.flush()
    s.refresh(trial)
    out = trial_public(trial)
    s.commit()
    proposer.finish_if_done(out.study_id)
    maintainer.wake()
    return out


@router.post("/trials/{trial_id}/complete", response_model=TrialPublic,
             dependencies=[WorkerAuth])
def complete(trial_id: TrialId, body: CompleteRequest, db: DbDep, proposer: ProposerDep,
             maintainer: MaintainerDep, studies: StudiesDep) -> TrialPublic:
    if body.losses is None and body.online is None:  # the usual case: the Core path
        with db.connection() as conn:
            done = storage.complete_leased(conn, trial_id=trial_id, worker_id=body.worker_id,
                                           cost=body.cost, now=utcnow())
            if done is not None:
                trial, version = done
                config = studies.at_version(
                    trial.study_id, version,
                    lambda: storage.study_config(conn, trial.study_id)).config
        if done is not None:
            out = trial_public(trial)
            if config.has_budget:  # the last trial of a spent budget ends its study
                proposer.finish_if_done(out.study_id)
            maintainer.wake()
            return out
    with db.session() as s:
        trial = storage.get_trial(s, trial_id, lock=True, with_study=True)
        trial = storage.complete_trial(
            s, trial=trial, cost=body.cost, losses=body.losses, worker_id=body.worker_id,
            config=studies.config_of(trial.study), now=utcnow(),
            online=body.online.model_dump() if body.online else None)
        return _finished(s, trial, proposer, maintainer)


@router.post("/trials/{trial_id}/fail", response_model=TrialPublic, dependencies=[WorkerAuth])
def fail(trial_id: TrialId, body: FailRequest, db: DbDep, settings: SettingsDep,
         proposer: ProposerDep, maintainer: MaintainerDep) -> TrialPublic:
    with db.session() as s:
        now = utcnow()
        trial, _ = storage.fail_trial(s, trial_id=trial_id, reason=body.reason,
                                      retryable=body.retryable, cost=body.cost,
                                      worker_id=body.worker_id,
                                      max_attempts=settings.max_attempts, now=now)
        s.flush()
        reason = storage.pause_after_failures(s, trial.study_id,
                                              settings.pause_after_failures, now)
        if reason:
            log.warning("study %d: %s", trial.study_id, reason)
        return _finished(s, trial, proposer, maintainer)
