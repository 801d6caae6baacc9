"""Dependencies shared by the routes: services from ``app.state`` and bearer-token auth.

Two scopes: ``AdminAuth`` (the admin token; every route that changes studies) and
``WorkerAuth`` (the worker token or the admin token; the worker protocol).
"""

from __future__ import annotations

import hmac
from typing import Annotated, Literal

from fastapi import Depends, Path, Request

from server.config import Settings
from server.db import Database
from server.errors import Forbidden, Unauthorized
from server.insights import Insights
from server.maintenance import Maintainer
from server.proposer import Proposer
from server.study_cache import StudyCache

__all__ = ["DbDep", "SettingsDep", "ProposerDep", "InsightsDep", "MaintainerDep", "StudiesDep",
           "StudyId",
           "TrialId", "MAX_ID", "require_admin", "require_worker", "require_read", "check_scope",
           "AdminAuth", "WorkerAuth", "ReadAuth", "Scope"]


def get_db(request: Request) -> Database:
    return request.app.state.db


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_proposer(request: Request) -> Proposer:
    return request.app.state.proposer


def get_insights(request: Request) -> Insights:
    return request.app.state.insights


def get_maintainer(request: Request) -> Maintainer:
    return request.app.state.maintainer


def get_studies(request: Request) -> StudyCache:
    return request.app.state.studies


DbDep = Annotated[Database, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ProposerDep = Annotated[Proposer, Depends(get_proposer)]
InsightsDep = Annotated[Insights, Depends(get_insights)]
MaintainerDep = Annotated[Maintainer, Depends(get_maintainer)]
StudiesDep = Annotated[StudyCache, Depends(get_studies)]

# Ids in URLs: no database stores one beyond 64 bits (SQLite cannot even bind it), so one
# outside that range is a 422 naming the parameter, not a driver error (500).
MAX_ID = 2**63 - 1
StudyId = Annotated[int, Path(ge=-MAX_ID - 1, le=MAX_ID, description="a study's id")]
TrialId = Annotated[int, Path(ge=-MAX_ID - 1, le=MAX_ID, description="a trial's id")]

Scope = Literal["admin", "worker"]


def _bearer(authorization: str | None) -> str:
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    return given.strip()


def check_scope(settings: Settings, authorization: str | None, need: Scope) -> Scope | None:
    """The scope the request's bearer token grants, if it covers ``need``.

    The admin token (``MFMS_ADMIN_TOKEN``, else ``MFMS_API_TOKEN``) covers every route; the
    worker token (``MFMS_WORKER_TOKEN``) covers the worker protocol and reads. Without any
    token configured everything is open (returns None). No or an unknown token is 401; the
    worker token on an admin route is 403. Both comparisons are constant-time and always
    made, so timing does not tell which token was close.
    """
    admin, worker = settings.token, settings.worker_secret
    if admin is None and worker is None:
        return None
    given = _bearer(authorization).encode()
    is_admin = admin is not None and hmac.compare_digest(given, admin.encode())
    is_worker = worker is not None and hmac.compare_digest(given, worker.encode())
    if is_admin:
        return "admin"
    if not is_worker:
        raise Unauthorized("invalid bearer token")
    if need == "admin":
        raise Forbidden("this route needs the admin token (MFMS_ADMIN_TOKEN); the worker "
                        "token only runs trials and reads")
    return "worker"


def require_admin(request: Request) -> None:
    check_scope(request.app.state.settings, request.headers.get("authorization"), "admin")


def require_worker(request: Request) -> None:
    check_scope(request.app.state.settings, request.headers.get("authorization"), "worker")


def require_read(request: Request) -> None:
    settings: Settings = request.app.state.settings
    if settings.protect_reads:
        check_scope(settings, request.headers.get("authorization"), "worker")


AdminAuth = Depends(require_admin)
WorkerAuth = Depends(require_worker)
ReadAuth = Depends(require_read)
