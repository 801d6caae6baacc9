"""Request and response bodies of the REST contract (pydantic v2).

Shared by the server's routes, :mod:`mfms_client.client` and the workers, so the client
returns exactly what the server validated. Field names are the public contract: extend,
never rename. Requests forbid unknown fields (a typo such as ``model-size`` is an error,
not a silent default), and every request body is checked as parsed - before any field is
coerced - for values JSON or a database cannot store faithfully (:func:`unstorable`): NaN
or infinity anywhere (Python's JSON parser accepts the bare literals), and strings with a
NUL character or a lone surrogate. Free-form JSON (metadata, strategy options, online
specs) is covered the same way, and may nest at most ``limits.MAX_NESTING`` levels
(:func:`nesting`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from mfms_bo import limits
from mfms_bo.strategies import STRATEGIES

__all__ = [
    "Budget", "StepsRange", "Target", "StrategyConfig", "StudyCreate", "StudyUpdate", "StudyPublic",
    "StudyList", "Capabilities", "NextTrialRequest", "TrialAssignment", "HeartbeatRequest",
    "HeartbeatResponse", "MeasurementIn", "MeasurementPublic", "CompleteRequest",
    "FailRequest", "TrialEnqueue", "TrialPublic", "TrialList", "RecommendationPublic",
    "PredictRequest", "Prediction", "PredictResponse", "Health", "StrategyName",
    "OnlineSummary", "ErrorBody", "FieldError", "LossBounds", "StrictInput", "unstorable",
    "nesting", "error_field", "MeasurementItem", "MeasurementBatchIn",
    "MeasurementBatchPublic", "MAX_MEASUREMENT_BATCH",
]

# The names the library's registry holds: the API accepts exactly those, by construction.
StrategyName = Literal[tuple(STRATEGIES)]
_NAME = Field(min_length=1, max_length=200)
# Every write on a trial proves its lease with the worker id it was claimed with.
_HOLDER = Field(min_length=1, max_length=200,
                description="the worker holding the trial's lease (its /next-trial worker_id); "
                            "required: another worker's id is a 409")
# In-run mixing (``mfms_bo.online``): a JSON spec such as {"method": "aioli", "eta": 0.2}.
# Plain JSON here; the server validates it with the library's ``controller_from_spec`` (the
# same call the worker makes) and answers 422.
_ONLINE = Field(None, description='in-run mixing for every trial, e.g. {"method": "aioli", '
                                  '"eta": 0.2, "update_steps": 250}; see mfms_bo.online')


def _string_problem(text: str) -> str | None:
    if "\x00" in text:
        return "must not contain NUL characters (\\u0000)"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "must be valid Unicode (no lone surrogates)"
    return None


def unstorable(value: Any) -> tuple[str, str] | None:
    """The first value in ``value`` (parsed JSON, in document order) that JSON or a database
    cannot store faithfully, as ``(path, problem)``; None when everything can be stored.

    Refused: NaN and infinities (PostgreSQL's JSON type rejects them, SQLite stores them as
    bare ``NaN`` that no JSON reader accepts) and strings or keys containing NUL (PostgreSQL
    text cannot hold it) or a lone surrogate (not encodable as UTF-8). The path is dotted
    like pydantic's locations (``metadata.a.1.b``); empty for ``value`` itself. This is the
    one check every input path uses: request bodies through :class:`StrictInput`, import
    documents (``server.transfer``), and services through ``server.checks.check_storable``.
    Iterative, so any nesting the JSON parser accepted is walked without recursion.
    """
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, v = stack.pop()
        if isinstance(v, str):
            why = _string_problem(v)
            if why is not None:
                return path, why
        elif isinstance(v, float):
            if not math.isfinite(v):
                return path, f"must be finite, got {v}"
        elif isinstance(v, Mapping):
            items = []
            for k, item in v.items():
                if isinstance(k, str) and (why := _string_problem(k)) is not None:
                    return path, f"keys {why}"
                items.append((f"{path}.{k}" if path else str(k), item))
            stack.extend(reversed(items))
        elif isinstance(v, list | tuple):
            stack.extend(reversed([(f"{path}.{i}" if path else str(i), item)
                                   for i, item in enumerate(v)]))
    return None


def nesting(value: Any, limit: int) -> int:
    """How many levels of lists and objects ``value`` nests (0 for a scalar, 1 for a flat
    list or object); iterative, and it stops counting past ``limit`` (returning
    ``limit + 1``), so a value nested 10,000 deep costs no more than one at the limit."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, depth = stack.pop()
        items = v.values() if isinstance(v, Mapping) else v if isinstance(v, list | tuple) \
            else None
        if items is None:
            continue
        if depth > limit:
            return depth
        deepest = max(deepest, depth)
        stack.extend((item, depth + 1) for item in items)
    return deepest


