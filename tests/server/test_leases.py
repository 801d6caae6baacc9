"""Leases: a silent worker's trial is abandoned and re-queued, its partial curve kept."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from mfms_client.client import ConflictError, MFMSClient
from server.app import create_app
from tests.server.conftest import fake_losses, make_settings, study_body


@pytest.fixture
def short_lease(db_url: str):
    app = create_app(make_settings(db_url, lease_seconds=0.5, max_attempts=2))
    with TestClient(app) as http:
        yield MFMSClient(http=http), app


def test_expired_lease_requeues_and_keeps_partial_measurements(short_lease) -> None:
    api, app = short_lease
    s = api.create_study(study_body(strategy={"name": "random"}))
    a = api.next_trial("dies", study_id=s.id)
    api.post_measurement(a.trial_id, a.checkpoints[0], fake_losses(a.mixture, 1))
    time.sleep(1.0)
    app.state.maintainer.tick()  # the reaper (also runs inside every /next-trial)
    lost = api.get_trial(a.trial_id)
    assert lost.state == "abandoned" and "lease expired" in lost.fail_reason
    assert len(lost.measurements) == 1
    with pytest.raises(ConflictError, match=r"lease expired.*re-queued as trial"):
        api.heartbeat(a.trial_id, worker_id="dies")
    with pytest.raises(ConflictError, match="abandoned, not running"):
        api.post_measurement(a.trial_id, a.checkpoints[1], fake_losses(a.mixture, 2))
    b = api.next_trial("lives", study_id=s.id)
    assert b.attempt == 2 and b.mixture == a.mixture and b.steps == a.steps
    # attempts are bounded: the second loss is final
    time.sleep(1.0)
    app.state.maintainer.tick()
    assert api.get_trial(b.trial_id).state == "abandoned"
    assert not [t for t in api.list_trials(s.id) if t.retry_of == b.trial_id]


def test_reporting_renews_the_lease(short_lease) -> None:
    api, app = short_lease
    s = api.create_study(study_body(strategy={"name": "random"}))
    a = api.next_trial("w", study_id=s.id)
    for i, step in enumerate(a.checkpoints):
        time.sleep(0.3)
        api.post_measurement(a.trial_id, step, fake_losses(a.mixture, step))
        app.state.maintainer.tick()
        assert api.get_trial(a.trial_id).state == "running", i
    assert api.complete_trial(a.trial_id, cost=1.0).state == "completed"


def test_late_heartbeat_before_reaping_is_honoured(short_lease) -> None:
    api, _ = short_lease
    s = api.create_study(study_body(strategy={"name": "random"}))
    a = api.next_trial("slow", study_id=s.id)
    time.sleep(0.8)  # past the lease, but nobody has taken the trial back yet
    assert api.heartbeat(a.trial_id, worker_id="slow").trial_id == a.trial_id
    assert api.get_trial(a.trial_id).state == "running"
