"""Alembic: upgrade/downgrade/upgrade round trip, and the models match the migrations."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from server import migrate
from server.models import Base


def test_round_trip_and_no_drift(db_url: str) -> None:
    assert migrate.current_revision(db_url) == migrate.head_revision()
    migrate.downgrade(db_url, "base")
    engine = create_engine(db_url)
    assert not set(inspect(engine).get_table_names()) - {"alembic_version"}
    engine.dispose()
    migrate.upgrade(db_url)
    engine = create_engine(db_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                Base.metadata)
    engine.dispose()
    assert diff == []


def test_server_refuses_an_unmigrated_database(tmp_path) -> None:
    import pytest
    from fastapi.testclient import TestClient

    from server.app import create_app
    from tests.server.conftest import make_settings

    app = create_app(make_settings(f"sqlite:///{tmp_path}/empty.db"))
    with pytest.raises(RuntimeError, match="mfms db upgrade"), TestClient(app):
        pass
    app = create_app(make_settings(f"sqlite:///{tmp_path}/auto.db", auto_upgrade=True))
    with TestClient(app) as http:
        assert http.get("/healthz").json()["status"] == "ok"
