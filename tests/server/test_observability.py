"""Observability: ``GET /metrics`` (Prometheus text format; database gauges that match the
database, route-template latency labels, proposal and GP-fit histograms, read protection)
and structured logs (``MFMS_LOG_FORMAT=json``, one access line per request)."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from mfms_client.client import MFMSClient
from server import migrate
from server.app import create_app
from server.logs import TEXT_FORMAT, JsonFormatter, logging_config
from tests.server.conftest import fake_losses, make_settings, study_body

REPO = Path(__file__).resolve().parents[2]
HTTP = "mfms_http_request_duration_seconds"


def _scrape(http, headers: dict | None = None) -> list:
    r = http.get("/metrics", headers=headers or {})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return [s for fam in text_string_to_metric_families(r.text) for s in fam.samples]


def _values(samples: list, name: str, **labels: str) -> list[float]:
    return [s.value for s in samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


def _value(samples: list, name: str, **labels: str) -> float:
    found = _values(samples, name, **labels)
    assert len(found) == 1, (name, labels, found)
    return found[0]


def _run(api: MFMSClient, worker: str, study_id: int) -> int:
    a = api.next_trial(worker, study_id=study_id)
    assert a is not None
    for step in a.checkpoints:
        api.post_measurement(a.trial_id, step, fake_losses(a.mixture, step), worker_id=worker)
    api.complete_trial(a.trial_id, cost=10.0, worker_id=worker)
    return a.trial_id


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/obs.db"
    migrate.upgrade(url)
    return url


def test_trial_gauges_match_the_database(api: MFMSClient, raw) -> None:
    s = api.create_study(study_body(strategy={"name": "random"}))
    other = api.create_study(study_body(strategy={"name": "random"}))
    api.pause_study(other.id)
    _run(api, "w1", s.id)
    failed = api.next_trial("w1", study_id=s.id)
    api.fail_trial(failed.trial_id, "oom", retryable=False, worker_id="w1")
    running = api.next_trial("w2", study_id=s.id)
    assert running is not None
    api.enqueue_trial(s.id, {"code": 0.2, "web": 0.3, "books": 0.5}, model_size=20e6,
                      steps=1000)

    samples = _scrape(raw)
    assert _value(samples, "mfms_database_up") == 1
    counts = api.get_study(s.id).counts  # what the database says
    assert counts["completed"] == 1 and counts["failed"] == 1 and counts["running"] == 1
    assert counts["queued"] >= 1
    for state, n in counts.items():
        assert _value(samples, "mfms_trials", study=str(s.id), state=state) == n, state
    assert _value(samples, "mfms_trials", study=str(s.id), state="queued") == counts["queued"]
    assert sum(_values(samples, "mfms_trials", study=str(other.id))) == 0
    assert _value(samples, "mfms_studies", state="running") == 1
    assert _value(samples, "mfms_studies", state="paused") == 1
    assert _value(samples, "mfms_workers_active") == 2
    assert _value(samples, "mfms_workers_idle") == 1  # w1 holds nothing, w2 runs a trial

    # The database is the truth at every scrape: a change shows at once.
    api.complete_trial(running.trial_id, cost=5.0, worker_id="w2",
                       losses=fake_losses(running.mixture, running.steps))
    samples = _scrape(raw)
    assert _value(samples, "mfms_trials", study=str(s.id), state="running") == 0
    assert _value(samples, "mfms_trials", study=str(s.id), state="completed") == 2


def test_request_histogram_uses_route_templates(api: MFMSClient, raw) -> None:
    s = api.create_study(study_body(strategy={"name": "random"}))
    tid = _run(api, "w", s.id)
    api.get_study(s.id)
    assert raw.get("/trials/987654").status_code == 404
    assert raw.get("/no/such/path/123456").status_code == 404
    limit = 1_000_000
    assert raw.post(f"/trials/{tid}/measurements", content=b"x" * (limit + 1),
                    headers={"content-type": "application/json"}).status_code == 413

    samples = _scrape(raw)
    series = [x for x in samples if x.name == f"{HTTP}_count"]
    routes = {x.labels["route"] for x in series}
    assert {"/next-trial", "/studies", "/studies/{study_id}", "/trials/{trial_id}",
            "/trials/{trial_id}/measurements", "/trials/{trial_id}/complete",
            "unmatched"} <= routes
    for route in routes:  # bounded cardinality: templates only, never ids
        assert not re.search(r"/\d+(/|$)", route), route
    assert _value(samples, f"{HTTP}_count", method="POST", route="/next-trial",
                  status_class="2xx") >= 1
    assert _value(samples, f"{HTTP}_count", method="POST",
                  route="/trials/{trial_id}/measurements", status_class="2xx") >= 1
    # refused before routing (413), still named by its template
    assert _value(samples, f"{HTTP}_count", method="POST",
                  route="/trials/{trial_id}/measurements", status_class="4xx") == 1
    assert _value(samples, f"{HTTP}_count", method="GET", route="/trials/{trial_id}",
                  status_class="4xx") == 1
    assert all(set(x.labels) == {"method", "route", "status_class"} for x in series)
    assert _values(samples, f"{HTTP}_bucket", route="/next-trial", le="+Inf")


@pytest.mark.parametrize("acquisition", ["ei", "kg"])
def test_proposal_and_gp_fit_histograms(sqlite_url: str, acquisition: str) -> None:
    app = create_app(make_settings(sqlite_url))
    options = {"n_init": 1, "n_mixtures": 16, "acquisition": acquisition}
    with TestClient(app) as http:
        api = MFMSClient(http=http)
        s = api.create_study(study_body(strategy={"name": "mfms-bo", "options": options}))
        for _ in range(4):  # 2 initial trials, then the GP proposes
            _run(api, "w", s.id)
        samples = _scrape(http)
    labels = {"strategy": "mfms-bo"}
    calls = _value(samples, "mfms_proposal_duration_seconds_count", **labels)
    assert calls >= 3
    assert _value(samples, "mfms_proposals_total", **labels) == calls
    assert _value(samples, "mfms_proposed_trials_total", **labels) >= 4
    assert not _values(samples, "mfms_proposal_failures_total")
    fits = _values(samples, "mfms_gp_fit_duration_seconds_count", **labels)
    assert sum(fits) >= 1
    assert _value(samples, "mfms_gp_fit_duration_seconds_count", kind="optimize",
                  **labels) >= 1
    assert _value(samples, "mfms_gp_fit_duration_seconds_sum", kind="optimize", **labels) > 0


def test_each_app_has_its_own_registry(sqlite_url: str) -> None:
    with TestClient(create_app(make_settings(sqlite_url))) as a, \
            TestClient(create_app(make_settings(sqlite_url))) as b:
        a.get("/healthz")
        a.get("/healthz")
        b.get("/healthz")
        assert _value(_scrape(a), f"{HTTP}_count", route="/healthz") == 2
        assert _value(_scrape(b), f"{HTTP}_count", route="/healthz") == 1


def test_metrics_obeys_read_protection(sqlite_url: str) -> None:
    protected = create_app(make_settings(sqlite_url, api_token="secret", protect_reads=True))
    with TestClient(protected) as http:
        r = http.get("/metrics")
        assert r.status_code == 401 and "bearer" in r.json()["detail"]
        assert http.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
        _scrape(http, {"Authorization": "Bearer secret"})
    open_reads = create_app(make_settings(sqlite_url, api_token="secret"))
    with TestClient(open_reads) as http:
        _scrape(http)  # reads are open: so is /metrics


def test_database_down_still_answers(sqlite_url: str, monkeypatch: pytest.MonkeyPatch
                                     ) -> None:
    from server.errors import Unavailable

    def down():
        raise Unavailable("database unavailable: connection refused")

    app = create_app(make_settings(sqlite_url))
    with TestClient(app) as http:
        http.get("/healthz")
        monkeypatch.setattr(app.state.db, "session", down)
        samples = _scrape(http)
    assert _value(samples, "mfms_database_up") == 0
    assert not _values(samples, "mfms_trials")
    assert _values(samples, f"{HTTP}_count", route="/healthz")  # per-process series remain


# -- logs -------------------------------------------------------------------------------------

@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """What the ``mfms`` loggers write through the JSON formatter."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("mfms")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield out
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def _lines(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


def test_json_access_lines(sqlite_url: str, json_log: io.StringIO) -> None:
    with TestClient(create_app(make_settings(sqlite_url))) as http:
        api = MFMSClient(http=http)
        s = api.create_study(study_body(strategy={"name": "random"}))
        a = api.next_trial("w", study_id=s.id)
        api.post_measurement(a.trial_id, a.checkpoints[0], fake_losses(a.mixture, 1))
        api.get_study(s.id)
        http.get("/trials/424242")
    lines = _lines(json_log)
    assert lines, "nothing logged"
    for line in lines:
        assert {"ts", "level", "logger", "message"} <= set(line)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["ts"])
    access = [x for x in lines if x["logger"] == "mfms.access"]
    assert len(access) == 5  # one per request
    assert all(x["level"] == "INFO" and isinstance(x["duration_ms"], float) for x in access)
    meas = next(x for x in access if x["route"] == "/trials/{trial_id}/measurements")
    assert meas["method"] == "POST" and meas["status"] == 201
    assert meas["trial_id"] == a.trial_id and meas["path"] == f"/trials/{a.trial_id}/measurements"
    assert "study_id" not in meas
    study = next(x for x in access if x["route"] == "/studies/{study_id}")
    assert study["study_id"] == s.id and study["status"] == 200
    nxt = next(x for x in access if x["route"] == "/next-trial")
    assert nxt["status"] == 200 and "trial_id" not in nxt
    missing = next(x for x in access if x["route"] == "/trials/{trial_id}")
    assert missing["status"] == 404 and missing["trial_id"] == 424242
    # other mfms loggers come through with their own fields
    assert any(x["logger"] == "mfms.proposer" for x in lines)


