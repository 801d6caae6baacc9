"""Study export / import: a versioned JSON document that moves a study between databases.

``export_study`` writes everything that defines a study and what it learned::

    {"format": "mfms-study", "version": 1, "exported_at": "...",
     "study": {"name", "state", "seed", "config", "created_at"},
     "trials": [{"state", "source", "priority", "mixture", "model_size", "steps",
                 "checkpoints", "spec_metadata", "attempt", "retry_of", "worker_id",
                 "created_at", "started_at", "finished_at", "heartbeat_at",
                 "lease_expires_at", "cost", "fail_reason", "online_result",
                 "measurements": [{"step", "losses", "objective", "cost", "proportions",
                                   "created_at"}]}]}

Database ids are not part of the document: trials are listed in creation order and
``retry_of`` is the index of the retried trial in ``trials``. ``export_backup`` wraps every
study in ``{"format": "mfms-backup", "version": 1, "studies": [...]}``.

``import_study`` recreates a study under new ids, keeping its timestamps, state and seed, so
its history - and so its recommendation - is the original's. Two things cannot carry over:

* a trial that was **running** is imported ``abandoned`` (its lease belonged to the exporting
  server; no worker holds it here). Its measurements are kept, as the lease reaper keeps
  them, but its spec is not re-queued: the strategy proposes again, and a hand-enqueued
  spec can be enqueued again;
* the per-study proposer lock and the workers table (both transient) are not exported.

Queued trials stay queued. A name that already exists is refused (409) unless a new name
is given. Datetimes are naive UTC, as stored.

Every value passes the checks it would pass arriving live (:func:`_checked_trial`): a trial
the server ran or queued needs a mixture within the study's bounds, a size on its ladder,
steps in range and checkpoints within them (as ``POST /studies/{id}/trials``); a result
imported from an earlier sweep (``source`` ``import``) any point of the simplex and a size
in the modelled range; losses, proportions and online summaries go through the same
checks as ``/measurements`` and ``/complete`` (``loss_bounds`` included), and objectives are
recomputed from the losses. A bad value is a 422 naming its path
(``trials[3].mixture: ...``), and nothing is written: every study of a document is checked
before the first row is inserted.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationError, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from mfms_bo import limits
from mfms_bo.errors import ValidationError as MFMSValidationError
from mfms_bo.space import MixtureSpace
from mfms_bo.study import StudyConfig
from mfms_bo.trials import objective_of
from mfms_client.schemas import StrictInput, StudyCreate, error_field
from server.checks import check_online, check_storable
from server.db import utcnow
from server.errors import Conflict, NotFound
from server.models import Measurement, Study, StudyState, Trial, TrialState
from server.storage import check_checkpoints

__all__ = ["FORMAT", "BACKUP_FORMAT", "VERSION", "export_study", "export_backup",
           "import_study", "import_backup", "import_document", "find_study",
           "InvalidDocument"]

FORMAT, BACKUP_FORMAT, VERSION = "mfms-study", "mfms-backup", 1
RUNNING_ON_IMPORT = ("imported while running: its lease belonged to the exporting server "
                     "(measurements kept, spec not re-queued)")


class InvalidDocument(MFMSValidationError):
    """The document is not an mfms study export this version can read (HTTP 422)."""


# -- export ----------------------------------------------------------------------------------
def _when(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _measurement_doc(m: Measurement) -> dict[str, Any]:
    return {"step": int(m.step), "losses": dict(m.losses), "objective": m.objective,
            "cost": m.cost, "proportions": None if m.proportions is None else dict(m.proportions),
            "created_at": _when(m.created_at)}


def _trial_doc(t: Trial, index_of: dict[int, int]) -> dict[str, Any]:
    return {
        "state": t.state, "source": t.source, "priority": int(t.priority),
        "mixture": dict(t.mixture), "model_size": float(t.model_size), "steps": int(t.steps),
        "checkpoints": [int(c) for c in t.checkpoints],
        "spec_metadata": dict(t.spec_metadata or {}), "attempt": int(t.attempt),
        "retry_of": None if t.retry_of is None else index_of[t.retry_of],
        "worker_id": t.worker_id, "created_at": _when(t.created_at),
        "started_at": _when(t.started_at), "finished_at": _when(t.finished_at),
        "heartbeat_at": _when(t.heartbeat_at), "lease_expires_at": _when(t.lease_expires_at),
        "cost": t.cost, "fail_reason": t.fail_reason,
        "online_result": None if t.online_result is None else dict(t.online_result),
        "measurements": [_measurement_doc(m) for m in sorted(t.measurements,
                                                             key=lambda m: m.step)],
    }


def _study_doc(session: Session, study: Study) -> dict[str, Any]:
    trials = list(session.scalars(
        select(Trial).where(Trial.study_id == study.id).order_by(Trial.id)
        .options(selectinload(Trial.measurements))))
    index_of = {t.id: i for i, t in enumerate(trials)}
    return {
        "study": {"name": study.name, "state": study.state, "seed": int(study.seed),
                  "config": dict(study.config), "created_at": _when(study.created_at)},
        "trials": [_trial_doc(t, index_of) for t in trials],
    }


def export_study(session: Session, study_id: int) -> dict[str, Any]:
    """The study (404 if unknown) as a ``mfms-study`` version 1 document (plain JSON)."""
    study = session.get(Study, study_id)
    if study is None:
        raise NotFound(f"study {study_id} not found")
    return {"format": FORMAT, "version": VERSION, "exported_at": _when(utcnow()),
            **_study_doc(session, study)}


def export_backup(session: Session) -> dict[str, Any]:
    """Every study, oldest first, as one ``mfms-backup`` document."""
    studies = list(session.scalars(select(Study).order_by(Study.id)))
    return {"format": BACKUP_FORMAT, "version": VERSION, "exported_at": _when(utcnow()),
            "studies": [{"format": FORMAT, "version": VERSION, **_study_doc(session, s)}
                        for s in studies]}


def find_study(session: Session, ref: str | int) -> Study:
    """A study by id (an int or a string of digits) or, failing that, by name."""
    text = str(ref).strip()
    if text.isdigit():
        study = session.get(Study, int(text))
        if study is not None:
            return study
    study = session.scalar(select(Study).where(Study.name == text))
    if study is None:
        raise NotFound(f"no study with id or name {text!r}")
    return study


# -- the document, as import reads it --------------------------------------------------------
class _Doc(StrictInput):
    """Unknown fields, non-finite numbers and unstorable strings are refused, as in a live
    request body (``schemas.StrictInput``). Free-form fields may nest two levels more than
    live input: a study's ``config`` holds ``strategy.options``, and a trial's
    ``spec_metadata`` its ``online`` spec, each of which may nest ``MAX_NESTING`` itself."""

    max_nesting: ClassVar[int] = limits.MAX_NESTING + 2


class MeasurementDoc(_Doc):
    step: int = Field(ge=0, le=limits.MAX_STEPS)
    losses: dict[str, float]
    objective: float | None = None  # recomputed from the losses on import
    cost: float | None = Field(None, ge=0, le=limits.MAX_COST)
    proportions: dict[str, float] | None = None
    created_at: datetime


class TrialDoc(_Doc):
    state: TrialState
    source: Literal["strategy", "user", "import"]
    priority: int = Field(ge=-(2**31), le=2**31 - 1)
    mixture: dict[str, float]
    model_size: float = Field(gt=0, le=limits.MAX_MODEL_SIZE)
    steps: int = Field(ge=1, le=limits.MAX_STEPS)
    checkpoints: list[int] = Field(max_length=limits.MAX_CHECKPOINTS)
    spec_metadata: dict[str, Any] = Field(default_factory=dict)
    attempt: int = Field(1, ge=1, le=2**31 - 1)
    retry_of: int | None = Field(None, ge=0)
    worker_id: str | None = Field(None, max_length=200)
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None
    lease_expires_at: datetime | None = None
    cost: float | None = Field(None, ge=0, le=limits.MAX_COST)
    fail_reason: str | None = Field(None, max_length=20_000)
    online_result: dict[str, Any] | None = None
    measurements: list[MeasurementDoc] = Field(default_factory=list)

    @model_validator(mode="after")
    def _steps_unique(self) -> TrialDoc:
        steps = [m.step for m in self.measurements]
        if len(steps) != len(set(steps)):
            raise ValueError("measurements: duplicate step")
        return self


class StudyPart(_Doc):
    name: str = Field(min_length=1, max_length=200)
    state: StudyState
    seed: int = Field(ge=0, le=2**31 - 1)
    config: dict[str, Any]
    created_at: datetime


class StudyDoc(_Doc):
    format: Literal["mfms-study"]
    version: Literal[1]
    exported_at: datetime | None = None
    study: StudyPart
    trials: list[TrialDoc]

    @model_validator(mode="after")
    def _retries_point_back(self) -> StudyDoc:
        for i, t in enumerate(self.trials):
            if t.retry_of is not None and t.retry_of >= i:
                raise ValueError(f"trials[{i}].retry_of: {t.retry_of} is not an earlier trial")
        return self


def _check_header(doc: Any, formats: tuple[str, ...]) -> str:
    if not isinstance(doc, dict):
        raise InvalidDocument("not an mfms export: expected a JSON object")
    fmt, version = doc.get("format"), doc.get("version")
    if fmt not in formats:
        raise InvalidDocument(f"format: expected {' or '.join(map(repr, formats))}, got "
                              f"{fmt!r}")
    if version != VERSION:
        raise InvalidDocument(f"version: this server reads version {VERSION} documents, "
                              f"got {version!r}")
    return fmt


def _parse(doc: Any, where: str = "") -> StudyDoc:
    _check_header(doc, (FORMAT,))
    try:
        return StudyDoc.model_validate(doc)
    except ValidationError as exc:
        raise InvalidDocument(where + _first_error(exc)) from None


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    loc = error_field(first, prefix=())
    msg = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{loc}: {msg}{more}" if loc else f"{msg}{more}"


# -- import ----------------------------------------------------------------------------------
_ONLINE_RESULT_KEYS = ("final_proportions", "average_proportions")


def _checked_trial(t: TrialDoc, config: StudyConfig) -> TrialDoc:
    """``t`` with its values as live input stores them (mixture in domain order, sorted
    checkpoints, objectives recomputed from the losses); raises the live checks' errors,
    named relative to the trial (``mixture['code']: ...``)."""
    space = config.space
    fid, domains = space.fidelities, space.mixtures.domains
    if t.source == "import" and t.state != TrialState.QUEUED:
        # A result of an earlier sweep, as POST /studies/{id}/trials takes it with
        # measurements: any point of the simplex, any size in the modelled range.
        free = MixtureSpace(domains)
        mixture = free.to_dict(free.validate(t.mixture))
        top = max(fid.largest_runnable, fid.target_model_size)
        if not fid.model_sizes[0] <= t.model_size <= top:
            raise MFMSValidationError(f"model_size: {t.model_size:g} outside the modelled "
                                      f"range [{fid.model_sizes[0]:g}, {top:g}]")
        checkpoints = sorted(set(t.checkpoints))
        if checkpoints and not 0 <= checkpoints[0] <= checkpoints[-1] <= t.steps:
            raise MFMSValidationError(f"checkpoints: need steps in [0, {t.steps}]")
    else:  # a spec the server ran or will run: the study's bounds, ladder and step range
        mixture = space.mixtures.to_dict(space.mixtures.validate(t.mixture))
        fid.validate(t.model_size, t.steps)
        checkpoints = check_checkpoints(t.checkpoints, t.steps)
    meta = dict(t.spec_metadata)
    if meta.get("online") is not None:  # where /next-trial looks for a trial's override
        check_online(domains, meta["online"], mixture, field="spec_metadata.online")
    online_result = None
    if t.online_result is not None:
        online_result = {}
        for key, value in t.online_result.items():
            if key not in _ONLINE_RESULT_KEYS:
                raise MFMSValidationError(f"online_result.{key}: unknown field; expected "
                                          f"{' or '.join(_ONLINE_RESULT_KEYS)}")
            if value is not None:
                online_result[key] = config.check_proportions(value, f"online_result.{key}")
    weights = space.objective_weights or {}
    measurements = []
    for j, m in enumerate(t.measurements):
        losses = config.check_losses(m.losses, f"measurements[{j}].losses")
        if m.step > t.steps:
            raise MFMSValidationError(f"measurements[{j}].step: {m.step} is beyond the "
                                      f"trial's steps ({t.steps})")
        proportions = (None if m.proportions is None else
                       config.check_proportions(m.proportions, f"measurements[{j}].proportions"))
        measurements.append(m.model_copy(update={
            "losses": losses, "proportions": proportions,
            "objective": objective_of(losses, weights)}))
    return t.model_copy(update={"mixture": mixture, "checkpoints": checkpoints,
                                "online_result": online_result or None,
                                "measurements": measurements})


def _checked(session: Session, parsed: StudyDoc, name: str | None, where: str = ""
             ) -> tuple[str, StudyDoc]:
    """The study's name and its document with every trial checked as live input
    (:func:`_checked_trial`); writes nothing. Raises InvalidDocument (422) naming the path
    (``where`` + ``trials[3].mixture: ...``) or Conflict (409) for a taken name."""
    part = parsed.study
    if name is not None:
        check_storable(name, "name")
    name = name or part.name
    config = dict(part.config)
    try:  # the config must still describe a valid study (same checks as POST /studies)
        create = StudyCreate.model_validate({**config, "name": name})
    except ValidationError as exc:
        raise InvalidDocument(f"{where}study.config." + _first_error(exc)) from None
    try:
        study_config = StudyConfig.from_dict(config)
        study_config.make_strategy(part.seed)
        if create.online is not None:
            check_online(create.domains, create.online, field="study.config.online")
    except MFMSValidationError as exc:
        raise InvalidDocument(f"{where}{exc}") from None
    trials = []
    for i, t in enumerate(parsed.trials):
        try:
            trials.append(_checked_trial(t, study_config))
        except MFMSValidationError as exc:
            raise InvalidDocument(f"{where}trials[{i}].{exc}") from None
    if session.scalar(select(Study.id).where(Study.name == name)) is not None:
        raise Conflict(f"name: a study named {name!r} already exists; import it under "
                       "another name (mfms db import FILE --name NEW)")
    return name, parsed.model_copy(update={"trials": trials})


def _insert(session: Session, parsed: StudyDoc, name: str) -> Study:
    """Write a document :func:`_checked` returned."""
    part = parsed.study
    study = Study(name=name, config=dict(part.config), state=part.state.value, seed=part.seed,
                  created_at=part.created_at)
    session.add(study)
    session.flush()
    now = utcnow()
    ids: list[int] = []
    for t in parsed.trials:
        state, fail_reason, finished_at = t.state.value, t.fail_reason, t.finished_at
        lease = t.lease_expires_at
        if t.state == TrialState.RUNNING:
            state, fail_reason, finished_at = TrialState.ABANDONED.value, RUNNING_ON_IMPORT, now
        if state != TrialState.RUNNING.value:
            lease = None
        row = Trial(study_id=study.id, state=state, source=t.source, priority=t.priority,
                    mixture=dict(t.mixture), model_size=t.model_size, steps=t.steps,
                    checkpoints=list(t.checkpoints), spec_metadata=dict(t.spec_metadata),
                    attempt=t.attempt,
                    retry_of=None if t.retry_of is None else ids[t.retry_of],
                    worker_id=t.worker_id, created_at=t.created_at, started_at=t.started_at,
                    finished_at=finished_at, heartbeat_at=t.heartbeat_at,
                    lease_expires_at=lease, cost=t.cost, fail_reason=fail_reason,
                    online_result=t.online_result)
        row.measurements = [
            Measurement(step=m.step, losses=dict(m.losses), objective=m.objective,
                        cost=m.cost, proportions=m.proportions, created_at=m.created_at)
            for m in t.measurements]
        session.add(row)
        session.flush()  # one at a time: new ids keep the exported order
        ids.append(row.id)
    return study


def import_study(session: Session, doc: Any, name: str | None = None) -> Study:
    """Recreate an exported study under new ids (see the module notes); 422 for a document
    this version cannot read or a value live input would refuse, 409 when the name is
    taken."""
    checked_name, parsed = _checked(session, _parse(doc), name)
    return _insert(session, parsed, checked_name)


def import_backup(session: Session, doc: Any) -> list[Study]:
    """Every study of an ``mfms-backup`` document, all or nothing."""
    _check_header(doc, (BACKUP_FORMAT,))
    studies = doc.get("studies")
    if not isinstance(studies, list):
        raise InvalidDocument("studies: expected a list of study documents")
    parsed = [_parse(s, f"studies[{i}].") for i, s in enumerate(studies)]
    names = [p.study.name for p in parsed]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InvalidDocument(f"studies: names repeated in the backup: {dupes}")
    checked = [_checked(session, p, None, f"studies[{i}].") for i, p in enumerate(parsed)]
    return [_insert(session, p, n) for n, p in checked]


def import_document(session: Session, doc: Any, name: str | None = None) -> list[Study]:
    """A study export or a backup, whichever ``doc`` is; ``name`` only for a single study."""
    fmt = _check_header(doc, (FORMAT, BACKUP_FORMAT))
    if fmt == BACKUP_FORMAT:
        if name is not None:
            raise InvalidDocument("name: a new name applies to a single-study export, not "
                                  "to a backup")
        return import_backup(session, doc)
    return [import_study(session, doc, name)]
