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


def test_server_creates_an_empty_sqlite_schema_and_refuses_an_old_one(tmp_path) -> None:
    """A new SQLite file (the embedded default) gets its schema at first start; a database
    at an older revision is never upgraded behind the user's back."""
    import pytest
    from fastapi.testclient import TestClient

    from server.app import create_app
    from tests.server.conftest import make_settings

    url = f"sqlite:///{tmp_path}/empty.db"
    with TestClient(create_app(make_settings(url))) as http:
        assert http.get("/healthz").json()["status"] == "ok"
        assert http.get("/studies").json()["studies"] == []
    assert migrate.current_revision(url) == migrate.head_revision()
    old = f"sqlite:///{tmp_path}/old.db"
    migrate.upgrade(old, "0001")
    with pytest.raises(RuntimeError, match="mfms db upgrade"), \
            TestClient(create_app(make_settings(old))):
        pass
    app = create_app(make_settings(old, auto_upgrade=True))
    with TestClient(app) as http:
        assert http.get("/healthz").json()["status"] == "ok"


def test_proposal_error_columns_upgrade_an_existing_database(db_url: str) -> None:
    """0002 -> head on a database holding a study: it gains no proposal error, a count of
    0 and no pause reason (0003, 0004), and the API reads it."""
    from fastapi.testclient import TestClient
    from sqlalchemy import text

    from server.app import create_app
    from tests.server.conftest import make_settings

    migrate.downgrade(db_url, "0002")
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO studies (name, config, state, seed, created_at, updated_at) VALUES "
            "('old', :config, 'paused', 7, '2026-11-30 10:00:00', '2026-11-30 10:00:00')"),
            {"config": '{"domains": ["code", "web"], "model_sizes": [2e7], "steps": '
                       '{"min": 500, "max": 4000}, "target": {"model_size": 1.5e8}}'})
    engine.dispose()
    migrate.upgrade(db_url)
    assert migrate.current_revision(db_url) == migrate.head_revision()
    with TestClient(create_app(make_settings(db_url))) as http:
        (study,) = http.get("/studies").json()["studies"]
    assert study["name"] == "old" and study["state"] == "paused"
    assert study["last_proposal_error"] is None and study["last_proposal_error_at"] is None
    assert study["proposal_failures"] == 0
    assert study["pause_reason"] is None and study["paused_at"] is None


def test_an_empty_postgresql_database_needs_an_explicit_upgrade(pg_url: str) -> None:
    """Only the embedded SQLite default creates its own schema: a PostgreSQL database is
    shared and backed up, so an empty one is refused with the command to run, and
    ``--upgrade`` (auto_upgrade) creates the schema."""
    import pytest
    from fastapi.testclient import TestClient

    from server.app import create_app
    from tests.postgres import empty_postgres_database
    from tests.server.conftest import make_settings

    with empty_postgres_database("mfms_empty") as url:
        with pytest.raises(RuntimeError, match="mfms db upgrade"), \
                TestClient(create_app(make_settings(url))):
            pass
        assert migrate.current_revision(url) is None
        with TestClient(create_app(make_settings(url, auto_upgrade=True))) as http:
            assert http.get("/studies").json()["studies"] == []
        assert migrate.current_revision(url) == migrate.head_revision()
