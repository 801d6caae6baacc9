"""Health, docs, and a database that goes away: 503 with a clear message, not a 500."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from server.app import create_app
from tests.server.conftest import make_settings


def test_healthz_and_openapi(api, raw) -> None:
    h = api.healthz()
    assert h.status == "ok" and h.database in ("sqlite", "postgresql")
    assert raw.get("/docs").status_code == 200
    paths = raw.get("/openapi.json").json()["paths"]
    for path in ("/studies", "/studies/{study_id}", "/studies/{study_id}/pause",
                 "/studies/{study_id}/resume", "/studies/{study_id}/stop", "/next-trial",
                 "/trials/{trial_id}/heartbeat", "/trials/{trial_id}/measurements",
                 "/trials/{trial_id}/complete", "/trials/{trial_id}/fail",
                 "/studies/{study_id}/trials", "/studies/{study_id}/recommendation",
                 "/studies/{study_id}/predict", "/healthz"):
        assert path in paths, path


def test_database_down_is_503_with_a_message(tmp_path) -> None:
    from server import migrate

    url = f"sqlite:///{tmp_path}/a.db"
    migrate.upgrade(url)
    app = create_app(make_settings(url))
    with TestClient(app) as http:
        assert http.get("/studies").status_code == 200
        # the database "goes away": nothing listens on port 1
        dead = create_engine("postgresql+psycopg://x@127.0.0.1:1/x",
                             connect_args={"connect_timeout": 2})
        app.state.db._factory = sessionmaker(dead)
        for method, path in (("get", "/studies"), ("get", "/healthz"),
                             ("post", "/next-trial")):
            r = getattr(http, method)(path, **({"json": {"worker_id": "w"}}
                                               if method == "post" else {}))
            assert r.status_code == 503, (path, r.status_code, r.text)
            assert r.json()["detail"].startswith("database unavailable")
            assert r.headers["retry-after"] == "5"
        dead.dispose()