def _holds_model(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_holds_model(a) for a in get_args(annotation))


@functools.cache
def _free_form(model: type[BaseModel]) -> tuple[str, ...]:
    """The fields of ``model`` that hold plain JSON rather than another request model (a
    nested model checks its own fields, so the limit counts from the field that holds it)."""
    return tuple(name for name, f in model.model_fields.items()
                 if not _holds_model(f.annotation))


class StrictInput(BaseModel):
    """Base of every request body (and of the import document's parts): unknown fields and
    non-finite numbers are refused, and so is any unstorable value (:func:`unstorable`)
    anywhere in the input, checked before any field coerces it (pydantic would turn NaN in
    a free-form ``Any`` into null when the body is dumped), and any field whose value nests
    deeper than ``max_nesting`` levels (:func:`nesting`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    max_nesting: ClassVar[int] = limits.MAX_NESTING

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        bad = unstorable(data)
        if bad is not None:  # the path travels in ctx: ``error_field`` appends it to loc
            raise PydanticCustomError("unstorable_value", "{problem}",
                                      {"at": bad[0], "problem": bad[1]})
        if isinstance(data, Mapping):
            for name in _free_form(cls):
                if name in data and nesting(data[name], cls.max_nesting) > cls.max_nesting:
                    raise PydanticCustomError(
                        "unstorable_value", "nesting deeper than {limit} levels",
                        {"at": name, "limit": cls.max_nesting})
        return data


_In = StrictInput


def error_field(error: Mapping[str, Any], prefix: tuple = ("body",)) -> str:
    """The dotted field a pydantic error names (``steps.max``): its location without the
    leading ``prefix`` parts, plus, for an unstorable value, the path inside it."""
    parts = [str(p) for p in error.get("loc", ()) if p not in prefix]
    at = (error.get("ctx") or {}).get("at") if error.get("type") == "unstorable_value" else None
    if at:
        parts.append(str(at))
    return ".".join(parts)


class LossBounds(_In):
    """Every loss reported to the study must lie strictly between ``min`` and ``max``
    (default 0 < loss < 1e4 nats): a zero or an absurd value (1e300 is finite) would wreck
    the surrogate, which models the log of the objective, for every later proposal."""

    min: float = Field(limits.LOSS_MIN, ge=0, description="exclusive lower bound")
    max: float = Field(limits.LOSS_MAX, gt=0, le=1e6, description="exclusive upper bound")

    @model_validator(mode="after")
    def _order(self) -> LossBounds:
        if self.min >= self.max:
            raise ValueError(f"min {self.min:g} must be below max {self.max:g}")
        return self


class Budget(_In):
    cost: float | None = Field(None, gt=0, le=limits.MAX_COST, description="GPU-seconds")
    trials: int | None = Field(None, gt=0, le=1_000_000)


class StudyUpdate(_In):
    """``PATCH /studies/{id}``: what may change in a running study (at least one field)."""

    budget: Budget | None = Field(
        None, description="the new budget, replacing the old one (a null field lifts that "
                          "limit); a study completed by its budget runs again when the new "
                          "one leaves room")
    pause_after_failures: int | None = Field(
        None, ge=0, le=10_000, description="the study's new pause threshold (0: never pause)")

    @model_validator(mode="after")
    def _something(self) -> StudyUpdate:
        if not self.model_fields_set & {"budget", "pause_after_failures"}:
            raise ValueError("give at least one of budget, pause_after_failures")
        return self


_LABEL = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
_Label = Annotated[str, Field(pattern=_LABEL)]


class WorkerRequirements(_In):
    """What a worker must declare in ``/next-trial`` to be given a study's trials: a study
    of real data names the backend that trains on it, so a simulator or a toy script that
    happens to know the domain names never completes its trials with made-up losses."""

    backend: str | None = Field(None, pattern=_LABEL,
                                description="the backend name the worker must declare "
                                            "(simulate, command, torch, or a client's own)")
    labels: list[_Label] = Field(default_factory=list, max_length=32,
                                 description="labels the worker must all carry "
                                             "(`mfms worker --label`)")


class StepsRange(_In):
    min: int = Field(ge=1, le=limits.MAX_STEPS)
    max: int = Field(ge=1, le=limits.MAX_STEPS)

    @model_validator(mode="after")
    def _order(self) -> StepsRange:
        if self.min > self.max:
            raise ValueError(f"steps: min {self.min} is above max {self.max}")
        return self


class Target(_In):
    model_size: float = Field(gt=0, le=limits.MAX_MODEL_SIZE,
                              description="parameters; may exceed the ladder")
    steps: int | None = Field(None, ge=1, le=limits.MAX_STEPS, description="default: steps.max")


class StrategyConfig(_In):
    name: StrategyName = "mfms-bo"
    options: dict[str, Any] = Field(default_factory=dict)


class StudyCreate(_In):
    name: str = _NAME
    domains: list[str] = Field(min_length=2, max_length=limits.MAX_DOMAINS)
    objective_weights: dict[str, Annotated[float, Field(le=1e6)]] | None = Field(
        None, description="relative weight of each domain's loss (at most 1e6 each, so the "
                          "objective stays finite); default: the uniform average")
    mixture_bounds: dict[str, tuple[float, float]] | None = None
    model_sizes: list[float] = Field(min_length=1, max_length=64)
    steps: StepsRange
    target: Target
    checkpoints: int = Field(8, ge=1, le=limits.MAX_CHECKPOINTS)
    budget: Budget | None = None
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    seed: int | None = Field(None, ge=0, le=2**31 - 1,
                             description="seeds the strategy; random when absent")
    candidates: list[dict[str, float]] | None = Field(
        None, max_length=100_000, description="optional finite pool of mixtures to pick from")
    loss_domains: list[str] | None = Field(
        None, max_length=limits.MAX_DOMAINS,
        description="validation sets losses are reported on, when not the mixture domains")
    online: dict[str, Any] | None = _ONLINE
    loss_bounds: LossBounds = Field(
        default_factory=LossBounds,
        description="reported losses must lie strictly inside (min, max); default (0, 1e4)")
    requires: WorkerRequirements | None = Field(
        None, description="only workers declaring this backend and these labels get the "
                          "study's trials; default: any worker with the study's domains")
    pause_after_failures: int | None = Field(
        None, ge=0, le=10_000,
        description="pause the study once this many trials in a row failed before reporting "
                    "a loss (a misconfigured worker); 0 never pauses; default: the server's "
                    "MFMS_PAUSE_AFTER_FAILURES")

    @field_validator("name")
    @classmethod
    def _strip(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("name: must not be blank")
        return v

    @field_validator("domains", "loss_domains")
    @classmethod
    def _names(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        for d in v:
            if not d.strip() or len(d) > 200:
                raise ValueError(f"domain names must be 1-200 non-blank characters: {d!r}")
        if len(set(v)) != len(v):
            raise ValueError("domain names must be unique")
        return v


class StudyPublic(BaseModel):
    id: int
    name: str
    state: str
    config: dict[str, Any]
    created_at: datetime
    counts: dict[str, int] = Field(description="trials per state")
    cost_spent: float
    trials_run: int = Field(description="trials counted against budget.trials")
    last_proposal_error: str | None = Field(
        None, description="why the strategy's latest proposal failed (a random proposal ran "
                          "instead); null once a proposal succeeds again")
    last_proposal_error_at: datetime | None = None
    proposal_failures: int = Field(0, description="strategy proposals that failed over the "
                                                  "study's life")
    pause_reason: str | None = Field(
        None, description="why the service paused the study (its trials kept failing before "
                          "reporting any loss); null when a person paused it or it runs")
    paused_at: datetime | None = None


class StudyList(BaseModel):
    studies: list[StudyPublic]


class Capabilities(_In):
    max_model_size: float | None = Field(None, gt=0, le=limits.MAX_MODEL_SIZE)
    domains: list[str] | None = Field(
        None, max_length=limits.MAX_DOMAINS,
        description="the domains this worker can train on or simulate: it is only given "
                    "trials of studies whose domains (and loss domains) it has; omitted: "
                    "any study")
    exact_domains: bool = Field(
        False, description="only studies whose domains are exactly `domains` (a simulator "
                           "knows one problem's losses, not a subset's)")
    backend: str | None = Field(None, pattern=_LABEL,
                                description="the backend this worker runs, matched against "
                                            "a study's `requires.backend`")
    labels: list[_Label] | None = Field(None, max_length=32,
                                        description="matched against a study's "
                                                    "`requires.labels`")


class NextTrialRequest(_In):
    worker_id: str = _NAME
    study_id: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    capabilities: Capabilities | None = None


class TrialAssignment(BaseModel):
    trial_id: int
    study_id: int
    mixture: dict[str, float]
    model_size: float
    steps: int
    checkpoints: list[int]
    lease_seconds: float
    lease_expires_at: datetime
    attempt: int
    loss_domains: list[str] = Field(description="names the measurements' losses may use")
    online: dict[str, Any] | None = Field(
        None, description="in-run mixing spec: the trial's override, else the study's")


class HeartbeatRequest(_In):
    worker_id: str = _HOLDER


class HeartbeatResponse(BaseModel):
    trial_id: int
    lease_expires_at: datetime
    lease_seconds: float
    study_state: str
    should_stop: bool = Field(description="the study was stopped: the worker may abort")


class MeasurementIn(_In):
    step: int = Field(ge=0, le=limits.MAX_STEPS)
    losses: dict[str, float] = Field(min_length=1, max_length=limits.MAX_DOMAINS)
    cost: float | None = Field(None, ge=0, le=limits.MAX_COST, description="GPU-seconds so far")
    worker_id: str = _HOLDER
    proportions: dict[str, float] | None = Field(
        None, max_length=limits.MAX_DOMAINS,
        description="the mixture the run trained on at this step (online mixing)")


class MeasurementPublic(BaseModel):
    step: int
    losses: dict[str, float]
    objective: float | None
    cost: float | None
    created_at: datetime
    proportions: dict[str, float] | None = None


# Most checkpoints one batch request carries (a worker's backlog; the body limit applies too).
MAX_MEASUREMENT_BATCH = 1000


class MeasurementItem(_In):
    """One checkpoint of a batch: a :class:`MeasurementIn` without the worker id, which
    the batch gives once."""

    step: int = Field(ge=0, le=limits.MAX_STEPS)
    losses: dict[str, float] = Field(min_length=1, max_length=limits.MAX_DOMAINS)
    cost: float | None = Field(None, ge=0, le=limits.MAX_COST, description="GPU-seconds so far")
    proportions: dict[str, float] | None = Field(
        None, max_length=limits.MAX_DOMAINS,
        description="the mixture the run trained on at this step (online mixing)")


class MeasurementBatchIn(_In):
    """``POST /trials/{id}/measurements/batch``: several checkpoints of one trial, recorded
    in order and all or nothing, each checked as ``POST /trials/{id}/measurements`` checks
    one; a refused item is named by its index (``measurements[2].losses: ...``)."""

    measurements: list[MeasurementItem] = Field(min_length=1,
                                                max_length=MAX_MEASUREMENT_BATCH)
    worker_id: str = _HOLDER


class MeasurementBatchPublic(BaseModel):
    """The batch as stored, in the order sent; ``created`` counts the new ones (the rest
    were replays of recorded steps)."""

    measurements: list[MeasurementPublic]
    created: int


class OnlineSummary(_In):
    """Where an online-mixed run ended and what it trained on on average; each a mixture
    over the study's domains."""

    final_proportions: dict[str, float] | None = Field(None, max_length=limits.MAX_DOMAINS)
    average_proportions: dict[str, float] | None = Field(None, max_length=limits.MAX_DOMAINS)


