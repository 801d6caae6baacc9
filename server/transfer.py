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

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationError, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from mfms_bo import limits
from mfms_bo.errors import ValidationError as MFMSValidationError
from mfms_bo.space import MixtureSpace
from mfms_bo.study import StudyConfig
from mfms_bo.trials import objective_of
from mfms_client.schemas import StrictInput, StudyCreate, error_field
from server.bulk import MeasurementRecord, TrialRecord, insert_trials, iter_trial_records
from server.checks import check_online, check_storable
from server.db import utcnow
from server.errors import Conflict, NotFound
from server.models import Study, StudyState, TrialState
from server.storage import check_checkpoints

__all__ = ["FORMAT", "BACKUP_FORMAT", "VERSION", "iter_export_study", "iter_export_backup",
           "export_study", "export_backup", "import_study", "import_backup",
           "import_document", "find_study", "InvalidDocument"]

FORMAT, BACKUP_FORMAT, VERSION = "mfms-study", "mfms-backup", 1
RUNNING_ON_IMPORT = ("imported while running: its lease belonged to the exporting server "
                     "(measurements kept, spec not re-queued)")


class InvalidDocument(MFMSValidationError):
    """The document is not an mfms study export this version can read (HTTP 422)."""


# -- export ----------------------------------------------------------------------------------
# Written as it is read: trials come from the database a batch at a time
# (``bulk.iter_trial_records``) and leave as JSON text, so a 10,000-trial study never sits in
# memory whole, as rows, as dicts or as text. The text is what ``json.dumps`` writes for the
# whole document with the same options (tests/server/test_large_study.py holds the two equal).
_FLUSH_CHARS = 1 << 16  # text handed on in pieces of about this size


class _Array:
    """A JSON array whose items are produced while it is written."""

    def __init__(self, items: Iterable[Any]) -> None:
        self.items = items


def _lazy(value: Any) -> bool:
    return isinstance(value, _Array) or (isinstance(value, dict)
                                         and any(_lazy(v) for v in value.values()))


def _chunks(value: Any, indent: int | None, ascii_only: bool, level: int = 0
            ) -> Iterator[str]:
    """``json.dumps(value, indent=indent, ensure_ascii=ascii_only, allow_nan=False)`` (with
    ``separators=(",", ":")`` when ``indent`` is None) in pieces, ``_Array`` values written
    as the arrays they stand for."""
    if not _lazy(value):
        text = json.dumps(value, indent=indent, ensure_ascii=ascii_only, allow_nan=False,
                          separators=None if indent is not None else (",", ":"))
        yield text if not indent or not level else text.replace("\n", "\n" + " " * (indent * level))
        return
    inner = "" if indent is None else "\n" + " " * (indent * (level + 1))
    outer = "" if indent is None else "\n" + " " * (indent * level)
    if isinstance(value, _Array):
        n = 0
        yield "["
        for item in value.items:
            yield ("," if n else "") + inner
            yield from _chunks(item, indent, ascii_only, level + 1)
            n += 1
        yield (outer if n else "") + "]"
        return
    colon = ":" if indent is None else ": "
    for n, (key, item) in enumerate(value.items()):
        yield ("{" if n == 0 else ",") + inner + json.dumps(key, ensure_ascii=ascii_only) + colon
        yield from _chunks(item, indent, ascii_only, level + 1)
    yield outer + "}"


def _buffered(pieces: Iterable[str]) -> Iterator[str]:
    buf: list[str] = []
    size = 0
    for piece in pieces:
        buf.append(piece)
        size += len(piece)
        if size >= _FLUSH_CHARS:
            yield "".join(buf)
            buf, size = [], 0
    if buf:
        yield "".join(buf)


