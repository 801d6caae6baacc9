"""``GET /healthz``: the process is up and its database answers."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from mfms_client.schemas import Health
from server.api.deps import DbDep

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz(db: DbDep) -> Health:
    from importlib.metadata import version

    with db.session() as s:
        s.execute(text("SELECT 1"))
    return Health(status="ok", database=db.dialect, version=version("mfms-bo"))