class CompleteRequest(_In):
    cost: float = Field(ge=0, le=limits.MAX_COST, description="GPU-seconds the trial cost")
    losses: dict[str, float] | None = Field(None, description="final losses at `steps`")
    worker_id: str = _HOLDER
    online: OnlineSummary | None = Field(
        None, description="summary of an online-mixed run: final_proportions, "
                          "average_proportions")


class FailRequest(_In):
    reason: str = Field(min_length=1, max_length=20_000)
    retryable: bool = Field(False, description="re-queue the trial if attempts remain")
    worker_id: str = _HOLDER
    cost: float | None = Field(None, ge=0, le=limits.MAX_COST)


class _ImportedMeasurement(_In):
    step: int = Field(ge=0, le=limits.MAX_STEPS)
    losses: dict[str, float] = Field(min_length=1, max_length=limits.MAX_DOMAINS)
    cost: float | None = Field(None, ge=0, le=limits.MAX_COST)


class TrialEnqueue(_In):
    """A trial chosen by a person or imported from an earlier sweep (with its results)."""

    mixture: dict[str, float]
    model_size: float = Field(gt=0, le=limits.MAX_MODEL_SIZE)
    steps: int = Field(ge=1, le=limits.MAX_STEPS)
    checkpoints: list[int] | None = Field(None, max_length=limits.MAX_CHECKPOINTS)
    measurements: list[_ImportedMeasurement] | None = Field(None, max_length=1000)
    cost: float | None = Field(None, ge=0, le=limits.MAX_COST)
    metadata: dict[str, Any] | None = None
    online: dict[str, Any] | None = Field(
        None, description="in-run mixing for this trial, overriding the study's; stored in "
                          "its metadata as 'online'")