def test_json_formatter_fields() -> None:
    logger = logging.getLogger("mfms.test.json")
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("hello %s\nsecond line", "world", extra={"study_id": 3, "obj": object(),
                                                                "level": "shadowed"})
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    raw_lines = out.getvalue().splitlines()
    assert len(raw_lines) == 2  # a multi-line message or traceback stays on one line
    first, second = (json.loads(x) for x in raw_lines)
    assert first["message"] == "hello world\nsecond line" and first["level"] == "WARNING"
    assert first["logger"] == "mfms.test.json" and first["study_id"] == 3
    assert first["obj"].startswith("<object object")
    assert second["level"] == "ERROR" and "RuntimeError: boom" in second["exc_info"]


def test_logging_config_text_keeps_the_historical_format() -> None:
    from uvicorn.config import LOGGING_CONFIG

    text = logging_config("text")
    assert text["formatters"]["mfms"]["format"] == TEXT_FORMAT
    assert text["root"]["handlers"] == ["mfms"]
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        assert text["loggers"][name] == LOGGING_CONFIG["loggers"][name]
    assert text["formatters"]["default"] == LOGGING_CONFIG["formatters"]["default"]
    with pytest.raises(ValueError, match="text' or 'json"):
        logging_config("xml")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mfms_serve_json_logs_every_line(tmp_path: Path) -> None:
    """``mfms serve`` with MFMS_LOG_FORMAT=json: every line it writes, uvicorn's and the
    migrations' included, is one JSON object; requests get mfms.access lines."""
    port = _free_port()
    env = {**os.environ, "MFMS_LOG_FORMAT": "json", "PYTHONPATH": str(REPO),
           "MFMS_BACKGROUND": "false"}
    for key in ("MFMS_API_TOKEN", "MFMS_ADMIN_TOKEN", "MFMS_WORKER_TOKEN",
                "MFMS_PROTECT_READS"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "mfms_cli", "serve", "--port", str(port), "--upgrade",
           "--database-url", f"sqlite:///{tmp_path}/serve.db"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).status_code == 200
    finally:
        proc.terminate()
        output = proc.communicate(timeout=60)[0]
    lines = [line for line in output.splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}\n{output}")
    loggers = {x["logger"] for x in parsed}
    assert "uvicorn.error" in loggers and "mfms.server" in loggers, loggers
    assert "uvicorn.access" not in loggers  # mfms.access replaces it
    routes = {x.get("route") for x in parsed if x["logger"] == "mfms.access"}
    assert {"/healthz", "/metrics"} <= routes
