"""Typed Python client of the REST API (httpx), shared by workers and orchestrators.

Method names follow the REST contract (``next_trial`` is ``POST /next-trial``,
``post_measurement`` is ``POST /trials/{id}/measurements``...) and return the same pydantic
models the server validated. Errors are raised as :class:`APIError` subclasses carrying the
server's message, which names the offending field::

    from mfms_client.client import MFMSClient
    client = MFMSClient("http://mfms:8000", token="...")
    study = client.create_study(name="pile-7", domains=[...], model_sizes=[...],
                                steps={"min": 1000, "max": 20000},
                                target={"model_size": 1e9})
    rec = client.recommendation(study.id)

Only httpx, pydantic and the library are imported: a worker needs neither FastAPI nor
SQLAlchemy.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from mfms_client.schemas import (
    TRIALS_PAGE_LIMIT,
    Health,
    HeartbeatResponse,
    MeasurementBatchPublic,
    MeasurementPublic,
    PredictResponse,
    RecommendationPublic,
    StudyList,
    StudyPublic,
    TrialAssignment,
    TrialList,
    TrialPublic,
)

__all__ = ["MFMSClient", "APIError", "NotFoundError", "ConflictError", "InvalidRequestError",
           "AuthError", "ForbiddenError", "ServerUnavailable", "ServerUnreachable"]

M = TypeVar("M", bound=BaseModel)


class APIError(Exception):
    """The server refused a request; ``status`` and ``detail`` are its answer."""

    def __init__(self, status: int, detail: str, method: str = "", path: str = "") -> None:
        super().__init__(f"{method} {path} -> {status}: {detail}".strip())
        self.status = status
        self.detail = detail


class InvalidRequestError(APIError):
    """422/400/413: the request itself is wrong (the detail names the field)."""


class AuthError(APIError):
    """401: missing or wrong token."""


class ForbiddenError(AuthError):
    """403: a valid token without the scope the route needs (the worker token on an admin
    route such as creating or stopping a study)."""


class NotFoundError(APIError):
    """404: unknown study or trial (or nothing to recommend yet)."""


class ConflictError(APIError):
    """409: the resource's state forbids this (e.g. the trial's lease expired)."""


class ServerUnavailable(APIError):
    """503 or 5xx: the server or its database is down; retrying later is right."""


class ServerUnreachable(Exception):
    """No HTTP answer at all (connection refused, timeout, DNS)."""


def _error(resp: httpx.Response) -> APIError:
    try:
        detail = str(resp.json().get("detail", resp.text))
    except ValueError:
        detail = resp.text[:500]
    cls: type[APIError]
    if resp.status_code == 401:
        cls = AuthError
    elif resp.status_code == 403:
        cls = ForbiddenError
    elif resp.status_code == 404:
        cls = NotFoundError
    elif resp.status_code == 409:
        cls = ConflictError
    elif resp.status_code >= 500:
        cls = ServerUnavailable
    else:
        cls = InvalidRequestError
    return cls(resp.status_code, detail, resp.request.method, resp.request.url.path)


class MFMSClient:
    """Client of one mfms-bo server.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000``.
        token: a bearer token when the server has them: the worker token
            (``MFMS_WORKER_TOKEN``) is enough for workers, orchestrators need the admin
            token (``MFMS_ADMIN_TOKEN``, or the older ``MFMS_API_TOKEN``).
        timeout: seconds per request (``/next-trial`` may wait for a proposal).
        retries: extra attempts for requests that are safe to repeat (reads, heartbeats,
            measurements - idempotent on (trial, step) - and completes), on transport
            errors and 5xx, with exponential backoff.
        http: an existing ``httpx.Client`` (tests pass FastAPI's ``TestClient``).

    Every write on a trial (heartbeat, measurement, complete, fail) must name the worker
    holding its lease; when ``worker_id`` is not given, the client sends the one it claimed
    the trial with (it remembers its last few thousand claims).
    """

    _MAX_LEASES = 4096

    def __init__(self, base_url: str = "http://127.0.0.1:8000", token: str | None = None,
                 timeout: float = 60.0, retries: int = 0,
                 http: httpx.Client | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = http or httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout)
        self._headers = headers
        self.retries = int(retries)
        self._leases: dict[int, str] = {}  # trial id -> the worker id it was claimed with

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> MFMSClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport -------------------------------------------------------------------------
    def _request(self, method: str, path: str, *, json: Any = None,
                 params: Mapping[str, Any] | None = None, idempotent: bool = False
                 ) -> httpx.Response:
        attempts = 1 + (self.retries if idempotent or method == "GET" else 0)
        delay = 0.5
        for i in range(attempts):
            try:
                resp = self._http.request(method, path, json=json, params=params,
                                          headers=self._headers)
            except httpx.TransportError as exc:
                if i == attempts - 1:
                    raise ServerUnreachable(f"{method} {path}: {exc!r}") from exc
            else:
                if resp.status_code < 400 or resp.status_code == 204:
                    return resp
                if resp.status_code < 500 or i == attempts - 1:
                    raise _error(resp)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable")

    def _get(self, path: str, model: type[M], params: Mapping[str, Any] | None = None) -> M:
        return model.model_validate(self._request("GET", path, params=params).json())

    def _post(self, path: str, model: type[M], body: Any = None, idempotent: bool = False
              ) -> M:
        return model.model_validate(
            self._request("POST", path, json=body, idempotent=idempotent).json())

    # -- studies ---------------------------------------------------------------------------
    def create_study(self, study: Mapping[str, Any] | None = None, **fields: Any
                     ) -> StudyPublic:
        """``POST /studies`` with the contract's fields (a dict, keywords, or both)."""
        return self._post("/studies", StudyPublic, {**(study or {}), **fields})

    def list_studies(self) -> list[StudyPublic]:
        return self._get("/studies", StudyList).studies

    def get_study(self, study_id: int) -> StudyPublic:
        return self._get(f"/studies/{study_id}", StudyPublic)

    def pause_study(self, study_id: int) -> StudyPublic:
        return self._post(f"/studies/{study_id}/pause", StudyPublic, idempotent=True)

    def resume_study(self, study_id: int) -> StudyPublic:
        return self._post(f"/studies/{study_id}/resume", StudyPublic, idempotent=True)

    def stop_study(self, study_id: int) -> StudyPublic:
        return self._post(f"/studies/{study_id}/stop", StudyPublic, idempotent=True)

    def update_budget(self, study_id: int, trials: int | None = None,
                      cost: float | None = None) -> StudyPublic:
        """Replace the study's budget (None lifts that limit); a study its budget completed
        runs again when the new one leaves room."""
        return self.update_study(study_id, {"budget": {"trials": trials, "cost": cost}})

    def update_study(self, study_id: int, changes: Mapping[str, Any]) -> StudyPublic:
        """``PATCH /studies/{id}`` with any of ``budget`` and ``pause_after_failures``."""
        return StudyPublic.model_validate(
            self._request("PATCH", f"/studies/{study_id}", json=dict(changes),
                          idempotent=True).json())

    def enqueue_trial(self, study_id: int, mixture: Mapping[str, float], model_size: float,
                      steps: int, checkpoints: Sequence[int] | None = None,
                      measurements: Sequence[Mapping[str, Any]] | None = None,
                      cost: float | None = None, metadata: Mapping[str, Any] | None = None,
                      online: Mapping[str, Any] | None = None) -> TrialPublic:
        """``POST /studies/{id}/trials``: queue a trial, or import one with its results.
        ``online`` overrides the study's in-run mixing spec for this trial."""
        body: dict[str, Any] = {"mixture": dict(mixture), "model_size": model_size,
                                "steps": steps}
        for key, value in (("checkpoints", checkpoints), ("measurements", measurements),
                           ("cost", cost), ("metadata", metadata), ("online", online)):
            if value is not None:
                body[key] = (list(value) if key in ("checkpoints", "measurements")
                             else dict(value) if key in ("metadata", "online") else value)
        return self._post(f"/studies/{study_id}/trials", TrialPublic, body)

    def list_trials(self, study_id: int, state: str | Sequence[str] | None = None,
                    page_size: int = TRIALS_PAGE_LIMIT) -> list[TrialPublic]:
        """Every trial of the study (optionally in some states), in id order, fetched a page
        at a time by following ``next_cursor``: no response holds a whole large study."""
        out: list[TrialPublic] = []
        params: dict[str, Any] = {"limit": page_size}
        if state:
            params["state"] = state if isinstance(state, str) else ",".join(state)
        while True:
            page = self._get(f"/studies/{study_id}/trials", TrialList, dict(params))
            out += page.trials
            if page.next_cursor is None:
                return out
            params["cursor"] = page.next_cursor

    def get_trial(self, trial_id: int) -> TrialPublic:
        return self._get(f"/trials/{trial_id}", TrialPublic)

    def recommendation(self, study_id: int) -> RecommendationPublic:
        return self._get(f"/studies/{study_id}/recommendation", RecommendationPublic)

    def predict(self, study_id: int, mixtures: Sequence[Mapping[str, float]],
                model_size: float | None = None, steps: int | None = None
                ) -> PredictResponse:
        body: dict[str, Any] = {"mixtures": [dict(m) for m in mixtures]}
        if model_size is not None:
            body["model_size"] = model_size
        if steps is not None:
            body["steps"] = steps
        return self._post(f"/studies/{study_id}/predict", PredictResponse, body,
                          idempotent=True)

    # -- the worker protocol ---------------------------------------------------------------
    def next_trial(self, worker_id: str, study_id: int | None = None,
                   max_model_size: float | None = None,
                   domains: Sequence[str] | None = None, *, exact_domains: bool = False,
                   backend: str | None = None, labels: Sequence[str] | None = None
                   ) -> TrialAssignment | None:
        """``POST /next-trial``: a leased trial, or None when there is no work now that
        this worker matches (its domains, backend and labels; see ``Capabilities``)."""
        body: dict[str, Any] = {"worker_id": worker_id}
        if study_id is not None:
            body["study_id"] = study_id
        caps: dict[str, Any] = {}
        if max_model_size is not None:
            caps["max_model_size"] = max_model_size
        if domains is not None:
            caps["domains"] = list(domains)
        if exact_domains:
            caps["exact_domains"] = True
        if backend is not None:
            caps["backend"] = backend
        if labels:
            caps["labels"] = list(labels)
        if caps:
            body["capabilities"] = caps
        resp = self._request("POST", "/next-trial", json=body)
        if resp.status_code == 204:
            return None
        out = TrialAssignment.model_validate(resp.json())
        self._leases[out.trial_id] = worker_id
        while len(self._leases) > self._MAX_LEASES:
            del self._leases[next(iter(self._leases))]
        return out

    def _holder(self, trial_id: int, worker_id: str | None) -> dict[str, str]:
        """The lease proof a trial write sends: ``worker_id``, else the id this client
        claimed the trial with (nothing when neither is known: the server answers 422)."""
        holder = worker_id or self._leases.get(trial_id)
        return {"worker_id": holder} if holder else {}

    def heartbeat(self, trial_id: int, worker_id: str | None = None) -> HeartbeatResponse:
        return self._post(f"/trials/{trial_id}/heartbeat", HeartbeatResponse,
                          self._holder(trial_id, worker_id), idempotent=True)

    def post_measurement(self, trial_id: int, step: int, losses: Mapping[str, float],
                         cost: float | None = None, worker_id: str | None = None, *,
                         proportions: Mapping[str, float] | None = None
                         ) -> MeasurementPublic:
        """``POST /trials/{id}/measurements``; ``proportions`` is the mixture an online-mixed
        run trained on at ``step`` (sent only when given, so older servers still work)."""
        body: dict[str, Any] = {"step": int(step), "losses": dict(losses),
                                **self._holder(trial_id, worker_id)}
        if cost is not None:
            body["cost"] = cost
        if proportions is not None:
            body["proportions"] = dict(proportions)
        return self._post(f"/trials/{trial_id}/measurements", MeasurementPublic, body,
                          idempotent=True)

    def post_measurements(self, trial_id: int, items: Sequence[Mapping[str, Any]],
                          worker_id: str | None = None) -> MeasurementBatchPublic:
        """``POST /trials/{id}/measurements/batch``: several checkpoints in one request,
        each ``{"step", "losses"[, "cost", "proportions"]}``; all are recorded or none (a
        refusal names the item, ``measurements[i]``). Idempotent like the single post."""
        body = {"measurements": [
            {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in m.items()
             if v is not None} for m in items], **self._holder(trial_id, worker_id)}
        return self._post(f"/trials/{trial_id}/measurements/batch", MeasurementBatchPublic,
                          body, idempotent=True)

    def complete_trial(self, trial_id: int, cost: float,
                       losses: Mapping[str, float] | None = None,
                       worker_id: str | None = None, *,
                       online: Mapping[str, Any] | None = None) -> TrialPublic:
        """``POST /trials/{id}/complete``; ``online`` is an online-mixed run's summary
        (``final_proportions``, ``average_proportions``), sent only when given."""
        body: dict[str, Any] = {"cost": cost, **self._holder(trial_id, worker_id)}
        if losses is not None:
            body["losses"] = dict(losses)
        if online is not None:
            body["online"] = {k: dict(v) if isinstance(v, Mapping) else v
                              for k, v in online.items()}
        return self._post(f"/trials/{trial_id}/complete", TrialPublic, body, idempotent=True)

    def fail_trial(self, trial_id: int, reason: str, retryable: bool = False,
                   worker_id: str | None = None, cost: float | None = None) -> TrialPublic:
        body: dict[str, Any] = {"reason": reason, "retryable": retryable,
                                **self._holder(trial_id, worker_id)}
        if cost is not None:
            body["cost"] = cost
        return self._post(f"/trials/{trial_id}/fail", TrialPublic, body)

    def healthz(self) -> Health:
        return self._get("/healthz", Health)
