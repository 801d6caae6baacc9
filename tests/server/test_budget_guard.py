"""A broken worker does not burn a study: trials that fail before reporting any loss do not
count against ``budget.trials``, a run of them pauses the study with the reason, and a
study's budget can be raised (reopening one its budget completed)."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from mfms_client.client import ConflictError, InvalidRequestError, MFMSClient
from server.app import create_app
from tests.server.conftest import fake_losses, make_settings, study_body


@pytest.fixture
def guarded(db_url: str):
    app = create_app(make_settings(db_url, pause_after_failures=3, lease_seconds=0.5,
                                   max_attempts=1))
    with TestClient(app) as http:
        yield MFMSClient(http=http), app


def _run(api: MFMSClient, study_id: int, worker: str = "ok") -> int:
    a = api.next_trial(worker, study_id=study_id)
    for step in a.checkpoints:
        api.post_measurement(a.trial_id, step, fake_losses(a.mixture, step))
    api.complete_trial(a.trial_id, cost=1.0)
    return a.trial_id


def test_failures_before_any_loss_pause_the_study_and_cost_no_budget(guarded) -> None:
    api, _ = guarded
    s = api.create_study(study_body(strategy={"name": "random"}, budget={"trials": 4}))
    _run(api, s.id)
    for i in range(3):
        a = api.next_trial("broken", study_id=s.id)
        api.fail_trial(a.trial_id, f"FileNotFoundError: data/web.bin ({i})")
    study = api.get_study(s.id)
    assert study.state == "paused"
    # The three that taught nothing were refunded: one run plus what is queued.
    assert study.counts["failed"] == 3
    assert study.trials_run == 1 + study.counts["queued"]
    assert "the last 3 trials failed before reporting any loss" in study.pause_reason
    assert "data/web.bin (2)" in study.pause_reason and "'broken'" in study.pause_reason
    assert study.paused_at is not None
    board = api._http.get(f"/studies/{s.id}/dashboard").json()["study"]
    assert board["pause"]["message"] == study.pause_reason and board["pause"]["at"]
    # Paused: no work is handed out; resuming clears the reason and spends what is left.
    assert api.next_trial("ok", study_id=s.id) is None
    resumed = api.resume_study(s.id)
    assert resumed.state == "running" and resumed.pause_reason is None
    assert api._http.get(f"/studies/{s.id}/dashboard").json()["study"]["pause"] is None
    for _ in range(3):
        _run(api, s.id)
    done = api.get_study(s.id)
    assert done.trials_run == 4 and done.state == "completed"


def test_a_failure_after_a_loss_was_reported_counts_and_does_not_pause(guarded) -> None:
    api, _ = guarded
    s = api.create_study(study_body(strategy={"name": "random"}, budget={"trials": 10}))
    for _ in range(3):
        a = api.next_trial("flaky", study_id=s.id)
        api.post_measurement(a.trial_id, a.checkpoints[0], fake_losses(a.mixture, 1))
        api.fail_trial(a.trial_id, "CUDA out of memory at step 2")
    study = api.get_study(s.id)
    assert study.state == "running" and study.pause_reason is None
    assert study.trials_run == 3


def test_a_success_breaks_the_streak(guarded) -> None:
    api, _ = guarded
    s = api.create_study(study_body(strategy={"name": "random"}))
    for i in range(5):
        if i == 2:
            _run(api, s.id)
            continue
        a = api.next_trial("w", study_id=s.id)
        api.fail_trial(a.trial_id, "boom")
    assert api.get_study(s.id).state == "running"


def test_expired_leases_without_a_loss_count_toward_the_pause(guarded) -> None:
    api, app = guarded
    s = api.create_study(study_body(strategy={"name": "random"}))
    for _ in range(3):
        api.next_trial("vanishes", study_id=s.id)
        time.sleep(0.6)
        app.state.maintainer.tick()
    study = api.get_study(s.id)
    assert study.state == "paused" and "lease expired" in study.pause_reason
    assert study.counts["abandoned"] == 3 and study.trials_run == study.counts["queued"]


def test_raising_the_budget_reopens_a_completed_study(guarded) -> None:
    api, _ = guarded
    s = api.create_study(study_body(strategy={"name": "random"}, budget={"trials": 2}))
    _run(api, s.id)
    _run(api, s.id)
    assert api.get_study(s.id).state == "completed"
    # Not enough room yet: the study stays completed, the new budget is stored.
    same = api.update_budget(s.id, trials=2)
    assert same.state == "completed" and same.config["budget"] == {"trials": 2, "cost": None}
    more = api.update_budget(s.id, trials=3)
    assert more.state == "running"
    _run(api, s.id)
    assert api.get_study(s.id).state == "completed"
    unlimited = api.update_budget(s.id, trials=None, cost=None)
    assert unlimited.state == "running" and unlimited.config["budget"] == {"trials": None,
                                                                           "cost": None}


def test_budget_updates_are_validated(guarded, raw) -> None:
    api, _ = guarded
    s = api.create_study(study_body(strategy={"name": "random"}))
    with pytest.raises(InvalidRequestError, match="budget"):
        api.update_budget(s.id, trials=0)
    r = raw.patch(f"/studies/{s.id}", json={"budget": {"trials": 5, "cots": 1.0}})
    assert r.status_code == 422 and "cots" in r.text
    r = raw.patch(f"/studies/{s.id}", json={})
    assert r.status_code == 422 and "budget" in r.text
    assert raw.patch("/studies/999999", json={"budget": {"trials": 5}}).status_code == 404
    api.stop_study(s.id)
    with pytest.raises(ConflictError, match="stopped"):
        api.update_budget(s.id, trials=50)


def test_a_failed_trial_refunds_its_trial_but_not_its_reported_cost(guarded) -> None:
    """GPU time a failure burnt was spent: the cost budget counts it, even for a trial that
    reported no loss (which ``budget.trials`` does not count)."""
    api, _ = guarded
    s = api.create_study(study_body(strategy={"name": "random"},
                                    budget={"trials": 10, "cost": 5.0}))
    a = api.next_trial("broken", study_id=s.id)
    api.fail_trial(a.trial_id, "CUDA out of memory", cost=3.0)
    after = api.get_study(s.id)
    assert after.trials_run == after.counts["queued"] and after.cost_spent == 3.0
    b = api.next_trial("broken", study_id=s.id)
    api.fail_trial(b.trial_id, "CUDA out of memory", cost=2.5)
    spent = api.get_study(s.id)
    assert spent.cost_spent == 5.5 and spent.state == "completed"
    assert api.next_trial("ok", study_id=s.id) is None