class TrialPublic(BaseModel):
    id: int
    study_id: int
    state: str
    source: str
    mixture: dict[str, float]
    model_size: float
    steps: int
    checkpoints: list[int]
    attempt: int
    retry_of: int | None
    worker_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    lease_expires_at: datetime | None
    cost: float | None
    fail_reason: str | None
    objective: float | None = Field(description="objective at the last reported step")
    metadata: dict[str, Any]
    measurements: list[MeasurementPublic]
    online_result: dict[str, Any] | None = Field(
        None, description="the online-mixing summary the worker completed the trial with")


TRIALS_PAGE_LIMIT = 1000  # GET /studies/{id}/trials: the default and largest page


class TrialList(BaseModel):
    """One page of a study's trials, in id order."""

    trials: list[TrialPublic]
    next_cursor: str | None = Field(
        None, description="opaque: pass as `cursor` for the next page; null on the last page")


class RecommendationPublic(BaseModel):
    study_id: int
    mixture: dict[str, float]
    predicted_objective: float | None
    interval: tuple[float, float] | None = Field(description="90% credible interval")
    model_size: float
    steps: int
    strategy: str
    trials_used: int


class PredictRequest(_In):
    mixtures: list[dict[str, float]] = Field(min_length=1, max_length=1000)
    model_size: float | None = Field(None, gt=0, le=limits.MAX_MODEL_SIZE,
                                     description="default: target")
    steps: int | None = Field(None, ge=1, le=limits.MAX_STEPS, description="default: target steps")


class Prediction(BaseModel):
    mixture: dict[str, float]
    predicted_objective: float
    interval: tuple[float, float]


class PredictResponse(BaseModel):
    model_size: float
    steps: int
    predictions: list[Prediction]
    model: str = Field("", description="which model answered: the study's own strategy, or "
                                       "(for a strategy without a surrogate) mfms-bo with "
                                       "default options")


class Health(BaseModel):
    status: str
    database: str
    version: str


class FieldError(BaseModel):
    field: str = Field(description="the offending field, e.g. steps.max or path.study_id")
    message: str
    type: str


class ErrorBody(BaseModel):
    """Every error answer (4xx, 503): ``detail`` says why, naming the offending field; a
    malformed request (422) also lists each failing field in ``errors``."""

    detail: str
    errors: list[FieldError] | None = None
