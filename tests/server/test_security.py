"""Bearer-token auth on every write, optional on reads; oversized bodies refused."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from mfms_client.client import AuthError, MFMSClient
from server.app import create_app
from tests.server.conftest import make_settings, study_body

WRITES = [
    ("post", "/studies"), ("post", "/studies/1/pause"), ("post", "/studies/1/resume"),
    ("post", "/studies/1/stop"), ("post", "/studies/1/trials"), ("post", "/next-trial"),
    ("post", "/trials/1/heartbeat"), ("post", "/trials/1/measurements"),
    ("post", "/trials/1/complete"), ("post", "/trials/1/fail"),
]
READS = [("get", "/studies"), ("get", "/studies/1"), ("get", "/studies/1/trials"),
         ("get", "/studies/1/recommendation"), ("post", "/studies/1/predict"),
         ("get", "/trials/1")]


@pytest.fixture
def secured(tmp_path):
    from server import migrate

    url = f"sqlite:///{tmp_path}/auth.db"
    migrate.upgrade(url)
    return url


@pytest.mark.parametrize("protect_reads", [False, True])
def test_every_write_needs_the_token(secured: str, protect_reads: bool) -> None:
    app = create_app(make_settings(secured, api_token="s3cret", protect_reads=protect_reads))
    with TestClient(app) as http:
        for method, path in WRITES:
            r = getattr(http, method)(path, json={})
            assert r.status_code == 401, (method, path, r.status_code)
            assert "bearer token" in r.json()["detail"]
            r = getattr(http, method)(path, json={}, headers={"Authorization": "Bearer nope"})
            assert r.status_code == 401 and r.json()["detail"] == "invalid bearer token"
        for method, path in READS:
            r = getattr(http, method)(path)
            assert (r.status_code == 401) == protect_reads, (method, path, r.status_code)
        assert http.get("/healthz").status_code == 200
        with pytest.raises(AuthError):
            MFMSClient(http=http).create_study(study_body())
        ok = MFMSClient(http=http, token="s3cret").create_study(study_body())
        assert ok.id == 1


def test_oversized_body_is_413(secured: str) -> None:
    app = create_app(make_settings(secured, max_body_bytes=4096))
    with TestClient(app) as http:
        r = http.post("/studies", content=b"x" * 10_000,
                      headers={"content-type": "application/json"})
        assert r.status_code == 413 and "larger than 4096 bytes" in r.json()["detail"]


def test_an_import_has_its_own_larger_limit(secured: str) -> None:
    """A study export is ~2 kB per trial: the import route takes bodies up to
    ``max_import_bytes`` while every other route keeps ``max_body_bytes``."""
    app = create_app(make_settings(secured, max_body_bytes=4096, max_import_bytes=200_000))
    auth = {"Authorization": "Bearer s3cret", "content-type": "application/json"}
    with TestClient(app) as http:
        api = MFMSClient(http=http, token="s3cret")
        sid = api.create_study(study_body(strategy={"name": "random"}, name="big")).id
        for _ in range(20):
            api.enqueue_trial(sid, {"code": 0.5, "web": 0.25, "books": 0.25}, 20e6, 1000)
        doc = http.get(f"/studies/{sid}/export").content
        assert 4096 < len(doc) < 200_000
        r = http.post("/studies/import", content=doc, headers=auth, params={"name": "big-2"})
        assert r.status_code == 201, r.text
        r = http.post("/studies", content=doc, headers=auth)
        assert r.status_code == 413 and "larger than 4096 bytes" in r.json()["detail"]
        r = http.post("/studies/import", content=b" " * 200_001, headers=auth)
        assert r.status_code == 413 and "larger than 200000 bytes" in r.json()["detail"]
