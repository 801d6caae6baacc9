"""Studies: create, list, inspect, pause/resume/stop, their trials and what they learned."""

from __future__ import annotations

import secrets
from typing import Any, Literal

from fastapi import APIRouter, Body, Query, status

from mfms_bo.study import StudyConfig
from mfms_bo.trials import Measurement, TrialSpec
from mfms_client.schemas import (
    PredictRequest,
    PredictResponse,
    RecommendationPublic,
    StudyCreate,
    StudyList,
    StudyPublic,
    StudyUpdate,
    TrialEnqueue,
    TrialList,
    TrialPublic,
)
from server import storage, transfer
from server.api.deps import (
    AdminAuth,
    DbDep,
    InsightsDep,
    MaintainerDep,
    ReadAuth,
    StudiesDep,
    StudyId,
)
from server.api.views import study_public, trial_public
from server.checks import check_online
from server.db import utcnow

router = APIRouter(prefix="/studies", tags=["studies"])


def _public(s, study) -> StudyPublic:
    return study_public(study, storage.study_counts(s, [study.id])[study.id],
                        storage.study_costs(s, [study.id])[study.id],
                        storage.trials_run(s, study.id))


@router.post("", response_model=StudyPublic, status_code=status.HTTP_201_CREATED,
             dependencies=[AdminAuth])
def create_study(body: StudyCreate, db: DbDep, maintainer: MaintainerDep) -> StudyPublic:
    seed = body.seed if body.seed is not None else secrets.randbelow(2**31 - 1)
    config = body.model_dump(mode="json", exclude={"seed"})
    StudyConfig.from_dict(config).make_strategy(seed)  # validates space and options
    if body.online is not None:  # the spec every trial's worker will build its mixer from
        check_online(body.domains, body.online)
    with db.session() as s:
        study = storage.create_study(s, name=body.name, config=config, seed=seed)
        out = _public(s, study)
    maintainer.wake()
    return out


@router.post("/import", response_model=StudyPublic, status_code=status.HTTP_201_CREATED,
             dependencies=[AdminAuth])
def import_study(db: DbDep, maintainer: MaintainerDep,
                 doc: dict[str, Any] = Body(..., description="a GET /studies/{id}/export "  # noqa: B008
                                                          "document"),
                 name: str | None = Query(None, min_length=1, max_length=200,
                                          description="import under this name instead")
                 ) -> StudyPublic:
    """Recreate an exported study under new ids (running trials arrive abandoned; see
    ``server/transfer.py``). 409 if the name is taken, 422 for an unreadable document."""
    with db.session() as s:
        study = transfer.import_study(s, doc, name)
        out = _public(s, study)
    maintainer.wake()
    return out


@router.get("", response_model=StudyList, dependencies=[ReadAuth])
def list_studies(db: DbDep) -> StudyList:
    with db.session() as s:
        studies = storage.list_studies(s)
        ids = [st.id for st in studies]
        counts, costs = storage.study_counts(s, ids), storage.study_costs(s, ids)
        return StudyList(studies=[study_public(st, counts[st.id], costs[st.id],
                                               storage.trials_run(s, st.id))
                                  for st in studies])


@router.get("/{study_id}", response_model=StudyPublic, dependencies=[ReadAuth])
def get_study(study_id: StudyId, db: DbDep) -> StudyPublic:
    with db.session() as s:
        return _public(s, storage.get_study(s, study_id))


@router.get("/{study_id}/export", dependencies=[ReadAuth])
def export_study(study_id: StudyId, db: DbDep) -> dict[str, Any]:
    """The study, its trials and measurements as one versioned JSON document (the body
    ``POST /studies/import`` takes, also written by ``mfms db export``)."""
    with db.session() as s:
        return transfer.export_study(s, study_id)


def _transition(study_id: int, action: str, db, maintainer) -> StudyPublic:
    with db.session() as s:
        study = storage.set_study_state(s, study_id=study_id, action=action, now=utcnow())
        out = _public(s, study)
    maintainer.wake()
    return out


