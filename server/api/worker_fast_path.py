"""The worker protocol's three hot requests served without FastAPI's request machinery.

A GPU fleet sends ``/next-trial``, ``/trials/{id}/measurements`` and ``/trials/{id}/complete``
far more often than anything else, and each does little database work, so FastAPI's
per-request layers (routing, dependency resolution, request and response models built
twice, exception middleware) cost about as much server CPU as the request's own SQL
(``bench/README.md``, "Service load"). :class:`WorkerFastPath` sits innermost among the
app's middlewares, so body limits, the body timeout, metrics and the access log apply as
before, and for those three routes it:

1. checks the bearer token as ``WorkerAuth`` does;
2. parses the JSON body into the route's own request model;
3. runs the route's own function in the thread pool, as FastAPI would;
4. answers with the route's response model, and maps service and library errors exactly
   as the app's exception handlers do.

Anything it cannot take as is (another route, a body that fails validation, an id out of
range, a content type other than JSON) goes to the normal FastAPI path, with the body
already read handed on, so every refusal keeps its usual 422 listing each failing field.
The routes' logic lives in one place, ``server/api/routes/trials.py``; this module only
calls it. ``MFMS_WORKER_FAST_PATH=0`` turns the fast path off.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from fastapi.routing import APIRoute
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mfms_bo.errors import MFMSError
from mfms_client.schemas import CompleteRequest, MeasurementIn, NextTrialRequest
from server.api.deps import MAX_ID, check_scope
from server.api.routes import trials
from server.errors import ServiceError, Unavailable
from server.observability import leaf_routes

__all__ = ["WorkerFastPath", "service_error_response", "library_error_response"]

log = logging.getLogger("mfms.server")


def service_error_response(exc: ServiceError) -> JSONResponse:
    """A refused request as every route answers it: its status, ``{"detail": message}``,
    ``WWW-Authenticate`` on 401 and ``Retry-After`` on 503."""
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    if isinstance(exc, Unavailable):
        headers = {"Retry-After": "5"}
    return JSONResponse({"detail": str(exc)}, exc.status, headers=headers)


def library_error_response(exc: MFMSError) -> JSONResponse:
    """The library's validation errors (a bad mixture, an unknown domain) are 422."""
    return JSONResponse({"detail": str(exc)}, 422)


@dataclass(frozen=True)
class _Route:
    """One hot route: its path pattern, request model and how to call its function."""

    pattern: re.Pattern[str]
    body_model: type[BaseModel]
    call: Callable[[Any, int | None, BaseModel, Response], Any]
    template: str


_ROUTES = (
    _Route(re.compile(r"/next-trial"), NextTrialRequest,
           lambda st, _id, body, resp: trials.next_trial(
               body, resp, st.db, st.settings, st.proposer, st.maintainer),
           "/next-trial"),
    _Route(re.compile(r"/trials/(-?[0-9]+)/measurements"), MeasurementIn,
           lambda st, tid, body, resp: trials.post_measurement(
               tid, body, resp, st.db, st.settings, st.studies),
           "/trials/{trial_id}/measurements"),
    _Route(re.compile(r"/trials/(-?[0-9]+)/complete"), CompleteRequest,
           lambda st, tid, body, resp: trials.complete(
               tid, body, st.db, st.proposer, st.maintainer, st.studies),
           "/trials/{trial_id}/complete"),
)


class WorkerFastPath:
    """ASGI middleware: the three hot worker routes without FastAPI's layers (module doc)."""

    def __init__(self, app: ASGIApp, fastapi_app: Any) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        # The APIRoute objects, so that metrics and logs name the same route templates.
        by_path = {r.path: r for r in leaf_routes(fastapi_app.router) if isinstance(r, APIRoute)}
        self.api_routes = {r.template: by_path.get(r.template) for r in _ROUTES}
        missing = [t for t, r in self.api_routes.items() if r is None]
        if missing:
            raise RuntimeError(f"the fast path's routes {missing} are not in the app")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route, trial_id = self._match(scope)
        if route is None:
            await self.app(scope, receive, send)
            return
        state = self.fastapi_app.state
        headers = Headers(scope=scope)
        scope["route"] = self.api_routes.get(route.template)  # for the metrics and the log
        scope["path_params"] = {"trial_id": trial_id} if trial_id is not None else {}
        try:
            check_scope(state.settings, headers.get("authorization"), "worker")
        except ServiceError as exc:
            await service_error_response(exc)(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:  # the client went away
            return
        parsed = _parse(route.body_model, headers, body)
        if parsed is None:  # let FastAPI refuse it, naming every failing field
            await self.app(scope, _replay(body, receive), send)
            return
        response = Response()
        try:
            result = await anyio.to_thread.run_sync(route.call, state, trial_id, parsed,
                                                    response)
        except ServiceError as exc:
            await service_error_response(exc)(scope, receive, send)
            return
        except MFMSError as exc:
            await library_error_response(exc)(scope, receive, send)
            return
        except Exception:
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
            await PlainTextResponse("Internal Server Error", 500)(scope, receive, send)
            return
        if isinstance(result, Response):
            await result(scope, receive, send)
            return
        payload = result.model_dump_json().encode()
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})

    def _match(self, scope: Scope) -> tuple[_Route | None, int | None]:
        if (scope["type"] != "http" or scope.get("method") != "POST" or scope.get("root_path")
                or not self.fastapi_app.state.settings.worker_fast_path):
            return None, None
        path = scope.get("path", "")
        for route in _ROUTES:
            m = route.pattern.fullmatch(path)
            if m is None:
                continue
            if not m.groups():
                return route, None
            trial_id = int(m.group(1))
            if not -MAX_ID - 1 <= trial_id <= MAX_ID:
                return None, None  # FastAPI's 422 names the parameter
            return route, trial_id
        return None, None


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body (the outer middlewares bound its size and time), or None
    if the client disconnected first."""
    chunks = []
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return None
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body", False):
            return b"".join(chunks)


def _parse(model: type[BaseModel], headers: Headers, body: bytes) -> BaseModel | None:
    """The body as ``model``, or None for anything FastAPI should answer itself."""
    if headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        return None
    try:
        return model.model_validate(json.loads(body))
    except (ValueError, PydanticValidationError, RecursionError):
        return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives ``body`` once, then whatever the connection sends next (its
    disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
