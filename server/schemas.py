"""Request and response bodies of the REST contract (pydantic v2).

Shared by the routes and by :mod:`server.client`, so the client returns exactly what the
server validated. Field names are the public contract: extend, never rename. Requests
forbid unknown fields (a typo such as ``model-size`` is an error, not a silent default) and
non-finite numbers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "Budget", "StepsRange", "Target", "StrategyConfig", "StudyCreate", "StudyPublic",
    "StudyList", "Capabilities", "NextTrialRequest", "TrialAssignment", "HeartbeatRequest",
    "HeartbeatResponse", "MeasurementIn", "MeasurementPublic", "CompleteRequest",
    "FailRequest", "TrialEnqueue", "TrialPublic", "TrialList", "RecommendationPublic",
    "PredictRequest", "Prediction", "PredictResponse", "Health", "StrategyName",
    "OnlineSummary", "ErrorBody", "FieldError",
]

# The library's registry (``mfms_bo.strategies.STRATEGIES``), spelt out so that the client
# needs no torch; a test keeps the two equal.
StrategyName = Literal["mfms-bo", "random", "hyperband", "sf-bo", "mf-bo", "uniform", "screen",
                       "regmix", "tpe", "dehb"]
_NAME = Field(min_length=1, max_length=200)
_MAX_DOMAINS = 1024
# In-run mixing (``mfms_bo.online``): a JSON spec such as {"method": "aioli", "eta": 0.2}.
# Kept as plain JSON here so the client needs no torch; the server validates it with the
# library's ``controller_from_spec`` (the same call the worker makes) and answers 422.
_ONLINE = Field(None, description='in-run mixing for every trial, e.g. {"method": "aioli", '
                                  '"eta": 0.2, "update_steps": 250}; see mfms_bo.online')


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Budget(_In):
    cost: float | None = Field(None, gt=0, le=1e15, description="GPU-seconds")
    trials: int | None = Field(None, gt=0, le=1_000_000)


class StepsRange(_In):
    min: int = Field(ge=1, le=10**9)
    max: int = Field(ge=1, le=10**9)

    @model_validator(mode="after")
    def _order(self) -> StepsRange:
        if self.min > self.max:
            raise ValueError(f"steps: min {self.min} is above max {self.max}")
        return self


class Target(_In):
    model_size: float = Field(gt=0, le=1e13, description="parameters; may exceed the ladder")
    steps: int | None = Field(None, ge=1, le=10**9, description="default: steps.max")


class StrategyConfig(_In):
    name: StrategyName = "mfms-bo"
    options: dict[str, Any] = Field(default_factory=dict)


class StudyCreate(_In):
    name: str = _NAME
    domains: list[str] = Field(min_length=2, max_length=_MAX_DOMAINS)
    objective_weights: dict[str, float] | None = None
    mixture_bounds: dict[str, tuple[float, float]] | None = None
    model_sizes: list[float] = Field(min_length=1, max_length=64)
    steps: StepsRange
    target: Target
    checkpoints: int = Field(8, ge=1, le=1000)
    budget: Budget | None = None
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    seed: int | None = Field(None, ge=0, le=2**31 - 1,
                             description="seeds the strategy; random when absent")
    candidates: list[dict[str, float]] | None = Field(
        None, max_length=100_000, description="optional finite pool of mixtures to pick from")
    loss_domains: list[str] | None = Field(
        None, max_length=_MAX_DOMAINS,
        description="validation sets losses are reported on, when not the mixture domains")
    online: dict[str, Any] | None = _ONLINE

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


class StudyList(BaseModel):
    studies: list[StudyPublic]


class Capabilities(_In):
    max_model_size: float | None = Field(None, gt=0, le=1e13)


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
    worker_id: str | None = Field(None, max_length=200)


class HeartbeatResponse(BaseModel):
    trial_id: int
    lease_expires_at: datetime
    lease_seconds: float
    study_state: str
    should_stop: bool = Field(description="the study was stopped: the worker may abort")


class MeasurementIn(_In):
    step: int = Field(ge=0, le=10**9)
    losses: dict[str, float] = Field(min_length=1, max_length=_MAX_DOMAINS)
    cost: float | None = Field(None, ge=0, le=1e15, description="GPU-seconds so far")
    worker_id: str | None = Field(None, max_length=200)
    proportions: dict[str, float] | None = Field(
        None, max_length=_MAX_DOMAINS,
        description="the mixture the run trained on at this step (online mixing)")


class MeasurementPublic(BaseModel):
    step: int
    losses: dict[str, float]
    objective: float | None
    cost: float | None
    created_at: datetime
    proportions: dict[str, float] | None = None


class OnlineSummary(_In):
    """Where an online-mixed run ended and what it trained on on average; each a mixture
    over the study's domains."""

    final_proportions: dict[str, float] | None = Field(None, max_length=_MAX_DOMAINS)
    average_proportions: dict[str, float] | None = Field(None, max_length=_MAX_DOMAINS)


class CompleteRequest(_In):
    cost: float = Field(ge=0, le=1e15, description="GPU-seconds the trial cost")
    losses: dict[str, float] | None = Field(None, description="final losses at `steps`")
    worker_id: str | None = Field(None, max_length=200)
    online: OnlineSummary | None = Field(
        None, description="summary of an online-mixed run: final_proportions, "
                          "average_proportions")


class FailRequest(_In):
    reason: str = Field(min_length=1, max_length=20_000)
    retryable: bool = Field(False, description="re-queue the trial if attempts remain")
    worker_id: str | None = Field(None, max_length=200)
    cost: float | None = Field(None, ge=0, le=1e15)


class _ImportedMeasurement(_In):
    step: int = Field(ge=0, le=10**9)
    losses: dict[str, float] = Field(min_length=1, max_length=_MAX_DOMAINS)
    cost: float | None = Field(None, ge=0, le=1e15)


class TrialEnqueue(_In):
    """A trial chosen by a person or imported from an earlier sweep (with its results)."""

    mixture: dict[str, float]
    model_size: float = Field(gt=0, le=1e13)
    steps: int = Field(ge=1, le=10**9)
    checkpoints: list[int] | None = Field(None, max_length=1000)
    measurements: list[_ImportedMeasurement] | None = Field(None, max_length=1000)
    cost: float | None = Field(None, ge=0, le=1e15)
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


class TrialList(BaseModel):
    trials: list[TrialPublic]


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
    model_size: float | None = Field(None, gt=0, le=1e13, description="default: target")
    steps: int | None = Field(None, ge=1, le=10**9, description="default: target steps")


class Prediction(BaseModel):
    mixture: dict[str, float]
    predicted_objective: float
    interval: tuple[float, float]


class PredictResponse(BaseModel):
    model_size: float
    steps: int
    predictions: list[Prediction]


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
