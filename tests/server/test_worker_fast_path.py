"""The worker protocol's fast path (``server/api/worker_fast_path.py``) answers exactly as
the FastAPI routes do, refusals included, and really skips FastAPI's request machinery."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastapi.routing
import pytest
from fastapi.testclient import TestClient

from server import migrate
from server.app import create_app
from tests.server.conftest import _truncate, fake_losses, make_settings, study_body

TIMES = ("lease_expires_at", "created_at", "started_at", "finished_at")


@pytest.fixture
def dependency_solves(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Paths of the requests FastAPI resolved dependencies for (its normal route path)."""
    seen: list[str] = []
    original = fastapi.routing.solve_dependencies

    async def counting(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["request"].url.path)
        return await original(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counting)
    return seen


def _client(db_url: str, fast: bool, **settings: Any) -> Iterator[TestClient]:
    app = create_app(make_settings(db_url, worker_fast_path=fast, **settings))
    with TestClient(app) as http:
        yield http


def _without_times(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_times(v) for k, v in value.items() if k not in TIMES}
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


def _session(http: TestClient) -> list[tuple[int, Any]]:
    """One worker's life on a fresh study, with a refusal of each kind along the way:
    ``(status, body without timestamps)`` per request."""
    http.post("/studies", json=study_body(strategy={"name": "random"}, seed=7))
    out: list[tuple[int, Any]] = []

    def post(path: str, **kwargs: Any) -> Any:
        r = http.post(path, **kwargs)
        out.append((r.status_code, _without_times(r.json()) if r.content else None))
        return r

    a = post("/next-trial", json={"worker_id": "w"}).json()
    tid, steps = a["trial_id"], a["checkpoints"]
    losses = fake_losses(a["mixture"], steps[0])
    post(f"/trials/{tid}/measurements", json={"step": steps[0], "losses": losses,
                                              "worker_id": "w"})
    post(f"/trials/{tid}/measurements", json={"step": steps[0], "losses": losses,
                                              "worker_id": "w"})  # a replay: 200
    post(f"/trials/{tid}/measurements", json={"step": steps[0], "losses": {
        k: v + 1 for k, v in losses.items()}, "worker_id": "w"})  # different losses: 409
    post(f"/trials/{tid}/measurements", json={"step": steps[-1], "losses": {"math": 1.0},
                                              "worker_id": "w"})  # unknown domain: 422
    post(f"/trials/{tid}/measurements", json={"step": steps[-1], "losses": losses,
                                              "worker_id": "other"})  # not its holder: 409
    post(f"/trials/{tid}/measurements", content=b'{"step": 1, "losses": {"web": NaN}, '
         b'"worker_id": "w"}', headers={"content-type": "application/json"})  # NaN: 422
    post(f"/trials/{tid}/measurements", content=b'{"step": ', headers={
        "content-type": "application/json"})  # malformed JSON: 422 naming it
    post(f"/trials/{tid}/measurements", json={"step": -1, "losses": losses,
                                              "worker_id": "w", "extra": 1})  # two fields
    post("/trials/99999/measurements", json={"step": 1, "losses": losses,
                                             "worker_id": "w"})  # unknown trial: 404
    post("/trials/99999999999999999999/complete", json={"cost": 1.0, "worker_id": "w"})
    post(f"/trials/{tid}/complete", json={"cost": 1.0, "worker_id": "w"})
    post(f"/trials/{tid}/complete", json={"cost": 1.0, "worker_id": "w"})  # a replay: 200
    post(f"/trials/{tid}/complete", json={"cost": 2.0, "worker_id": "w"})  # another: 409
    post("/next-trial", json={"worker_id": "w", "study_id": 404})  # unknown study: 404
    return out


def _fresh(db_url: str, tmp_path: Path) -> str:
    """An empty database of the same kind as ``db_url``."""
    if db_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path}/second.db"
        migrate.upgrade(url)
        return url
    _truncate(db_url)
    return db_url


def test_the_fast_path_answers_as_the_routes_do(db_url: str, tmp_path: Path,
                                                dependency_solves: list[str]) -> None:
    (fast,) = [_session(h) for h in _client(db_url, True)]
    fast_solves = list(dependency_solves)
    dependency_solves.clear()
    (slow,) = [_session(h) for h in _client(_fresh(db_url, tmp_path), False)]
    assert fast == slow
    assert [status for status, _ in fast] == [200, 201, 200, 409, 422, 409, 422, 422, 422,
                                              404, 422, 200, 200, 409, 404]
    # Only the study's creation and the refusals FastAPI words itself went its way: the NaN,
    # the two bad fields and the id out of range (the malformed JSON too, refused before
    # its dependency resolution).
    assert fast_solves.count("/studies") == 1
    assert len([p for p in fast_solves if p != "/studies"]) == 3
    assert len(dependency_solves) == 15  # the fast path off: all but the malformed JSON


def test_fast_path_checks_the_worker_token_and_names_the_route(db_url: str) -> None:
    for http in _client(db_url, True, worker_token="secret-w", admin_token="secret-a"):
        r = http.post("/next-trial", json={"worker_id": "w"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        r = http.post("/next-trial", json={"worker_id": "w"},
                      headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401 and "invalid bearer token" in r.json()["detail"]
        r = http.post("/next-trial", json={"worker_id": "w"},
                      headers={"Authorization": "Bearer secret-w"})
        assert r.status_code == 204 and r.headers["retry-after"] == "5"
        r = http.post("/trials/5/complete", json={"cost": 1.0, "worker_id": "w"},
                      headers={"Authorization": "Bearer secret-w"})
        assert r.status_code == 404
        scrape = http.get("/metrics", headers={"Authorization": "Bearer secret-a"}).text
        assert ('mfms_http_request_duration_seconds_count{method="POST",route="/next-trial",'
                'status_class="2xx"} 1.0') in scrape
        assert ('route="/trials/{trial_id}/complete",status_class="4xx"} 1.0') in scrape


def test_fast_path_keeps_the_body_limit(db_url: str) -> None:
    for http in _client(db_url, True):
        r = http.post("/trials/1/measurements", content=b"{" + b" " * 1_100_000 + b"}",
                      headers={"content-type": "application/json"})
        assert r.status_code == 413 and "larger than" in r.json()["detail"]