@router.patch("/{study_id}", response_model=StudyPublic, dependencies=[AdminAuth])
def update_study(study_id: StudyId, body: StudyUpdate, db: DbDep,
                 maintainer: MaintainerDep) -> StudyPublic:
    """Change a study's budget (raise it to continue a study its budget completed, or lower
    it to end one sooner) or its pause threshold."""
    with db.session() as s:
        study = storage.update_study(s, study_id=study_id,
                                     changes=body.model_dump(mode="json", exclude_unset=True))
        out = _public(s, study)
    maintainer.wake()
    return out


@router.post("/{study_id}/pause", response_model=StudyPublic, dependencies=[AdminAuth])
def pause_study(study_id: StudyId, db: DbDep, maintainer: MaintainerDep) -> StudyPublic:
    return _transition(study_id, "pause", db, maintainer)


@router.post("/{study_id}/resume", response_model=StudyPublic, dependencies=[AdminAuth])
def resume_study(study_id: StudyId, db: DbDep, maintainer: MaintainerDep) -> StudyPublic:
    return _transition(study_id, "resume", db, maintainer)


@router.post("/{study_id}/stop", response_model=StudyPublic, dependencies=[AdminAuth])
def stop_study(study_id: StudyId, db: DbDep, maintainer: MaintainerDep) -> StudyPublic:
    return _transition(study_id, "stop", db, maintainer)


@router.post("/{study_id}/trials", response_model=TrialPublic,
             status_code=status.HTTP_201_CREATED, dependencies=[AdminAuth])
def enqueue_trial(study_id: StudyId, body: TrialEnqueue, db: DbDep, maintainer: MaintainerDep,
                  studies: StudiesDep) -> TrialPublic:
    with db.session() as s:
        study = storage.get_study(s, study_id, lock=True)
        config = studies.config_of(study)
        checkpoints = (config.space.fidelities.checkpoint_steps(body.steps)
                       if body.checkpoints is None else tuple(body.checkpoints))
        spec = TrialSpec(body.mixture, body.model_size, body.steps, checkpoints,
                         body.metadata or {})
        trial = storage.enqueue_trial(
            s, study=study, config=config, spec=spec, cost=body.cost, online=body.online,
            measurements=[Measurement(m.step, m.losses, m.cost)
                          for m in body.measurements or ()], now=utcnow())
        s.refresh(trial)
        out = trial_public(trial)
    maintainer.wake()
    return out


TrialStateFilter = Literal["queued", "running", "completed", "failed", "abandoned", "cancelled"]


@router.get("/{study_id}/trials", response_model=TrialList, dependencies=[ReadAuth])
def list_trials(study_id: StudyId, db: DbDep,
                state: TrialStateFilter | None = Query(None),  # noqa: B008
                limit: int | None = Query(None, ge=1, le=10_000,
                                          description="page size (default: every trial)"),
                after: int | None = Query(None, ge=0,
                                          description="cursor: the previous page's "
                                                      "next_cursor")) -> TrialList:
    with db.session() as s:
        storage.get_study(s, study_id)
        rows = storage.list_trials(s, study_id, state, after=after, limit=limit)
        more = limit is not None and len(rows) == limit
        return TrialList(trials=[trial_public(t) for t in rows],
                         next_cursor=rows[-1].id if more else None)


@router.get("/{study_id}/recommendation", response_model=RecommendationPublic,
            dependencies=[ReadAuth])
def recommendation(study_id: StudyId, insights: InsightsDep) -> RecommendationPublic:
    return insights.recommendation(study_id)


@router.post("/{study_id}/predict", response_model=PredictResponse, dependencies=[ReadAuth])
def predict(study_id: StudyId, body: PredictRequest, insights: InsightsDep) -> PredictResponse:
    return insights.predict(study_id, body)
