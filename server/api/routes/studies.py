"""Studies: create, list, inspect, pause/resume/stop, their trials and what they learned."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Body, Query, status
from fastapi.responses import StreamingResponse

from mfms_bo.errors import ValidationError
from mfms_bo.study import StudyConfig
from mfms_bo.trials import Measurement, TrialSpec
from mfms_client.schemas import (
    TRIALS_PAGE_LIMIT,
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
from server import bulk, storage, transfer
from server.api.deps import (
    MAX_ID,
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
from server.models import TrialState

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


@router.get("/{study_id}/export", dependencies=[ReadAuth], response_class=StreamingResponse,
            responses={200: {"content": {"application/json": {"schema": {"type": "object"}}},
                             "description": "the mfms-study document"}})
def export_study(study_id: StudyId, db: DbDep) -> StreamingResponse:
    """The study, its trials and measurements as one versioned JSON document (the body
    ``POST /studies/import`` takes, also written by ``mfms db export``), streamed: trials
    are read and written a batch at a time, so a study of any size costs the server one
    batch of memory."""
    with db.session() as s:
        storage.get_study(s, study_id)  # a 404 must come before the 200 starts

    def body() -> Iterator[str]:
        with db.session() as s:
            yield from transfer.iter_export_study(s, study_id)

    return StreamingResponse(body(), media_type="application/json")


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


def _states(given: list[str] | None) -> set[str] | None:
    """``?state=a&state=b`` or ``?state=a,b`` as a set of trial states; 422 naming an
    unknown one (a typo would otherwise list nothing, which reads as "no such trials")."""
    if not given:
        return None
    known = [s.value for s in TrialState]
    states = {part.strip() for item in given for part in item.split(",") if part.strip()}
    unknown = sorted(states - set(known))
    if unknown:
        raise ValidationError(f"state: unknown trial state(s) {unknown}; expected any of "
                              f"{', '.join(known)}")
    return states or None


def _cursor(last_id: int) -> str:
    """Opaque to clients (so the ordering key can change without breaking them): the last
    trial id of a page, URL-safe base64."""
    return base64.urlsafe_b64encode(f"t{last_id}".encode()).decode().rstrip("=")


def _after(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if text[:1] != "t" or not text[1:].isdigit():
            raise ValueError(text)
        return int(text[1:])
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise ValidationError("cursor: not a cursor this server issued; pass a page's "
                              "next_cursor unchanged") from None


@router.get("/{study_id}/trials", response_model=TrialList, dependencies=[ReadAuth])
def list_trials(study_id: StudyId, db: DbDep,
                state: list[str] | None = Query(  # noqa: B008
                    None, description="only trials in these states: repeat the parameter "
                                      "or separate them with commas (queued, running, "
                                      "completed, failed, abandoned, cancelled)"),
                limit: int = Query(TRIALS_PAGE_LIMIT, ge=1, le=TRIALS_PAGE_LIMIT,
                                   description="page size (default and largest: "
                                               f"{TRIALS_PAGE_LIMIT})"),
                cursor: str | None = Query(None, max_length=100,
                                           description="the previous page's next_cursor"),
                after: int | None = Query(None, ge=0, le=MAX_ID, deprecated=True,
                                          description="older form of cursor: the last "
                                                      "trial id of the previous page"),
                ) -> TrialList:
    """A study's trials in id order, a page at a time: follow ``next_cursor`` until it is
    null. Pages are keyed on the trial id, so a trial created while a client walks them
    shows up once, on a later page. ``after`` (a trial id) is what clients of the first
    paginated version send: ignoring it would hand them the first page forever."""
    if cursor is not None and after is not None:
        raise ValidationError("cursor and after: give one (after is the older form)")
    states = _states(state)
    after = _after(cursor) if cursor is not None else after
    with db.session() as s:
        storage.get_study(s, study_id)
        rows = bulk.trial_records(s, study_id, states, after=after, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return TrialList(trials=[trial_public(t) for t in rows],  # type: ignore[arg-type]
                     next_cursor=_cursor(rows[-1].id) if more else None)


@router.get("/{study_id}/recommendation", response_model=RecommendationPublic,
            dependencies=[ReadAuth])
def recommendation(study_id: StudyId, insights: InsightsDep) -> RecommendationPublic:
    return insights.recommendation(study_id)


@router.post("/{study_id}/predict", response_model=PredictResponse, dependencies=[ReadAuth])
def predict(study_id: StudyId, body: PredictRequest, insights: InsightsDep) -> PredictResponse:
    return insights.predict(study_id, body)
