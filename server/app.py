"""The FastAPI application: ``create_app(settings)`` wires config, database and services.

Errors become JSON ``{"detail": "..."}`` whose message names the offending field:
service errors carry their own status (404, 409, 401, 503), the library's validation
errors are 422, malformed bodies are 422 with every failing field listed, oversized
bodies 413, bodies that do not arrive in time 408. Nothing is written when a request fails
(one transaction per write).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mfms_bo import limits
from mfms_bo.errors import MFMSError
from mfms_client.schemas import ErrorBody, error_field
from server import dashboard, migrate
from server.api.routes import health, metrics, studies, trials
from server.api.worker_fast_path import (
    WorkerFastPath,
    library_error_response,
    service_error_response,
)
from server.checks import too_deep_field
from server.config import Settings
from server.db import Database
from server.errors import ServiceError
from server.insights import Insights
from server.maintenance import Maintainer
from server.observability import Metrics, ObservabilityMiddleware
from server.proposer import Proposer
from server.study_cache import StudyCache

__all__ = ["create_app"]

log = logging.getLogger("mfms.server")


class BodySizeLimit:
    """Refuse request bodies over ``limit`` bytes with 413, counting streamed chunks too
    (a missing or lying Content-Length cannot exhaust memory). ``larger`` maps exact paths
    to their own limit: a study export posted to ``/studies/import`` is ~2 kB per trial, so
    the limit that keeps every other body small would refuse any study of a few hundred."""

    def __init__(self, app: ASGIApp, limit: int, larger: dict[str, int] | None = None) -> None:
        self.app = app
        self.default_limit = limit
        self.larger = dict(larger or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope.get("path", ""), self.default_limit)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit)
            return
        seen = 0
        too_large = False

        async def limited() -> Message:
            nonlocal seen, too_large
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    too_large = True
                    raise _BodyTooLarge()
            return msg

        async def checked_send(msg: Message) -> None:
            # FastAPI turns any error while reading the body into its own 400 ("error
            # parsing the body"); an overlong body still gets the 413 below instead.
            if not too_large:
                await send(msg)

        try:
            await self.app(scope, limited, checked_send)
        except _BodyTooLarge:
            pass
        if too_large:
            await _too_large(send, limit)


class _BodyTooLarge(Exception):
    pass


class BodyReadTimeout:
    """Answer 408 and close the connection when a request body is not received in full
    within ``seconds`` of the first read: a Content-Length larger than what the client
    sends (or a stalled chunked upload) would otherwise hold a request, and its connection,
    forever - uvicorn has no body timeout of its own."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        done = timed_out = started = False

        async def timed() -> Message:
            nonlocal deadline, done, timed_out
            if done:  # the body is in; later reads wait for a disconnect, unbounded
                return await receive()
            if deadline is None:
                deadline = loop.time() + self.seconds
            try:
                msg = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.0))
            except TimeoutError:
                timed_out = True
                raise _BodyTimedOut() from None
            if msg["type"] != "http.request" or not msg.get("more_body", False):
                done = True
            return msg

        async def checked_send(msg: Message) -> None:
            nonlocal started
            if not timed_out:  # FastAPI turns the error into its own 400; ours goes instead
                started = True
                await send(msg)

        try:
            await self.app(scope, timed, checked_send)
        except _BodyTimedOut:
            if started:
                raise
        if timed_out and not started:
            body = JSONResponse({"detail": f"request body not received within "
                                           f"{self.seconds:g} s"}, 408).body
            await send({"type": "http.response.start", "status": 408,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode()),
                                    (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})


