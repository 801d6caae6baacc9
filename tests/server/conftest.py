"""Server test fixtures: every API test runs against SQLite and the real PostgreSQL.

PostgreSQL is expected at ``MFMS_TEST_POSTGRES_URL`` (default: the local trust-auth server
on 127.0.0.1:5432). If it is unreachable the PostgreSQL tests FAIL with a message - CI has
it, and silently skipping would hide exactly the bugs these tests exist for. Set
``MFMS_TEST_SKIP_POSTGRES=1`` to run the SQLite half only on a machine without it.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import torch
from sqlalchemy import create_engine, text

from mfms_client.client import MFMSClient
from server import migrate
from server.app import create_app
from server.config import Settings
from tests.postgres import empty_postgres_database

torch.set_num_threads(1)

TABLES = ("measurements", "trials", "workers", "studies")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, migrated to head."""
    with empty_postgres_database("mfms_test") as url:
        migrate.upgrade(url)
        yield url


def _truncate(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as c:
        if engine.dialect.name == "postgresql":
            c.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
        else:
            for t in TABLES:
                c.execute(text(f"DELETE FROM {t}"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A migrated, empty database of each kind."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/mfms.db"
        migrate.upgrade(url)
        return url
    url = request.getfixturevalue("pg_url")
    _truncate(url)
    return url


def make_settings(url: str, **overrides) -> Settings:
    """Test settings: no background thread (tests drive maintenance explicitly)."""
    values = {"background": False, "next_trial_wait_seconds": 2.0, **overrides}
    return Settings(database_url=url, **values)


@pytest.fixture
def api(db_url: str) -> Iterator[MFMSClient]:
    """A typed client over an in-process app (FastAPI's TestClient as the transport)."""
    from fastapi.testclient import TestClient

    app = create_app(make_settings(db_url))
    with TestClient(app) as http:
        yield MFMSClient(http=http)


@pytest.fixture
def raw(api: MFMSClient):
    """The underlying httpx client of ``api`` for requests the typed client cannot make."""
    return api._http


class LiveServer:
    """A real uvicorn server on a free port, in a thread (for concurrency and restarts)."""

    def __init__(self, settings: Settings) -> None:
        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(settings)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


STUDY = {
    "name": "s",
    "domains": ["code", "web", "books"],
    "model_sizes": [20e6, 60e6],
    "steps": {"min": 500, "max": 4000},
    "target": {"model_size": 150e6},
    "checkpoints": 4,
}


def study_body(**overrides) -> dict:
    body = {**STUDY, "name": f"s-{uuid.uuid4().hex[:8]}"}
    body.update(overrides)
    return body


def fake_losses(mixture: dict[str, float], step: int) -> dict[str, float]:
    """Deterministic per-domain losses that fall with steps and favour balanced mixtures."""
    return {d: 2.0 + 3.0 / (1 + step / 500) + (w - 1 / len(mixture)) ** 2
            for d, w in mixture.items()}
