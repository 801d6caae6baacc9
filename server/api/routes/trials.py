"""The worker protocol: claim (``/next-trial``), heartbeat, report, complete, fail."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response, status

from mfms_bo.trials import Measurement
from mfms_client.schemas import (
    CompleteRequest,
    FailRequest,
    HeartbeatRequest,
    HeartbeatResponse,
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
from server.db import utcnow
from server.dispatch import next_trial as dispatch_next_trial
from server.maintenance import Maintainer
from server.models import StudyState
from server.proposer import Proposer

log = logging.getLogger("mfms.server")
router = APIRouter(tags=["trials"])


@router.post("/next-trial", response_model=TrialAssignment, dependencies=[WorkerAuth],
             responses={204: {"description": "no work now; poll again later"}})
def next_trial(body: NextTrialRequest, response: Response, db: DbDep, settings: SettingsDep,
               proposer: ProposerDep, maintainer: MaintainerDep, studies: StudiesDep
               ) -> TrialAssignment | Response:
    claim = dispatch_next_trial(db, proposer, settings, worker_id=body.worker_id,
                                study_id=body.study_id, capabilities=body.capabilities)
    maintainer.wake()
    if claim.trial is None:
        headers = {"Retry-After": "5"}
        if claim.study_state is not None:
            headers["X-MFMS-Study-State"] = claim.study_state
        return Response(status_code=status.HTTP_204_NO_CONTENT, headers=headers)
    return assignment(claim.trial, settings, studies.config_of(claim.trial.study))


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
    with db.session() as s:
        trial = storage.get_trial(s, trial_id, lock=True, with_study=True)
        row, created = storage.add_measurement(
            s, trial=trial, config=studies.config_of(trial.study),
            measurement=Measurement(body.step, body.losses, body.cost),
            worker_id=body.worker_id, proportions=body.proportions,
            lease_seconds=settings.lease_seconds, now=utcnow())
        response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return measurement_public(row)


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
