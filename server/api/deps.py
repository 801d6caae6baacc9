"""Dependencies shared by the routes: services from ``app.state`` and bearer-token auth."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from server.config import Settings
from server.db import Database
from server.errors import Unauthorized
from server.insights import Insights
from server.maintenance import Maintainer
from server.proposer import Proposer

__all__ = ["DbDep", "SettingsDep", "ProposerDep", "InsightsDep", "MaintainerDep",
           "require_write", "require_read", "check_token"]


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


DbDep = Annotated[Database, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ProposerDep = Annotated[Proposer, Depends(get_proposer)]
InsightsDep = Annotated[Insights, Depends(get_insights)]
MaintainerDep = Annotated[Maintainer, Depends(get_maintainer)]


def check_token(expected: str | None, authorization: str | None) -> None:
    """Raise 401 unless ``authorization`` is ``Bearer <expected>`` (constant-time compare)."""
    if expected is None:
        return
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise Unauthorized("invalid bearer token")


def require_write(request: Request) -> None:
    check_token(request.app.state.settings.token, request.headers.get("authorization"))


def require_read(request: Request) -> None:
    settings: Settings = request.app.state.settings
    if settings.protect_reads:
        check_token(settings.token, request.headers.get("authorization"))


WriteAuth = Depends(require_write)
ReadAuth = Depends(require_read)