def _when(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _measurement_doc(m: MeasurementRecord) -> dict[str, Any]:
    return {"step": int(m.step), "losses": dict(m.losses), "objective": m.objective,
            "cost": m.cost, "proportions": None if m.proportions is None else dict(m.proportions),
            "created_at": _when(m.created_at)}


def _trial_doc(t: TrialRecord, index_of: dict[int, int]) -> dict[str, Any]:
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


def _trial_docs(session: Session, study_id: int) -> Iterator[dict[str, Any]]:
    """The study's trials in creation (id) order; ``retry_of`` becomes the retried trial's
    position, always an earlier one (a retry is created after the trial it retries)."""
    index_of: dict[int, int] = {}
    for batch in iter_trial_records(session, study_id):
        for t in batch:
            doc = _trial_doc(t, index_of)
            index_of[t.id] = len(index_of)
            yield doc


def _study_doc(session: Session, study: Study) -> dict[str, Any]:
    return {
        "study": {"name": study.name, "state": study.state, "seed": int(study.seed),
                  "config": dict(study.config), "created_at": _when(study.created_at)},
        "trials": _Array(_trial_docs(session, study.id)),
    }


def _get(session: Session, study_id: int) -> Study:
    study = session.get(Study, study_id)
    if study is None:
        raise NotFound(f"study {study_id} not found")
    return study


def iter_export_study(session: Session, study_id: int, *, indent: int | None = None,
                      ensure_ascii: bool = False) -> Iterator[str]:
    """The study (404 if unknown, raised before the first piece) as a ``mfms-study``
    version 1 document, in pieces of JSON text to write out as they come. Compact by
    default, as ``GET /studies/{id}/export`` sends it; ``indent`` as ``json.dumps``'s."""
    study = _get(session, study_id)
    doc = {"format": FORMAT, "version": VERSION, "exported_at": _when(utcnow()),
           **_study_doc(session, study)}
    return _buffered(_chunks(doc, indent, ensure_ascii))


def iter_export_backup(session: Session, *, indent: int | None = None,
                       ensure_ascii: bool = False) -> Iterator[str]:
    """Every study, oldest first, as one ``mfms-backup`` document, in pieces."""
    ids = list(session.scalars(select(Study.id).order_by(Study.id)))

    def studies() -> Iterator[dict[str, Any]]:
        for study_id in ids:
            yield {"format": FORMAT, "version": VERSION,
                   **_study_doc(session, _get(session, study_id))}

    doc = {"format": BACKUP_FORMAT, "version": VERSION, "exported_at": _when(utcnow()),
           "studies": _Array(studies())}
    return _buffered(_chunks(doc, indent, ensure_ascii))


def export_study(session: Session, study_id: int) -> dict[str, Any]:
    """:func:`iter_export_study` read back into one dict (for small studies and tests)."""
    return json.loads("".join(iter_export_study(session, study_id)))


def export_backup(session: Session) -> dict[str, Any]:
    """:func:`iter_export_backup` read back into one dict."""
    return json.loads("".join(iter_export_backup(session)))


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


class StudyHead(_Doc):
    """The document less its ``trials``, which are read one at a time (:func:`_checked`)."""

    format: Literal["mfms-study"]
    version: Literal[1]
    exported_at: datetime | None = None
    study: StudyPart


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


def _parse(doc: Any, where: str = "") -> tuple[StudyHead, list[Any]]:
    """The document's head, validated, and its trials as they are (checked one at a time
    by :func:`_checked`, so no second full copy of the document is built)."""
    _check_header(doc, (FORMAT,))
    try:
        head = StudyHead.model_validate({k: v for k, v in doc.items() if k != "trials"})
    except ValidationError as exc:
        raise InvalidDocument(where + _first_error(exc)) from None
    trials = doc.get("trials")
    if not isinstance(trials, list):
        raise InvalidDocument(f"{where}trials: expected a list of trials")
    return head, trials


def _first_error(exc: ValidationError, at: str = "") -> str:
    first = exc.errors()[0]
    loc = ".".join(p for p in (at, error_field(first, prefix=())) if p)
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


def _row(t: TrialDoc, now: datetime) -> dict[str, Any]:
    """A checked trial as ``bulk.insert_trials`` writes it."""
    state, fail_reason, finished_at = t.state.value, t.fail_reason, t.finished_at
    lease = t.lease_expires_at
    if t.state == TrialState.RUNNING:
        state, fail_reason, finished_at = TrialState.ABANDONED.value, RUNNING_ON_IMPORT, now
    if state != TrialState.RUNNING.value:
        lease = None
    return {"state": state, "source": t.source, "priority": t.priority,
            "mixture": dict(t.mixture), "model_size": t.model_size, "steps": t.steps,
            "checkpoints": list(t.checkpoints), "spec_metadata": dict(t.spec_metadata),
            "attempt": t.attempt, "retry_of_index": t.retry_of, "worker_id": t.worker_id,
            "created_at": t.created_at, "started_at": t.started_at,
            "finished_at": finished_at, "heartbeat_at": t.heartbeat_at,
            "lease_expires_at": lease, "cost": t.cost, "fail_reason": fail_reason,
            "online_result": t.online_result,
            "measurements": [{"step": m.step, "losses": dict(m.losses),
                              "objective": m.objective, "cost": m.cost,
                              "proportions": m.proportions, "created_at": m.created_at}
                             for m in t.measurements]}


@dataclass(frozen=True)
class _Checked:
    """A study document that passed every check, as the rows to insert."""

    name: str
    head: StudyHead
    trials: list[dict[str, Any]]


def _checked(session: Session, head: StudyHead, trials: list[Any], name: str | None,
             where: str = "") -> _Checked:
    """The study's name and its trials as rows, each checked as live input
    (:func:`_checked_trial`) one at a time, so the rows are the only copy built beside the
    document; writes nothing. Raises InvalidDocument (422) naming the path (``where`` +
    ``trials[3].mixture: ...``) or Conflict (409) for a taken name."""
    part = head.study
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
    now = utcnow()
    rows = []
    for i, raw in enumerate(trials):
        try:
            t = TrialDoc.model_validate(raw)
        except ValidationError as exc:
            raise InvalidDocument(where + _first_error(exc, f"trials.{i}")) from None
        if t.retry_of is not None and t.retry_of >= i:
            raise InvalidDocument(f"{where}trials[{i}].retry_of: {t.retry_of} is not an "
                                  "earlier trial")
        try:
            rows.append(_row(_checked_trial(t, study_config), now))
        except MFMSValidationError as exc:
            raise InvalidDocument(f"{where}trials[{i}].{exc}") from None
    if session.scalar(select(Study.id).where(Study.name == name)) is not None:
        raise Conflict(f"name: a study named {name!r} already exists; import it under "
                       "another name (mfms db import FILE --name NEW)")
    return _Checked(name, head, rows)


def _insert(session: Session, checked: _Checked) -> Study:
    """Write a document :func:`_checked` returned: the study, then its trials and
    measurements by bulk inserts (new ids in the exported order)."""
    part = checked.head.study
    study = Study(name=checked.name, config=dict(part.config), state=part.state.value,
                  seed=part.seed, created_at=part.created_at)
    session.add(study)
    session.flush()
    insert_trials(session, [{**t, "study_id": study.id} for t in checked.trials])
    return study


def import_study(session: Session, doc: Any, name: str | None = None) -> Study:
    """Recreate an exported study under new ids (see the module notes); 422 for a document
    this version cannot read or a value live input would refuse, 409 when the name is
    taken."""
    return _insert(session, _checked(session, *_parse(doc), name))


def import_backup(session: Session, doc: Any) -> list[Study]:
    """Every study of an ``mfms-backup`` document, all or nothing."""
    _check_header(doc, (BACKUP_FORMAT,))
    studies = doc.get("studies")
    if not isinstance(studies, list):
        raise InvalidDocument("studies: expected a list of study documents")
    parsed = [_parse(s, f"studies[{i}].") for i, s in enumerate(studies)]
    names = [head.study.name for head, _ in parsed]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InvalidDocument(f"studies: names repeated in the backup: {dupes}")
    checked = [_checked(session, head, trials, None, f"studies[{i}].")
               for i, (head, trials) in enumerate(parsed)]
    return [_insert(session, c) for c in checked]


def import_document(session: Session, doc: Any, name: str | None = None) -> list[Study]:
    """A study export or a backup, whichever ``doc`` is; ``name`` only for a single study."""
    fmt = _check_header(doc, (FORMAT, BACKUP_FORMAT))
    if fmt == BACKUP_FORMAT:
        if name is not None:
            raise InvalidDocument("name: a new name applies to a single-study export, not "
                                  "to a backup")
        return import_backup(session, doc)
    return [import_study(session, doc, name)]