class _BodyTimedOut(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    body = JSONResponse({"detail": f"request body larger than {limit} bytes"}, 413).body
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# Documents the error bodies the handlers below really send (FastAPI's default 422 schema,
# a list of pydantic errors, is not what this server answers).
_ERRORS: dict[int | str, dict] = {
    "4XX": {"model": ErrorBody, "description": "refused: `detail` says why and names the "
            "field; a malformed request (422) lists every failing field in `errors`"},
    503: {"model": ErrorBody, "description": "the database is unavailable; retry later",
          "headers": {"Retry-After": {"description": "seconds to wait",
                                      "schema": {"type": "integer"}}}},
}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    db = Database(settings.database_url, settings.pool_size,
                  timeout=settings.database_timeout_seconds)
    study_cache = StudyCache()
    app_metrics = Metrics(db, settings)  # this app's own registry (create_app may run often)
    proposer = Proposer(db, settings, study_cache, metrics=app_metrics)
    maintainer = Maintainer(db, proposer, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.auto_upgrade or _empty_sqlite(db):
            migrate.upgrade(db.url)
        _check_schema(db)
        if settings.background:
            maintainer.start()
        log.info("mfms server ready on %s (%s)", db.dialect, _safe_url(db.url))
        try:
            yield
        finally:
            maintainer.stop()
            db.dispose()

    # FastAPIOffline: /docs and /redoc with Swagger UI and ReDoc served from the package,
    # so the API reference works where the server has no internet (a CDN would be blank).
    app = FastAPIOffline(title="mfms-bo", version="0.1.0", lifespan=lifespan,
                         description="Bayesian optimisation of pretraining data mixtures "
                                     "across model sizes and training lengths.",
                         responses=_ERRORS)
    app.state.settings = settings
    app.state.db = db
    app.state.studies = study_cache
    app.state.proposer = proposer
    app.state.maintainer = maintainer
    app.state.insights = Insights(db, study_cache)
    app.state.metrics = app_metrics

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return service_error_response(exc)

    @app.exception_handler(MFMSError)
    async def _library_error(_: Request, exc: MFMSError) -> JSONResponse:
        return library_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for e in exc.errors():
            if e.get("type") == "json_invalid":  # loc is (body, char position)
                loc = e.get("loc", ())
                errors.append({"field": "body", "type": "json_invalid", "message":
                               f"malformed JSON near character {loc[-1] if loc else '?'}"})
                continue
            msg = str(e.get("msg", "")).removeprefix("Value error, ")
            errors.append({"field": error_field(e) or "body", "message": msg,
                           "type": str(e.get("type", ""))})
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid request"
        return JSONResponse({"detail": detail, "errors": errors}, 422)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        # FastAPI answers 400 "error parsing the body", naming nothing, when the JSON parser
        # recurses too deep (~1000 levels); shallower values get the same 422 from the
        # request models (``StrictInput``), so both name the field.
        if isinstance(exc.__cause__, RecursionError):
            try:
                body = await request.body()  # read and kept by the route that failed
            except RuntimeError:
                body = b""
            field = too_deep_field(body, limits.MAX_NESTING)
            msg = f"nesting deeper than {limits.MAX_NESTING} levels"
            return JSONResponse({"detail": f"{field}: {msg}", "errors": [
                {"field": field, "message": msg, "type": "unstorable_value"}]}, 422)
        return await http_exception_handler(request, exc)

    app.include_router(health.router)
    app.include_router(studies.router)
    app.include_router(trials.router)
    app.include_router(metrics.router)
    app.include_router(dashboard.router)
    # Innermost: the worker protocol's hot routes skip FastAPI's own layers.
    app.add_middleware(WorkerFastPath, fastapi_app=app)
    app.add_middleware(BodySizeLimit, limit=settings.max_body_bytes,
                       larger={"/studies/import": settings.max_import_bytes})
    app.add_middleware(BodyReadTimeout, seconds=settings.body_read_timeout_seconds)
    # Outermost (added last): times and logs every request, 413s included.
    app.add_middleware(ObservabilityMiddleware, metrics=app_metrics, router=app.router)
    return app


def _empty_sqlite(db: Database) -> bool:
    """A SQLite database with no schema yet: the embedded default creates its own tables at
    first start, as Optuna's storage does, so `mfms serve` just works on a new file. A
    PostgreSQL database is shared infrastructure; it keeps the explicit upgrade."""
    return db.dialect == "sqlite" and migrate.current_revision(db.url) is None


def _check_schema(db: Database) -> None:
    head, current = migrate.head_revision(), migrate.current_revision(db.url)
    if current != head:
        raise RuntimeError(
            f"database schema is at {current or 'nothing'}, the server needs {head}: run "
            "`mfms db upgrade` (or start with MFMS_AUTO_UPGRADE=1)")


def _safe_url(url: str) -> str:
    """The URL without its password, for logs."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
