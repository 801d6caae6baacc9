"""Worker tests run against an in-process server on a temporary SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mfms_client.client import MFMSClient
from server import migrate
from server.app import create_app
from server.config import Settings


@pytest.fixture
def api(tmp_path: Path) -> Iterator[MFMSClient]:
    """A typed client of a fresh server (no background thread; proposals on demand)."""
    url = f"sqlite:///{tmp_path}/workers.db"
    migrate.upgrade(url)
    app = create_app(Settings(database_url=url, background=False, next_trial_wait_seconds=1))
    with TestClient(app) as http:
        yield MFMSClient(http=http)
